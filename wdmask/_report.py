"""Rendering: ``Explanation`` rows and their tables (rich), shared by every framework."""

from __future__ import annotations

import dataclasses
import io
import re
import shutil
from collections.abc import Iterator, Sequence
from typing import Any


def terminal_width() -> int:
    """Columns of the terminal: ``COLUMNS`` when set, else the terminal's size; 160 when output is not a terminal.

    Not a terminal (a pipe, a log file): nothing constrains the width, and one line per row greps better.
    """
    return max(20, shutil.get_terminal_size((160, 24)).columns)


class Wrapped:
    """A table cell that wraps at its own break points (after ``.`` in a path) and never crops or drops text.

    Rich wraps only at spaces and folds other text at an arbitrary character; a dotted path
    ``layer1.0.downsample.0.weight`` reads better broken after a dot. Pieces longer than the
    column are folded as a last resort, so every character is always printed.

    Examples:
      >>> from rich.console import Console
      >>> console = Console(width=12, file=io.StringIO(), color_system=None)
      >>> with console.capture() as cap:
      ...     console.print(Wrapped("layer1.0.downsample.weight"))
      >>> cap.get().splitlines()
      ['layer1.0.', 'downsample.', 'weight']
    """

    def __init__(self, text: str, after: str = ".", style: str = "") -> None:
        self.text = text
        self.style = style
        self.pieces = [p for p in re.split(f"(?<=[{re.escape(after)}])", text) if p] or [""]

    def lines(self, width: int) -> list[str]:
        """Greedy fill of ``width`` columns with whole pieces; a piece wider than ``width`` is folded."""
        width = max(1, width)
        out: list[str] = []
        line = ""
        for piece in self.pieces:
            if len(line) + len(piece) <= width:
                line += piece
                continue
            if line:
                out.append(line)
            while len(piece) > width:
                out.append(piece[:width])
                piece = piece[width:]
            line = piece
        return [*out, line]

    def __rich_measure__(self, console: Any, options: Any) -> Any:
        from rich.measure import Measurement

        return Measurement(max(len(p) for p in self.pieces), len(self.text)).clamp(max_width=options.max_width)

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        from rich.text import Text

        yield Text("\n".join(self.lines(options.max_width)), style=self.style, no_wrap=True, overflow="fold")

    def __str__(self) -> str:
        return self.text


def render_text(renderable: Any, width: int | None = None) -> str:
    """Plain text of a rich renderable at ``width`` columns (default: the terminal's)."""
    from rich.console import Console

    console = Console(width=width or terminal_width(), record=True, file=io.StringIO(), color_system=None,
                      legacy_windows=False)
    console.print(renderable)
    return "".join(line.rstrip() + "\n" for line in console.export_text().splitlines())


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


#: ``from`` is how the layer kind and role were learned: graph (traced usage), type, name or shape (nothing).
_COLUMNS = ("path", "layer", "role", "from", "shape", "decay", "rule", "reason")
#: Tables narrower than this leave out the ``from`` column (each row still carries it: ``Row.source``).
_WIDE = 100


class Explanation(Sequence[Row]):
    """Rows of (path, layer, role, source, shape, multiplier, winning rule, reason); prints as a table."""

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

    def _cells(self) -> list[tuple[str, ...]]:
        out = []
        for r in self.rows:
            mult = "no" if r.multiplier == 0 else ("yes" if r.multiplier == 1 else f"x{r.multiplier:g}")
            out.append((r.path + "".join(f" (= {a})" for a in r.aliases), r.layer, r.role, r.source,
                        "x".join(map(str, r.shape)) or "()", mult, "-" if r.rule is None else str(r.rule), r.reason))
        return out

    def table(self, width: int | None = None) -> Any:
        """A ``rich.table.Table`` of the rows; with ``width``, path and reason share what the other columns leave.

        Rich alone shrinks the widest column first, so at 80 columns the reason became a narrow strip;
        here the short columns keep their width and the path and reason wrap (paths after a dot).
        """
        from rich.table import Table
        from rich.text import Text

        cells = self._cells()
        columns = list(_COLUMNS)
        if width is not None and width < _WIDE:  # narrow: the source column gives its room to paths and reasons
            columns.remove("from")
            cells = [row[:3] + row[4:] for row in cells]
        shape = columns.index("shape")
        natural = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
        widths: list[int | None] = [None] * len(columns)
        if width is not None:
            avail = width - (3 * len(columns) + 1)  # "│ " + " " per column, and the closing "│"
            share = avail - sum(natural[1:-1])
            if share < 40:  # narrow: let the layer kind wrap after its dot and the shape after an "x"
                for i, after in ((1, "."), (shape, "x")):
                    least = max([len(columns[i])] + [len(p) for row in cells for p in Wrapped(row[i], after).pieces])
                    widths[i] = least
                    share += natural[i] - least
            if sum(natural) > avail and share >= 2 * 12:
                path_min = max([12] + [len(p) for row in cells for p in Wrapped(row[0], ". ").pieces])
                if share - natural[0] >= min(natural[-1], 24):  # whole paths (greppable) while reasons stay readable
                    path = natural[0]
                else:
                    path = min(natural[0], max(path_min, share * natural[0] // (natural[0] + natural[-1])))
                    path = min(path, share - 12)
                widths[0], widths[-1] = path, share - path
        # Every cell is a Text or a Wrapped, never a str: user text (paths, reasons, ``why``) is not markup.
        table = Table(title=Text(self.title) if self.title else None, caption=Text(self.summary()))
        for col, w in zip(columns, widths, strict=True):
            table.add_column(Text(col), overflow="fold", width=w)
        wrap = {0: ". ", 1: ".", shape: "x"}
        for row in cells:
            table.add_row(*(Wrapped(c, wrap[i]) if i in wrap else Text(c) for i, c in enumerate(row)))
        return table

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        yield self.table(options.max_width)

    def __str__(self) -> str:
        """The table as plain text, as wide as the terminal (``COLUMNS``); long cells wrap, none is cropped."""
        return render_text(self)
