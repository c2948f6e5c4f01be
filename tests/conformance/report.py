"""Print where the adapters differ from the conformance catalogue: ``python -m tests.conformance.report``.

One line per (case, framework, parameter) that fails, with the fields that differ as ``got -> want``; a case whose
describe raises is one line with the error. The rewrite's progress report (the tests say pass/fail per case; this
says which field of which parameter).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

from tests.conformance.catalogue import CASES
from tests.conformance.test_conformance import expected, observed

FIELDS = ("layer", "role", "usage", "feeds_norm", "standard", "scale_inv")


def _short(value: object) -> str:
    if isinstance(value, tuple):
        return "+".join(value) or "()"
    return str(value)


def differences() -> Iterator[tuple[str, str, str, str]]:
    """``(case, framework, parameter path, what differs)`` for every mismatch."""
    for name, case in CASES.items():
        for framework in ("torch", "linen", "equinox"):
            if getattr(case, framework) is None:
                continue
            try:
                got = observed(name, framework)
            except Exception as error:  # reported, not raised: the report lists every case
                yield name, framework, "*", f"raises {type(error).__name__}: {str(error)[:100]}"
                continue
            want = expected(name, framework)
            for key in sorted(set(got) | set(want)):
                g, w = got.get(key), want.get(key)
                if g == w:
                    continue
                if g is None or w is None:
                    yield name, framework, key[1], "missing" if g is None else "not expected"
                    continue
                diff = ", ".join(f"{f} {_short(a)} -> {_short(b)}" for f, a, b in zip(FIELDS, g, w, strict=True)
                                 if a != b)
                yield name, framework, key[1], diff


def main() -> int:
    rows = list(differences())
    for name, framework, path, diff in rows:
        print(f"{name:24} {framework:8} {path:28} {diff}")
    print(f"{len(rows)} differences in {len({(r[0], r[1]) for r in rows})} (case, framework) pairs")
    return 1 if rows else 0


if __name__ == "__main__":
    sys.exit(main())
