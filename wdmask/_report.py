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
        # each line of ``text`` (a cell may hold several paths, one per line) wraps on its own
        self.paragraphs = [[p for p in re.split(f"(?<=[{re.escape(after)}])", line) if p] or [""]
                           for line in text.split("\n")]
        self.pieces = [p for para in self.paragraphs for p in para]

    def lines(self, width: int) -> list[str]:
        """Greedy fill of ``width`` columns with whole pieces; a piece wider than ``width`` is folded."""
        return [line for para in self.paragraphs for line in self._fill(para, max(1, width))]

    @staticmethod
    def _fill(pieces: list[str], width: int) -> list[str]:
        out: list[str] = []
        line = ""
        for piece in pieces:
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

        widest = max(len(line) for line in self.text.split("\n"))
        return Measurement(max(len(p) for p in self.pieces), widest).clamp(max_width=options.max_width)

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        from rich.text import Text

        yield Text("\n".join(self.lines(options.max_width)).rstrip(" "), style=self.style, no_wrap=True,
                   overflow="fold")

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
    lr: float | tuple[float, ...] = 1.0  # learning-rate multiplier (one per slice of a stacked leaf)
    optimizer: str | None = None  # optimizer label


def _lr_text(lr: float | tuple[float, ...]) -> str:
    """``x0.75``; a stacked leaf's per-slice multipliers as ``x0.42..x0.75`` (first..last)."""
    if isinstance(lr, tuple):
        return f"x{lr[0]:.4g}..x{lr[-1]:.4g}" if len(set(lr)) > 1 else f"x{lr[0]:.4g}" if lr else "-"
    return f"x{lr:.4g}"


#: ``from`` is how the layer kind and role were learned: graph (traced usage), type, name or shape (nothing).
_COLUMNS = ("path", "layer", "role", "from", "shape", "decay", "rule", "reason")
#: Columns a narrow table leaves out, in this order, rather than break paths (each ``Row`` still has them).
_OPTIONAL = ("from", "shape", "layer")
#: Columns whose cells are one token each (a kind, a shape, ``yes``): never wrapped, never split.
_TOKENS = frozenset({"n", "layer", "role", "from", "shape", "decay", "lr", "optimizer", "rule"})
#: The narrowest a reason column may get before a table drops an optional column.
_REASON_MIN = 24
#: Under the table: what the numbers of the ``rule`` column are.
RULE_NOTE = "rule: index in the rule list, from 0 (- = none matched)"


def verdict(multiplier: float) -> str:
    """``yes`` (decayed), ``no`` or ``x0.5`` (decayed at that multiplier of the weight decay)."""
    return "no" if multiplier == 0 else ("yes" if multiplier == 1 else f"x{multiplier:g}")


def default_reason(role: str, multiplier: float) -> str:
    """Why a parameter no rule matched gets the rules' default, in words.

    Examples:
      >>> default_reason("kernel", 1.0), default_reason("other", 0.0)
      ('kernel (a linear map): decayed', 'other: not decayed, the default (no rule matched)')
    """
    if multiplier == 1 and role == "kernel":
        return "kernel (a linear map): decayed"
    if multiplier == 1 and role == "embedding":
        return "token embedding table: decayed"
    done = "decayed" if multiplier == 1 else ("not decayed" if multiplier == 0 else f"decayed x{multiplier:g}")
    return f"{role}: {done}, the default (no rule matched)"


def summary_line(multipliers: Sequence[float]) -> str:
    """How many parameters are decayed, in words.

    Examples:
      >>> summary_line([1.0, 1.0, 0.0, 0.5])
      '4 parameters: 2 decayed, 1 decayed at x0.5, 1 not decayed'
    """
    counts: dict[float, int] = {}
    for m in multipliers:
        counts[m] = counts.get(m, 0) + 1
    parts = [f"{counts[1.0]} decayed"] if 1.0 in counts else []
    parts += [f"{n} decayed at x{m:g}" for m, n in sorted(counts.items()) if m not in (0.0, 1.0)]
    parts += [f"{counts.get(0.0, 0)} not decayed"]
    return f"{len(multipliers)} parameter{'' if len(multipliers) == 1 else 's'}: " + ", ".join(parts)


def _brace(values: Sequence[str]) -> str:
    """One pattern for several path segments: ``{0..3}``, ``conv{1,2}``, ``{downsample,shortcut}``.

    Examples:
      >>> _brace(["0", "1", "2", "3"]), _brace(["conv1", "conv2"]), _brace(["1", "3"]), _brace(["layer1_0"])
      ('{0..3}', 'conv{1,2}', '{1,3}', 'layer1_0')
    """
    if len(values) == 1:
        return values[0]
    if all(v.isdigit() for v in values):
        nums = sorted(int(v) for v in values)
        if len(nums) >= 3 and nums == list(range(nums[0], nums[-1] + 1)):
            return f"{{{nums[0]}..{nums[-1]}}}"
        return "{" + ",".join(map(str, nums)) + "}"
    prefix = _common(values)
    suffix = _common([v[len(prefix):][::-1] for v in values])[::-1]
    middles = [v[len(prefix):len(v) - len(suffix)] for v in values]
    if not all(middles):  # one value is the prefix itself: factor nothing out
        prefix, suffix, middles = "", "", list(values)
    return prefix + _brace(middles) + suffix if all(m.isdigit() for m in middles) else (
        prefix + "{" + ",".join(middles) + "}" + suffix)


def _common(values: Sequence[str]) -> str:
    out = values[0]
    for v in values[1:]:
        while not v.startswith(out):
            out = out[:-1]
    return out


def collapse(paths: Sequence[str]) -> list[str]:
    """Dotted paths folded into brace patterns: paths that differ in one segment become one pattern.

    Segments are merged right to left, repeatedly, so repeated blocks fold into one line each.
    Patterns keep the order of their first path.

    Examples:
      >>> collapse(["layer1.0.conv1.weight", "layer1.0.conv2.weight", "layer1.1.conv1.weight",
      ...           "layer1.1.conv2.weight", "fc.weight"])
      ['layer1.{0,1}.conv{1,2}.weight', 'fc.weight']
    """
    patterns: list[tuple[tuple[str, ...], ...]] = [tuple((s,) for s in p.split(".")) for p in paths]
    changed = True
    while changed:
        changed = False
        for i in range(max((len(p) for p in patterns), default=0) - 1, -1, -1):
            merged: dict[tuple[object, ...], list[str]] = {}
            order: list[tuple[object, ...]] = []
            for p in patterns:
                if len(p) <= i:
                    key: tuple[object, ...] = ("whole", p)
                    merged.setdefault(key, [])
                else:
                    key = (len(p), p[:i], p[i + 1:])
                    merged.setdefault(key, [])
                    merged[key] += [s for s in p[i] if s not in merged[key]]
                if key not in order:
                    order.append(key)
            out = []
            for key in order:
                if key[0] == "whole":
                    out.append(key[1])
                else:
                    _, before, after = key
                    out.append((*before, tuple(merged[key]), *after))
            if len(out) < len(patterns):
                patterns, changed = out, True
    return [".".join(_brace(list(s)) for s in p) for p in patterns]


def _fit(columns: list[str], cells: list[tuple[str, ...]], width: int | None,
         optional: Sequence[str]) -> tuple[list[str], list[tuple[str, ...]], list[int | None]]:
    """Columns to show and their widths at ``width``: token columns at their natural width, the first (paths)
    and the last (reasons) sharing the rest. ``optional`` columns are dropped, in order, until whole paths
    leave the reason at least ``_REASON_MIN`` columns; if they never do, paths wrap after a dot."""
    def natural(i: int) -> int:
        return max([len(columns[i])] + [len(line) for row in cells for line in row[i].splitlines() or [""]])

    if width is None:
        return columns, cells, [None] * len(columns)
    for drop in [None, *optional]:
        if drop is not None and drop in columns:
            i = columns.index(drop)
            columns = columns[:i] + columns[i + 1:]
            cells = [row[:i] + row[i + 1:] for row in cells]
        gaps = 2 * len(columns) - 1  # one column of padding after each cell, one space between columns
        share = width - gaps - sum(natural(i) for i in range(1, len(columns) - 1))
        if share - natural(0) >= min(_REASON_MIN, natural(len(columns) - 1)):
            break
    first, last = natural(0), natural(len(columns) - 1)
    widths: list[int | None] = [natural(i) for i in range(len(columns))]
    if first + last > share:
        least = max([8] + [len(p) for row in cells for line in row[0].splitlines() for p in Wrapped(line).pieces])
        path = min(first, max(least, share - _REASON_MIN))
        widths[0], widths[-1] = path, max(8, share - path)
    return columns, cells, widths


def _table(columns: list[str], cells: list[tuple[str, ...]], widths: list[int | None], title: str,
           caption: str) -> Any:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    # Every cell is a Text or a Wrapped, never a str: user text (paths, reasons, ``why``) is not markup.
    table = Table(title=Text(title) if title else None, caption=Text(caption) if caption else None,
                  box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0), title_justify="left",
                  caption_justify="left")
    for col, w in zip(columns, widths, strict=True):
        token = col in _TOKENS
        table.add_column(Text(col), width=w, no_wrap=token, overflow="ellipsis" if token else "fold",
                         justify="right" if col == "n" else "left")
    for row in cells:
        table.add_row(*(Text(c) if col in _TOKENS else Wrapped(c, ". " if i == 0 else " ")
                        for i, (col, c) in enumerate(zip(columns, row, strict=True))))
    return table


class Explanation(Sequence[Row]):
    """Rows of (path, layer, role, source, shape, multiplier, winning rule, reason); prints as a table.

    ``str()`` and ``print`` give one row per parameter; ``compact()`` folds parameters that get the same
    decision for the same reason into one row of path patterns (what ``wdmask explain`` prints).
    """

    def __init__(self, rows: Sequence[Row], title: str = "") -> None:
        self.rows = tuple(rows)
        self.title = title

    def __getitem__(self, i: Any) -> Any:
        return self.rows[i]

    def __len__(self) -> int:
        return len(self.rows)

    def summary(self) -> str:
        """One line, in words: how many parameters are decayed and how many are not."""
        return summary_line([r.multiplier for r in self.rows])

    def _policy_columns(self) -> list[str]:
        """The ``lr`` / ``optimizer`` columns, each only when some row departs from its default."""
        cols = []
        if any(r.lr != 1.0 for r in self.rows):
            cols.append("lr")
        if any(r.optimizer is not None for r in self.rows):
            cols.append("optimizer")
        return cols

    def _columns(self) -> list[str]:
        cut = _COLUMNS.index("rule")
        return [*_COLUMNS[:cut], *self._policy_columns(), *_COLUMNS[cut:]]

    def _cells(self) -> list[tuple[str, ...]]:
        policy = self._policy_columns()
        return [(r.path + "".join(f" (= {a})" for a in r.aliases), r.layer, r.role, r.source,
                 "x".join(map(str, r.shape)) or "()", verdict(r.multiplier),
                 *(_lr_text(r.lr) if c == "lr" else (r.optimizer or "-") for c in policy),
                 "-" if r.rule is None else str(r.rule), r.reason) for r in self.rows]

    def table(self, width: int | None = None) -> Any:
        """A ``rich.table.Table`` with one row per parameter; with ``width``, it fits that many columns.

        Kinds, roles and shapes are never split: at narrow widths the ``from`` and then the ``shape`` column
        are left out, and paths (after a dot) and reasons (between words) wrap.
        """
        columns, cells, widths = _fit(self._columns(), self._cells(), width, _OPTIONAL)
        return _table(columns, cells, widths, self.title, self._caption(columns, _OPTIONAL))

    def groups(self) -> list[tuple[list[Row], str, str, str, str, str]]:
        """Rows with the same decision for the same reason: ``(rows, layer, role, decay, rule, reason)``,
        in the order of each group's first row."""
        out: dict[tuple[str, ...], list[Row]] = {}
        for r in self.rows:
            key = (r.layer, r.role, verdict(r.multiplier), "-" if r.rule is None else str(r.rule), r.reason)
            out.setdefault(key, []).append(r)
        return [(rows, *key) for key, rows in out.items()]

    def compact(self, width: int | None = None) -> Any:
        """A ``rich.table.Table`` with one row per group of parameters decided alike (same layer kind, role,
        decision, rule and reason); their paths fold into brace patterns (``layer1.{0..3}.conv{1,2}.weight``)
        and ``n`` counts them.

        Examples:
          >>> from wdmask import ParamInfo, presets
          >>> from wdmask._engine import explain_inventory
          >>> inv = [ParamInfo(("blocks", str(i), "ln", leaf), (8,), layer="norm.layer", role=role)
          ...        for i in range(12) for leaf, role in (("weight", "scale"), ("bias", "bias"))]
          >>> text = render_text(explain_inventory(inv, presets.standard).compact(110), 110)
          >>> print("\\n".join(line for line in text.splitlines() if not line.startswith("─")))
          weight decay: standard
          parameters                 n  layer       role   decay  rule  reason
          blocks.{0..11}.ln.weight  12  norm.layer  scale  no     1     norm scale/shift: decay drives them to 0
          blocks.{0..11}.ln.bias    12  norm.layer  bias   no     2     biases: decay is pointless
          24 parameters: 24 not decayed
          rule: index in the rule list, from 0 (- = none matched)
        """
        cells = [("\n".join(collapse([r.path + "".join(f" (= {a})" for a in r.aliases) for r in rows])),
                  str(len(rows)), layer, role, decay, rule, reason)
                 for rows, layer, role, decay, rule, reason in self.groups()]
        columns, cells, widths = _fit(["parameters", "n", "layer", "role", "decay", "rule", "reason"], cells,
                                      width, ("layer",))
        return _table(columns, cells, widths, self.title, self._caption(columns, ["layer"]))

    def _caption(self, shown: Sequence[str], optional: Sequence[str]) -> str:
        hidden = [c for c in optional if c not in shown]
        left_out = f"; too narrow for: {', '.join(hidden)}" if hidden else ""
        return f"{self.summary()}\n{RULE_NOTE}{left_out}"

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        yield self.table(options.max_width)

    def __str__(self) -> str:
        """The table as plain text, as wide as the terminal (``COLUMNS``); long cells wrap, none is cropped."""
        return render_text(self)
