"""``Rule`` and ``Rules``: conditions plus an action, ordered, the last match wins.

This module is the only place that matches a rule against a ``ParamInfo``.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

from wdmask._errors import NOT_RULES_MSG, RuleError, short_repr
from wdmask._regex import hazard
from wdmask._types import DECLARATIONS, LAYER_KINDS, LAYER_PATTERNS, ROLES, ParamInfo

Patterns = str | Sequence[str]

CONDITIONS: tuple[str, ...] = ("path", "regex", "layer", "role", "ndim", "feeds_norm", "module_type", "declared",
                               "in_block")
ACTIONS: tuple[str, ...] = ("decay", "multiplier", "lr", "lr_decay", "optimizer")
#: The settings a rule's action may set, each cascading on its own (the last matching rule that sets it wins),
#: and the action fields that set each.
SETTINGS: dict[str, tuple[str, ...]] = {"decay": ("decay", "multiplier"), "lr": ("lr",), "lr_decay": ("lr_decay",),
                                        "optimizer": ("optimizer",)}
EXTRAS: tuple[str, ...] = ("why", "optional")
FIELDS: tuple[str, ...] = CONDITIONS + ACTIONS + EXTRAS

_NDIM = re.compile(r"\s*(<=|>=|==|!=|<|>)?\s*(\d{1,4})\s*")
_OPS: dict[str, Callable[[int, int], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt,
}


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _segment_regex(segment: str) -> str:
    """One dotted segment of a glob via ``fnmatch``: ``*`` and ``?`` never cross a dot."""
    body = fnmatch.translate(segment).removeprefix("(?s:").removesuffix(")\\Z")
    return re.sub(r"(?<!\\)\.", "[^.]", body)


def glob_to_regex(pattern: str) -> str:
    """Translate a dotted-path glob to a regex (``*`` within a segment, ``**`` any number of segments).

    Examples:
      >>> bool(re.fullmatch(glob_to_regex("**.bias"), "layer1.0.bn1.bias"))
      True
      >>> bool(re.fullmatch(glob_to_regex("layer1.*.bias"), "layer1.0.bn1.bias"))
      False
    """
    segments = pattern.split(".")
    out = ""
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "**":
            if i > 0 and segments[i - 1] == "**":
                continue
            if last:
                out = out[: -len(r"\.")] + r"(?:\.[^.]+)*" if out else ".*"
            else:
                out += r"(?:[^.]+\.)*"
        else:
            out += _segment_regex(seg) + ("" if last else r"\.")
    return out


def _as_tuple(value: Patterns) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@dataclasses.dataclass(frozen=True)
class Rule:
    """Conditions (all optional, AND-ed) and an action (``decay`` or ``multiplier``).

    Conditions:
      path: glob on the dotted path (``*`` within a segment, ``**`` across segments).
      regex: regular expression the whole dotted path must match.
      layer: layer kind pattern(s): ``conv``, ``linear``, ``embedding``, ``norm`` (any norm),
        ``norm.batch`` … ``norm.rms``, ``other``; globs such as ``norm.*`` allowed.
      role: role(s): ``kernel``, ``bias``, ``scale``, ``embedding``, ``other``.
      ndim: per-layer rank, an int or a comparison such as ``"<=1"``.
      feeds_norm: the owning layer's output goes straight into a norm (unknown never matches).
      module_type: glob(s) on the owning module's qualified class name.
      declared: what the model declares, e.g. ``"no_decay"``.
      in_block: the leaf runs inside a repeated block (``0 < depth < depth_max``: not the stem, the
        embeddings or the head; see ``ParamInfo.depth``); unknown never matches.

    Action, one or more settings; each cascades on its own (the last matching rule *that sets it* wins):
    ``decay`` (bool) or ``multiplier`` (finite float >= 0; 0 means no decay); ``lr`` (learning-rate
    multiplier, finite float >= 0); ``lr_decay`` (layer-wise: the lr multiplier is
    ``lr_decay ** (depth_max - depth)``, ``0 < lr_decay <= 1``); ``optimizer`` (a label, e.g. ``"muon"``).
    ``why`` is free text shown in explanations; ``optional=True`` silences the
    "matches nothing" report for this rule (presets use it).

    Examples:
      >>> Rule(layer="norm", decay=False).multiplier_value
      0.0
    """

    path: Patterns | None = None
    regex: str | None = None
    layer: Patterns | None = None
    role: Patterns | None = None
    ndim: int | str | None = None
    feeds_norm: bool | None = None
    module_type: Patterns | None = None
    declared: str | None = None
    in_block: bool | None = None
    decay: bool | None = None
    multiplier: float | None = None
    lr: float | None = None
    lr_decay: float | None = None
    optimizer: str | None = None
    why: str = ""
    optional: bool = False

    def __post_init__(self) -> None:
        for name in ("path", "layer", "role", "module_type"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        for name in ("multiplier", "lr", "lr_decay"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool) and (
                    abs(value) < 1 << 1000):  # a larger int stays an int: refused below, never OverflowError
                object.__setattr__(self, name, float(value))
        try:
            _validate(self)
        except RuleError as e:  # worded to follow a label; from_dict relabels it with `where`
            raise RuleError(f"Rule({_text({f: getattr(self, f) for f in FIELDS})}){e}", detail=str(e)) from None
        object.__setattr__(self, "_match", _compile(self))

    @property
    def text(self) -> str:
        """The rule as ``key=value`` pairs, e.g. ``layer='norm', decay=False``."""
        return ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())

    def sets(self, setting: str) -> bool:
        """Whether this rule's action sets ``setting`` (``decay``, ``lr``, ``lr_decay`` or ``optimizer``)."""
        return any(getattr(self, f) is not None for f in SETTINGS[setting])

    @property
    def multiplier_value(self) -> float:
        """The decay multiplier this rule assigns."""
        if self.multiplier is not None:
            return float(self.multiplier)
        return 1.0 if self.decay else 0.0

    def matches(self, info: ParamInfo) -> bool:
        """Whether every condition holds for ``info``."""
        return self._match(info)  # type: ignore[attr-defined,no-any-return]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields that are set (lists for multi-valued conditions)."""
        out: dict[str, Any] = {}
        for f in FIELDS:
            value = getattr(self, f)
            if value is None or (f == "why" and value == "") or (f == "optional" and value is False):
                continue
            out[f] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "rule") -> Rule:
        """Build a rule from a plain dict; unknown keys raise ``RuleError`` naming ``where``."""
        if not isinstance(data, Mapping):
            raise RuleError(f"{where}: must be a table/dict of conditions and an action, got {type(data).__name__} "
                            f"{short_repr(data)}")
        _check_keys(data, where)
        for key, value in data.items():
            if value is None:
                raise RuleError(f"{where} {{{_text(data)}}}: `{key}` is null (JSON null, YAML ~ or an empty value); "
                                f"give it a value, or leave the key out to not test it")
        try:
            return cls(**data)
        except RuleError as e:
            raise RuleError(f"{where} {{{_text(data)}}}{e.detail}") from None

    def __repr__(self) -> str:
        return f"Rule({self.text})"


def _check_keys(data: Mapping[str, Any], where: str) -> None:
    """``RuleError`` for the first key that is not a rule field (shared by ``Rule(...)`` and ``from_dict``)."""
    for key in data:
        if key not in FIELDS:
            raise RuleError(f"{where} {_dict_text(data)}: unknown key {short_repr(key)}; valid: "
                            f"{', '.join(FIELDS)}."
                            f"{_did_you_mean(str(key), FIELDS)}")


_dataclass_init = Rule.__init__


@functools.wraps(_dataclass_init)
def _rule_init(self: Rule, *args: Any, **kwargs: Any) -> None:
    """The dataclass ``__init__`` behind the same unknown-key check (and message) as ``Rule.from_dict``."""
    _check_keys(kwargs, "Rule")
    if len(args) > len(FIELDS):
        raise RuleError(f"Rule takes at most {len(FIELDS)} values ({', '.join(FIELDS)}), got {len(args)} "
                        "positional ones; pass conditions and the action by keyword, e.g. "
                        "Rule(layer='norm', decay=False)")
    _dataclass_init(self, *args, **kwargs)


Rule.__init__ = _rule_init  # type: ignore[method-assign]


def _glob_error(pattern: str) -> str | None:
    """Why the glob segment ``pattern`` is malformed (an unclosed ``[`` or a stray ``]``), else ``None``.

    ``fnmatch.translate`` never fails (it quietly reads an unclosed ``[`` as a literal), so a typo
    would give a rule that can never match; sets follow fnmatch: ``[]...]`` and ``[!]...]`` hold a ``]``.
    """
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            close = pattern.find("]", j)
            if close < 0:
                return (f"unclosed '[' in segment {short_repr(pattern)} (a set like [0-9] needs its ']' and cannot "
                        "span a "
                        "dot); write [[] for a literal '[' or use `regex`")
            i = close + 1
        elif c == "]":
            return (f"stray ']' in segment {short_repr(pattern)} without an opening '['; write []] for a literal ']' "
                    "or use "
                    "`regex`")
        else:
            i += 1
    return None


def _dict_text(data: Mapping[Any, Any]) -> str:
    """``repr(dict(data))`` in insertion order, each key and value bounded, at most 12 items."""
    items = list(data.items())
    body = ", ".join(f"{short_repr(k, 40)}: {short_repr(v, 60)}" for k, v in items[:12])
    return "{" + body + (", ..." if len(items) > 12 else "") + "}"


def _text(data: Mapping[str, Any]) -> str:
    """The set fields of a rule as ``key=value`` pairs for an error message, each value's repr bounded."""
    pairs = [(k, v) for k, v in data.items()
             if v is not None and not (k == "why" and v == "") and not (k == "optional" and v is False)]
    text = ", ".join(f"{short_repr(k, 40) if not isinstance(k, str) else k}="
                     f"{short_repr(list(v) if isinstance(v, tuple) else v, 60)}" for k, v in pairs[:8])
    return text + (", ..." if len(pairs) > 8 else "")


def _validate(rule: Rule) -> None:
    """Raise ``RuleError`` worded to follow the rule's label: ``: ...`` or `` `field`: ...``."""

    def fail(field: str, msg: str) -> RuleError:
        return RuleError(f" `{field}`: {msg}")

    if all(getattr(rule, f) is None for f in CONDITIONS + ACTIONS):
        raise RuleError(f": empty rule; give conditions ({', '.join(CONDITIONS)}) and an action "
                        "(decay=True/False or multiplier=float)")
    if rule.decay is not None and rule.multiplier is not None:
        raise fail("decay", "give either `decay` or `multiplier`, not both")
    if all(getattr(rule, f) is None for f in ACTIONS):
        raise RuleError(": no action; add decay=True/False or multiplier=<float >= 0> (or lr=, lr_decay=, "
                        "optimizer=)")
    if rule.decay is not None and not isinstance(rule.decay, bool):
        raise fail("decay", f"must be true or false, got {short_repr(rule.decay)}")
    if rule.multiplier is not None:
        m = rule.multiplier
        if isinstance(m, bool) or not isinstance(m, float) or not math.isfinite(m) or m < 0:
            raise fail("multiplier", f"must be a finite number >= 0, got {short_repr(m)}")
    _validate_policy(rule)
    for field in ("path", "layer", "role", "module_type"):
        value = getattr(rule, field)
        if value is None:
            continue
        values = _as_tuple(value) if isinstance(value, (str, tuple)) else ()
        if not values or not all(isinstance(v, str) and v for v in values):
            raise fail(field, f"must be a non-empty string or list of non-empty strings, got {short_repr(value)}")
    if rule.path is not None:
        for p in _as_tuple(rule.path):
            if "" in p.split("."):
                raise fail("path", f"{short_repr(p)} has an empty segment; write segments separated by single dots")
            for seg in p.split("."):
                problem = _glob_error(seg)
                if problem:
                    raise fail("path", f"bad glob {short_repr(p)}: {problem}")
            try:
                re.compile(glob_to_regex(p))
            except re.error as e:
                raise fail("path", f"bad glob {short_repr(p)}: {e}") from None
    if rule.regex is not None:
        if not isinstance(rule.regex, str) or not rule.regex:
            raise fail("regex", f"must be a non-empty string, got {short_repr(rule.regex)}")
        try:
            re.compile(rule.regex)
        except re.error as e:
            raise fail("regex", f"bad regular expression {short_repr(rule.regex)}: {e}") from None
        problem = hazard(rule.regex)
        if problem:
            raise fail("regex", f"{short_repr(rule.regex)} can hang matching: {problem}. Use a `path` glob "
                                "(e.g. path='**.bias'), or rewrite it without nested or overlapping repetition "
                                "(e.g. '(?:[^.]+\\.)*bias' for any number of leading segments)")
    if rule.layer is not None:
        for kind in _as_tuple(rule.layer):
            if kind not in LAYER_PATTERNS and not fnmatch.filter(LAYER_KINDS, kind):
                raise fail("layer", f"unknown kind {short_repr(kind)}; valid: {', '.join(LAYER_PATTERNS)}."
                                    f"{_did_you_mean(kind, LAYER_PATTERNS)}")
    if rule.role is not None:
        for role in _as_tuple(rule.role):
            if role not in ROLES:
                raise fail("role", f"unknown role {short_repr(role)}; valid: {', '.join(ROLES)}."
                                   f"{_did_you_mean(role, ROLES)}")
    if rule.ndim is not None:
        nd = rule.ndim
        if isinstance(nd, bool) or not isinstance(nd, (int, str)) or (isinstance(nd, int) and nd < 0) or (
            isinstance(nd, str) and not _NDIM.fullmatch(nd)
        ):
            raise fail("ndim", f"must be an int >= 0 or a comparison such as '<=1', '>=2', '==2', got {short_repr(nd)}")
    if rule.feeds_norm is not None and not isinstance(rule.feeds_norm, bool):
        raise fail("feeds_norm", f"must be true or false, got {short_repr(rule.feeds_norm)}")
    if rule.in_block is not None and not isinstance(rule.in_block, bool):
        raise fail("in_block", f"must be true or false, got {short_repr(rule.in_block)}")
    if rule.declared is not None and rule.declared not in DECLARATIONS[1:]:
        raise fail("declared", f"unknown declaration {short_repr(rule.declared)}; valid: {', '.join(DECLARATIONS[1:])}")
    if not isinstance(rule.why, str):
        raise fail("why", f"must be a string, got {short_repr(rule.why)}")
    if not isinstance(rule.optional, bool):
        raise fail("optional", f"must be true or false, got {short_repr(rule.optional)}")


def _validate_policy(rule: Rule) -> None:
    """The learning-rate and optimizer actions: ``lr`` >= 0, ``0 < lr_decay <= 1``, ``optimizer`` a label."""
    for field, ok, valid in (("lr", lambda v: v >= 0, "a finite number >= 0"),
                             ("lr_decay", lambda v: 0 < v <= 1, "a finite number in (0, 1]")):
        v = getattr(rule, field)
        if v is not None and (isinstance(v, bool) or not isinstance(v, float) or not math.isfinite(v) or not ok(v)):
            raise RuleError(f" `{field}`: must be {valid}, got {short_repr(v)}")
    label = rule.optimizer
    if label is not None and (not isinstance(label, str) or not label.strip()):
        raise RuleError(f" `optimizer`: must be a non-empty label such as 'muon' or 'adamw', got {short_repr(label)}")


def _compile(rule: Rule) -> Callable[[ParamInfo], bool]:
    """One predicate per set condition, AND-ed; compiled once per rule."""
    checks: list[Callable[[ParamInfo], bool]] = []
    if rule.path is not None:
        path_rx = re.compile("|".join(f"(?:{glob_to_regex(p)})" for p in _as_tuple(rule.path)))
        checks.append(lambda i: path_rx.fullmatch(i.dotted) is not None)
    if rule.regex is not None:
        rx = re.compile(rule.regex)
        checks.append(lambda i: rx.fullmatch(i.dotted) is not None)
    if rule.layer is not None:
        kinds = frozenset(k for pat in _as_tuple(rule.layer)
                          for k in fnmatch.filter(LAYER_KINDS, "norm.*" if pat == "norm" else pat))
        checks.append(lambda i: i.layer in kinds)
    if rule.role is not None:
        roles = frozenset(_as_tuple(rule.role))
        checks.append(lambda i: i.role in roles)
    if rule.ndim is not None:
        if isinstance(rule.ndim, int):
            op, n = operator.eq, rule.ndim
        else:
            m = _NDIM.fullmatch(rule.ndim)
            assert m is not None
            op, n = _OPS[m.group(1) or "=="], int(m.group(2))
        checks.append(lambda i: op(i.ndim, n))
    if rule.feeds_norm is not None:
        want = rule.feeds_norm
        checks.append(lambda i: i.feeds_norm is want)
    if rule.module_type is not None:
        types = _as_tuple(rule.module_type)
        checks.append(lambda i: any(fnmatch.fnmatchcase(i.module_type, t) for t in types))
    if rule.declared is not None:
        declared = rule.declared
        checks.append(lambda i: i.declared == declared)
    if rule.in_block is not None:
        inside = rule.in_block
        checks.append(lambda i: i.in_block is inside)
    if not checks:
        return lambda info: True
    if len(checks) == 1:
        return checks[0]
    return lambda info: all(check(info) for check in checks)


RuleLike = Rule | Mapping[str, Any]


def _finite(number: int | float) -> bool:
    """``math.isfinite`` that says ``False`` (instead of raising ``OverflowError``) for an int beyond float."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


class Rules(Sequence[Rule]):
    """An immutable, ordered rule set; the last matching rule wins, unmatched leaves get ``default``.

    Examples:
      >>> rules = Rules([{"layer": "norm", "decay": False}]) + [Rule(role="bias", decay=False)]
      >>> len(rules), rules.default
      (2, 1.0)
      >>> Rules.from_dict(rules.to_dict()) == rules
      True
    """

    __slots__ = ("_default", "_rules", "name")

    def __init__(self, rules: Iterable[RuleLike] = (), *, default: float = 1.0, name: str = "") -> None:
        if isinstance(rules, (str, bytes, Mapping)) or not isinstance(rules, Iterable):
            raise RuleError(f"`rules` must be a list of rules (Rule or dict), got {type(rules).__name__} "
                            f"{short_repr(rules)}")
        items: list[Rule] = []
        for i, r in enumerate(rules):
            if isinstance(r, Rule):
                items.append(r)
            elif isinstance(r, Mapping):
                items.append(Rule.from_dict(r, where=f"rules[{i}]"))
            else:
                raise RuleError(f"rules[{i}]: must be a Rule or a dict, got {type(r).__name__} {short_repr(r)}")
        if isinstance(default, bool) or not isinstance(default, (int, float)) or not _finite(default) or (
            default < 0
        ):
            raise RuleError(f"`default` multiplier must be a finite number >= 0, got {short_repr(default)}")
        object.__setattr__(self, "_rules", tuple(items))
        object.__setattr__(self, "_default", float(default))
        object.__setattr__(self, "name", name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Rules is immutable; build a new one (e.g. rules + [rule]) instead of setting {name!r}")

    @property
    def default(self) -> float:
        """Multiplier for leaves no rule matches (1.0: decay)."""
        return self._default

    @overload
    def __getitem__(self, i: int) -> Rule: ...
    @overload
    def __getitem__(self, i: slice) -> Rules: ...
    def __getitem__(self, i: int | slice) -> Rule | Rules:
        if isinstance(i, slice):
            return Rules(self._rules[i], default=self._default)
        return self._rules[i]

    def __len__(self) -> int:
        return len(self._rules)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self._rules)

    def __add__(self, other: Iterable[RuleLike] | Rule) -> Rules:
        if isinstance(other, (Rule, Mapping)):
            other = [other]
        if isinstance(other, (str, bytes)) or not isinstance(other, Iterable):
            raise RuleError(f"can only add Rules, a Rule, a dict or a list of them to Rules, got "
                            f"{type(other).__name__}")
        extra = other if isinstance(other, Rules) else Rules(other)
        return Rules((*self._rules, *extra), default=self._default)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rules) and self._rules == other._rules and self._default == other._default

    def __hash__(self) -> int:
        return hash((self._rules, self._default))

    def __repr__(self) -> str:
        label = f"{self.name}: " if self.name else ""
        body = ", ".join(f"{{{r.text}}}" for r in self._rules)
        default = "" if self._default == 1.0 else f", default={self._default}"
        return f"Rules({label}[{body}]{default})"

    def to_dict(self) -> dict[str, Any]:
        """``{"rules": [...]}`` (plus ``"default"`` when it is not 1.0): JSON/TOML/YAML-ready."""
        out: dict[str, Any] = {"rules": [r.to_dict() for r in self._rules]}
        if self._default != 1.0:
            out["default"] = self._default
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Rules:
        """Inverse of ``to_dict``; also accepts a bare list of rule dicts (a file's ``preset``: ``wdmask.loads``)."""
        if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
            return cls(data)
        if not isinstance(data, Mapping):
            raise RuleError(f"rules data must be a dict with a `rules` list or a list of rule dicts, got "
                            f"{type(data).__name__} {short_repr(data)}")
        for key in data:
            if key not in ("rules", "default"):
                raise RuleError(f"rules data: unknown top-level key {short_repr(key)}; valid: rules, default (and "
                                f"preset, in a rules file).{_did_you_mean(str(key), ('rules', 'default', 'preset'))}")
        if "rules" not in data:
            raise RuleError("rules data: missing the `rules` list (e.g. [[rules]] tables in TOML)")
        return cls(data["rules"], default=data.get("default", 1.0))


def as_rules(rules: Rules | Iterable[RuleLike] | Mapping[str, Any]) -> Rules:
    """The one normalizer of every ``rules=`` argument: a ``Rules``, a list of ``Rule``/dict, or ``{"rules": [...]}``.

    Examples:
      >>> as_rules({"rules": [{"role": "bias", "decay": False}]}) == Rules([Rule(role="bias", decay=False)])
      True
      >>> as_rules(lambda p: p)
      Traceback (most recent call last):
      ...
      wdmask._errors.RuleError: `rules` must be a wdmask Rules (e.g. wdmask.presets.standard), ...
    """
    if isinstance(rules, Rules):
        return rules
    if isinstance(rules, Rule):
        return Rules([rules])
    if isinstance(rules, Mapping):
        if "rules" in rules:
            return Rules.from_dict(rules)
        if not any(k in FIELDS for k in rules):
            raise RuleError(NOT_RULES_MSG.format(what=_short(rules)))
        return Rules([rules])
    if (callable(rules) or isinstance(rules, (str, bytes)) or hasattr(rules, "shape")  # an array or tensor
            or not isinstance(rules, Iterable)):
        raise RuleError(NOT_RULES_MSG.format(what=_short(rules)))
    items = list(rules)
    for item in items:
        if hasattr(item, "shape") or isinstance(item, (bool, int, float)):
            raise RuleError(NOT_RULES_MSG.format(what=f"a sequence holding {type(item).__name__}"))
    return Rules(items)


def _short(value: Any) -> str:
    return f"{type(value).__name__} {short_repr(value)}"[:200]
