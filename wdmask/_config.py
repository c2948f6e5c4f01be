"""Rules as files: JSON, TOML (``tomllib``) and YAML (``yaml.safe_load``); never eval or pickle."""

from __future__ import annotations

import json
import pathlib
import tomllib
from typing import Any

from wdmask._errors import RuleError
from wdmask._rules import Rules

FORMATS = ("json", "toml", "yaml")
_SUFFIXES = {".json": "json", ".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}


def loads(text: str, format: str) -> Rules:  # noqa: A002 - mirrors json/tomllib vocabulary
    """Parse rules from ``text`` in ``format`` (``json``, ``toml`` or ``yaml``).

    Example:
      >>> loads('[[rules]]\\nlayer = "norm"\\ndecay = false\\n', "toml")[0].layer
      'norm'
    """
    if format not in FORMATS:
        raise RuleError(f"unknown rules format {format!r}; valid: {', '.join(FORMATS)}")
    try:
        data: Any
        if format == "json":
            data = json.loads(text)
        elif format == "toml":
            data = tomllib.loads(text)
        else:
            try:
                import yaml
            except ImportError:
                raise RuleError("YAML rules need PyYAML: pip install pyyaml") from None
            data = yaml.safe_load(text)
    except RuleError:
        raise
    except Exception as e:  # each parser has its own error type; all mean "not valid <format>"
        raise RuleError(f"not valid {format.upper()}: {e}") from None
    return Rules.from_dict(data)


def dumps(rules: Rules, format: str = "json") -> str:  # noqa: A002
    """Serialize ``rules`` (``json``, ``toml`` or ``yaml``); ``loads`` reads it back unchanged.

    Example:
      >>> from wdmask import presets
      >>> loads(dumps(presets.standard, "toml"), "toml") == presets.standard
      True
    """
    data = rules.to_dict()
    if format == "json":
        return json.dumps(data, indent=2) + "\n"
    if format == "yaml":
        import yaml

        return str(yaml.safe_dump(data, sort_keys=False))
    if format == "toml":
        lines = [f"default = {data['default']!r}"] if "default" in data else []
        if not data["rules"]:
            return "\n".join([*lines, "rules = []", ""])
        lines += [""] if lines else []
        for rule in data["rules"]:
            lines.append("[[rules]]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in rule.items()]
            lines.append("")
        return "\n".join(lines)
    raise RuleError(f"unknown rules format {format!r}; valid: {', '.join(FORMATS)}")


def load(path: str | pathlib.Path) -> Rules:
    """Read rules from a ``.json``, ``.toml``, ``.yaml`` or ``.yml`` file.

    Example (TOML)::

        [[rules]]
        layer = "norm"
        decay = false
        [[rules]]
        path = "head.**"
        multiplier = 0.5
    """
    path = pathlib.Path(path)
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise RuleError(f"{path}: unknown rules file suffix {path.suffix!r}; valid: {', '.join(_SUFFIXES)}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RuleError(f"{path}: cannot read rules file: {e.strerror}") from None
    try:
        return loads(text, fmt)
    except RuleError as e:
        raise RuleError(f"{path}: {e}") from None
