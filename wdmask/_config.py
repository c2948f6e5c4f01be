"""Rules as files: JSON, TOML (``tomllib``) and YAML (``yaml.safe_load``); never eval or pickle.

Parsing is bounded: files and texts larger than ``MAX_BYTES`` are refused before parsing, YAML
anchors and aliases (the only way a small YAML text expands into a huge structure) are refused,
and a key given twice in one table is an error in every format (TOML's own rule), not a silent
"last one wins". Files must be UTF-8 (a UTF-8 byte-order mark is accepted).
"""

from __future__ import annotations

import codecs
import json
import math
import pathlib
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

from wdmask._errors import RuleError, short_repr
from wdmask._optional import MissingDependencyError, require
from wdmask._rules import RuleLike, Rules, as_rules

FORMATS = ("json", "toml", "yaml")
_SUFFIXES = {".json": "json", ".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}
#: Largest rules text or file accepted (a preset is about 1 kB; a file of 10 000 path rules fits).
MAX_BYTES = 1 << 20


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json`` ``object_pairs_hook``: a key given twice in one object is an error, not "the last one wins"."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise RuleError(f"duplicate key {short_repr(key)} in {{{_pairs_text(pairs)}}}: give each key once "
                            "(the second value would silently replace the first)")
        out[key] = value
    return out


def _pairs_text(pairs: list[tuple[Any, Any]]) -> str:
    text = ", ".join(f"{short_repr(k, 40)}: {short_repr(v, 40)}" for k, v in pairs[:6])
    return text + (", ..." if len(pairs) > 6 else "")


def _yaml_load(text: str) -> Any:
    """``yaml.safe_load`` without anchors/aliases (no expansion: a "billion laughs" fails at its first
    anchor) and without duplicate keys."""
    (yaml,) = require("yaml", by="wdmask.loads(..., 'yaml')")

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            anchor = getattr(event, "anchor", None)
            if anchor is not None:
                kind = "alias *" if isinstance(event, yaml.AliasEvent) else "anchor &"
                raise RuleError(f"YAML {kind}{short_repr(anchor, 40)[1:-1]} at line {event.start_mark.line + 1}: "
                                "anchors and aliases are not accepted in rules files (they can expand a small file "
                                "into a huge structure); write each rule out")
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                lines: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    line = key_node.start_mark.line + 1
                    try:
                        first = lines.get(key)
                    except TypeError:  # an unhashable key: SafeConstructor says so below
                        continue
                    if first is not None:
                        raise RuleError(f"duplicate key {short_repr(key)} at lines {first} and {line}: give each "
                                        "key once (the second value would silently replace the first)")
                    lines[key] = line
            return super().construct_mapping(node, deep=deep)

    return yaml.load(text, Loader=Loader)


def _decode(data: bytes, where: str) -> str:
    """UTF-8 bytes (an optional BOM) as text; any other encoding is a ``RuleError`` saying which and how to fix."""
    fix = "rules files must be UTF-8: re-save the file as UTF-8"
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    elif data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise RuleError(f"{where}: the file is UTF-32 encoded (it starts with a UTF-32 byte-order mark); {fix}")
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise RuleError(f"{where}: the file is UTF-16 encoded (it starts with a UTF-16 byte-order mark); {fix}")
    if b"\x00" in data:  # valid UTF-8, but never in a text file: UTF-16/32 without a byte-order mark
        offset = data.index(b"\x00")
        raise RuleError(f"{where}: not UTF-8 text: a NUL byte at offset {offset} (it looks like UTF-16 or UTF-32 "
                        f"without a byte-order mark); {fix}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        guess = " (Latin-1 or Windows-1252?)"
        raise RuleError(f"{where}: not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start} (line {line}) "
                        f"cannot be decoded{guess}; {fix} (e.g. iconv -f latin1 -t utf-8)") from None


def loads(text: str | bytes, format: str) -> Rules:  # noqa: A002 - mirrors json/tomllib vocabulary
    """Parse rules from ``text`` in ``format`` (``json``, ``toml`` or ``yaml``).

    The data is a rules table (``rules = [...]``, optionally ``default = <multiplier>`` and
    ``preset = "<name>"``: the preset's rules come first, then these), or a bare list of rules.

    Raises:
      RuleError: not valid ``format``, a key given twice, a null value, YAML anchors/aliases, a text
        larger than ``MAX_BYTES``, or an invalid rule.

    Examples:
      >>> loads('[[rules]]\\nlayer = "norm"\\ndecay = false\\n', "toml")[0].layer
      'norm'
      >>> len(loads('preset = "standard"\\n[[rules]]\\npath = "head.**"\\ndecay = false\\n', "toml"))
      6
    """
    if format not in FORMATS:
        raise RuleError(f"unknown rules format {short_repr(format)}; valid: {', '.join(FORMATS)}")
    if isinstance(text, (bytes, bytearray)):
        text = _decode(bytes(text), "rules text")
    if not isinstance(text, str):
        raise TypeError(f"loads(): `text` must be a str (the file's contents), got {type(text).__name__} "
                        f"{short_repr(text)}; to read a file use wdmask.load(path)")
    if len(text) > MAX_BYTES:
        raise RuleError(f"rules text of {len(text)} characters is larger than the {MAX_BYTES} accepted; "
                        "a rules file is a short list of rules")
    try:
        data: Any
        if format == "json":
            data = json.loads(text, object_pairs_hook=_unique_keys)
        elif format == "toml":
            data = tomllib.loads(text)
        else:
            data = _yaml_load(text)
    except (RuleError, MissingDependencyError):
        raise
    except RecursionError:
        raise RuleError(f"not valid {format.upper()}: nested too deeply") from None
    except Exception as e:  # each parser has its own error type; all mean "not valid <format>"
        raise RuleError(f"not valid {format.upper()}: {short_repr(str(e), 300)[1:-1]}") from None
    return from_data(data)


def from_data(data: Any) -> Rules:
    """Rules from a parsed file: ``Rules.from_dict``, plus a ``preset`` key whose rules come first.

    Examples:
      >>> rules = from_data({"preset": "standard", "rules": [{"path": "head.**", "decay": False}]})
      >>> len(rules), rules[-1].path, rules.name
      (6, 'head.**', 'standard + 1 rule(s)')
    """
    if not isinstance(data, Mapping) or "preset" not in data:
        return Rules.from_dict(data)
    from wdmask import presets

    name = data["preset"]
    if not isinstance(name, str):
        raise RuleError(f"rules data: `preset` must be the name of a preset, one of {', '.join(presets.names)}; "
                        f"got {type(name).__name__} {short_repr(name)}")
    base = presets.by_name(name)
    extra = Rules.from_dict({"rules": [], "default": base.default, **{k: v for k, v in data.items() if k != "preset"}})
    return Rules((*base, *extra), default=extra.default, name=f"{base.name} + {len(extra)} rule(s)")


def _toml_string(text: str) -> str:
    """A TOML basic string: every Unicode scalar value written as itself, except ``"``, ``\\`` and control
    characters (escaped); a lone surrogate (not Unicode text, and not writable in TOML) is refused."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            raise RuleError(f"cannot write {short_repr(text)} to TOML: it holds the lone surrogate U+{code:04X}, "
                            "which is not a Unicode character (TOML allows none)")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):  # pragma: no cover - rules hold finite numbers only
            raise RuleError(f"cannot write {value!r} to TOML")
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise RuleError(f"cannot write {type(value).__name__} {short_repr(value)} to TOML")  # pragma: no cover


def dumps(rules: Rules | Iterable[RuleLike], format: str = "json") -> str:  # noqa: A002
    """Serialize ``rules`` (``json``, ``toml`` or ``yaml``); ``loads`` reads it back unchanged.

    Raises:
      TypeError: ``rules`` is not a rule set (``None``, a string, ...).
      RuleError: an unknown ``format``, or (TOML) text holding a lone surrogate, which TOML cannot hold.

    Examples:
      >>> from wdmask import presets
      >>> loads(dumps(presets.standard, "toml"), "toml") == presets.standard
      True
    """
    if rules is None or isinstance(rules, (str, bytes)) or not isinstance(rules, (Rules, Mapping, Iterable)):
        raise TypeError(f"dumps(): `rules` must be a Rules (e.g. wdmask.presets.standard) or a list of rules, got "
                        f"{type(rules).__name__} {short_repr(rules)}")
    if format not in FORMATS:
        raise RuleError(f"unknown rules format {short_repr(format)}; valid: {', '.join(FORMATS)}")
    data = as_rules(rules).to_dict()
    if format == "json":
        return json.dumps(data, indent=2) + "\n"
    if format == "yaml":
        (yaml,) = require("yaml", by="wdmask.dumps(..., 'yaml')")
        return str(yaml.safe_dump(data, sort_keys=False))
    lines = [f"default = {_toml_value(data['default'])}"] if "default" in data else []
    if not data["rules"]:
        return "\n".join([*lines, "rules = []", ""])
    lines += [""] if lines else []
    for rule in data["rules"]:
        lines.append("[[rules]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in rule.items()]
        lines.append("")
    return "\n".join(lines)


def load(path: str | pathlib.Path) -> Rules:
    """Read rules from a ``.json``, ``.toml``, ``.yaml`` or ``.yml`` file (UTF-8, at most ``MAX_BYTES``).

    A file may build on a preset: ``preset = "standard"`` (JSON/YAML: ``"preset": "standard"``) puts
    the preset's rules first and the file's after them (the last match wins).

    Example (TOML)::

        preset = "standard"
        [[rules]]
        path = "head.**"
        multiplier = 0.5
    """
    path = pathlib.Path(path)
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise RuleError(f"{path}: unknown rules file suffix {short_repr(path.suffix)}; valid: {', '.join(_SUFFIXES)}")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise RuleError(f"{path}: cannot read rules file: {e.strerror}") from None
    if len(data) > MAX_BYTES:
        raise RuleError(f"{path}: larger than the {MAX_BYTES} bytes accepted for a rules file")
    try:
        return loads(_decode(data, str(path)), fmt)
    except RuleError as e:
        if str(e).startswith(f"{path}: "):
            raise
        raise RuleError(f"{path}: {e}") from None
