"""Refuse ``regex`` conditions that can backtrack catastrophically (a rule must never hang ``decide``).

Python's ``re`` has no time limit, and a pattern such as ``(.*)*\\.bias`` takes exponential time
on a path it does not match. ``hazard`` reads the parsed pattern (``re._parser``) and names the
first construct that can make the matcher try exponentially (or high-polynomially) many ways:

* a repeated group holding an unbounded quantifier (``(a+)+``, ``(.*)*``, ``(\\w+\\s?)*``), unless
  every iteration must consume a character none of the inner quantifiers can (``(?:[^.]+\\.)*``,
  ``(\\.\\w+)*``: the dot splits the iterations one way only);
* an unbounded repetition of alternatives that can start with the same character, or be empty
  (``(a|aa)*``, ``(x|x?)*``);
* three or more unbounded quantifiers in a row that can match the same character (``.*.*.*``).

Possessive quantifiers and atomic groups (``a*+``, ``(?>...)``) never backtrack and are accepted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

try:  # Python >= 3.11
    from re import _constants as _c
    from re import _parser as _p
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _c  # type: ignore[no-redef]
    import sre_parse as _p  # type: ignore[no-redef]

__all__ = ["hazard"]

_REPEATS = (_c.MAX_REPEAT, _c.MIN_REPEAT)
_CATEGORIES = {"CATEGORY_DIGIT": r"\d", "CATEGORY_NOT_DIGIT": r"\D", "CATEGORY_SPACE": r"\s",
               "CATEGORY_NOT_SPACE": r"\S", "CATEGORY_WORD": r"\w", "CATEGORY_NOT_WORD": r"\W"}
#: Characters tried when asking "can these two items match the same character?" (plus the pattern's literals).
_SAMPLE = tuple(range(128))

Items = Any  # a parsed (sub)pattern: a sequence of (opcode, argument)


def _in_set(av: list[tuple[Any, Any]], ch: int) -> bool:
    negate, hit = False, False
    for op, a in av:
        if op is _c.NEGATE:
            negate = True
        elif op is _c.LITERAL:
            hit = hit or a == ch
        elif op is _c.RANGE:
            hit = hit or a[0] <= ch <= a[1]
        elif op is _c.CATEGORY:
            hit = hit or re.fullmatch(_CATEGORIES.get(str(a), r"[\s\S]"), chr(ch)) is not None
        else:  # an opcode this reader does not know: assume it matches
            hit = True
    return hit != negate


def _may_match(items: Items, ch: int) -> bool:
    """Whether some character-consuming part of ``items`` can match the character ``ch``."""
    for op, av in items:
        if op is _c.LITERAL:
            found = av == ch
        elif op is _c.NOT_LITERAL:
            found = av != ch
        elif op is _c.IN:
            found = _in_set(av, ch)
        elif op in _REPEATS or op is _c.POSSESSIVE_REPEAT:
            found = _may_match(av[2], ch)
        elif op is _c.SUBPATTERN:
            found = _may_match(av[3], ch)
        elif op is _c.BRANCH:
            found = any(_may_match(b, ch) for b in av[1])
        elif op is _c.ATOMIC_GROUP:
            found = _may_match(av, ch)
        elif op is _c.GROUPREF_EXISTS:
            found = _may_match(av[1], ch) or (av[2] is not None and _may_match(av[2], ch))
        elif op in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):  # zero-width
            found = False
        else:  # ANY, a back-reference, an unknown opcode: anything
            found = True
        if found:
            return True
    return False


def _overlap(a: Items, b: Items, literals: Iterable[int]) -> bool:
    return any(_may_match(a, ch) and _may_match(b, ch) for ch in (*_SAMPLE, *literals))


def _unbounded(items: Items) -> list[Items]:
    """Bodies of the backtracking quantifiers without an upper bound inside ``items`` (atomic parts skipped)."""
    out: list[Items] = []
    for op, av in items:
        if op in _REPEATS:
            if av[1] == _c.MAXREPEAT:
                out.append(av[2])
            out += _unbounded(av[2])
        elif op is _c.SUBPATTERN:
            out += _unbounded(av[3])
        elif op is _c.BRANCH:
            for branch in av[1]:
                out += _unbounded(branch)
        elif op is _c.GROUPREF_EXISTS:
            out += _unbounded(av[1]) + (_unbounded(av[2]) if av[2] is not None else [])
    return out


def _sequence(items: Items) -> list[tuple[Any, Any]]:
    """``items`` with non-capturing/capturing groups spliced in (their contents are part of the sequence)."""
    out: list[tuple[Any, Any]] = []
    for op, av in items:
        if op is _c.SUBPATTERN:
            out += _sequence(av[3])
        else:
            out.append((op, av))
    return out


def _first(items: Items) -> tuple[list[tuple[Any, Any]], bool]:
    """The items that can supply the first character of a match of ``items``, and whether it can be empty."""
    out: list[tuple[Any, Any]] = []
    for op, av in _sequence(items):
        if op in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):
            continue
        out.append((op, av))
        if not (op in _REPEATS or op is _c.POSSESSIVE_REPEAT) or av[0] > 0:
            return out, False
    return out, True


def _ambiguous_branches(body: Items, literals: tuple[int, ...]) -> bool:
    for op, av in _sequence(body):
        if op is not _c.BRANCH:
            continue
        firsts = [_first(b) for b in av[1]]
        if any(empty for _, empty in firsts):
            return True
        for i, (a, _) in enumerate(firsts):
            for b, _ in firsts[i + 1:]:
                if _overlap(a, b, literals):
                    return True
    return False


def _separated(body: Items, inner: list[Items]) -> bool:
    """Every iteration of ``body`` consumes a literal character no inner unbounded quantifier can match."""
    for op, av in _sequence(body):
        if op is _c.LITERAL and not any(_may_match(sub, av) for sub in inner):
            return True
    return False


def _literals(items: Items) -> set[int]:
    out: set[int] = set()
    for op, av in items:
        if op in (_c.LITERAL, _c.NOT_LITERAL):
            out.add(av)
        elif op in _REPEATS or op is _c.POSSESSIVE_REPEAT:
            out |= _literals(av[2])
        elif op is _c.SUBPATTERN:
            out |= _literals(av[3])
        elif op is _c.BRANCH:
            for b in av[1]:
                out |= _literals(b)
    return out


def _walk(items: Items, literals: tuple[int, ...]) -> str | None:
    seq = _sequence(items)
    run: list[Items] = []  # consecutive unbounded quantifiers that can match a common character
    for op, av in seq:
        if op in _REPEATS and av[1] == _c.MAXREPEAT and (not run or _overlap(run[-1], av[2], literals)):
            run.append(av[2])
            if len(run) >= 3:
                return (f"{len(run)} unbounded quantifiers in a row can match the same characters (e.g. '.*.*.*'), "
                        "so the matching time grows as a power of the path's length")
        elif op not in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):
            run = [av[2]] if op in _REPEATS and av[1] == _c.MAXREPEAT else []
    for op, av in seq:
        if op in _REPEATS:
            _, high, body = av
            if high == _c.MAXREPEAT or high > 1:
                inner = _unbounded(body)
                if inner and not _separated(body, inner):
                    return ("a repeated group holds an unbounded quantifier (nested quantifiers, as in '(a+)+' or "
                            "'(.*)*'), so a path that does not match is tried in exponentially many ways")
            if high == _c.MAXREPEAT and _ambiguous_branches(body, literals):
                return ("an unbounded repetition of alternatives that can match the same text (as in '(a|aa)*'), so "
                        "a path that does not match is tried in exponentially many ways")
            found = _walk(body, literals)
        elif op is _c.BRANCH:
            found = next((f for f in (_walk(b, literals) for b in av[1]) if f), None)
        elif op in (_c.ASSERT, _c.ASSERT_NOT):
            found = _walk(av[1], literals)
        elif op is _c.GROUPREF_EXISTS:
            found = _walk(av[1], literals) or (_walk(av[2], literals) if av[2] is not None else None)
        else:  # literals, sets, possessive quantifiers, atomic groups: no backtracking hazard of their own
            found = None
        if found:
            return found
    return None


def hazard(pattern: str) -> str | None:
    """Why ``pattern`` can backtrack catastrophically on a dotted path, or ``None`` when it cannot.

    Examples:
      >>> hazard(r"(?:[^.]+\\.)*bias") is None, hazard(r".*\\.bias") is None
      (True, True)
      >>> hazard(r"(.*)*\\.bias")[:40]
      'a repeated group holds an unbounded quan'
    """
    parsed = _p.parse(pattern)
    return _walk(parsed.data, tuple(sorted(_literals(parsed.data))))
