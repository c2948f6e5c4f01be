"""Rendering: ``Explanation`` rows and their tables (rich), shared by every framework."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of an explanation."""

    path: str
    layer: str
    role: str
    shape: tuple[int, ...]
    multiplier: float
    rule: int | None
    reason: str
    feeds_norm: bool | None
    source: str
    aliases: tuple[str, ...] = ()  # other owners of a tied tensor


class Explanation(Sequence[Row]):
    """Rows of (path, layer, role, shape, multiplier, winning rule, reason); prints as a table."""

    def __init__(self, rows: Sequence[Row], title: str = "") -> None:
        self.rows = tuple(rows)
        self.title = title

    def __getitem__(self, i: Any) -> Any:
        return self.rows[i]

    def __len__(self) -> int:
        return len(self.rows)

    def summary(self) -> str:
        """One line: how many parameters each multiplier gets."""
        counts: dict[float, int] = {}
        for r in self.rows:
            counts[r.multiplier] = counts.get(r.multiplier, 0) + 1
        parts = [f"{n} x multiplier {m:g}" if m else f"{n} no decay" for m, n in sorted(counts.items())]
        return f"{len(self.rows)} parameters: " + ", ".join(parts)

    def table(self) -> Any:
        """A ``rich.table.Table`` of the rows."""
        from rich.table import Table

        table = Table(title=self.title or None, caption=self.summary())
        table.add_column("path", overflow="fold", min_width=12)
        for col in ("layer", "role", "shape", "decay", "rule"):
            table.add_column(col, no_wrap=True)
        table.add_column("reason", overflow="fold", min_width=18)
        for r in self.rows:
            mult = "no" if r.multiplier == 0 else ("yes" if r.multiplier == 1 else f"x{r.multiplier:g}")
            path = r.path + "".join(f" (= {a})" for a in r.aliases)
            table.add_row(path, r.layer, r.role, "x".join(map(str, r.shape)) or "()", mult,
                          "-" if r.rule is None else str(r.rule), r.reason)
        return table

    def __rich__(self) -> Any:
        return self.table()

    def __str__(self) -> str:
        from rich.console import Console

        console = Console(width=160, record=True, file=io.StringIO(), color_system=None)
        console.print(self.table())
        return console.export_text()
