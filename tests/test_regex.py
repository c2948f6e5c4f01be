"""``regex`` conditions that can backtrack catastrophically are refused when the rule is built (issue 21)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import wdmask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HANGING = {
    "nested_star": r"(.*)*\.bias",
    "nested_plus": r"(a+)+$",
    "word_space": r"(\w+\s?)*",
    "overlapping_alternatives": r"(a|aa)*b",
    "optional_alternative": r"(x|x?)*y",
    "three_wildcards": r".*.*.*\.bias",
    "inner_matches_separator": r"(a+a)*b",
    "bounded_outer": r"(a*){2,10}b",
    "alternatives_of_quantifiers": r"(?:\w+|\d+)*x",
}
SAFE = {
    "suffix": r".*\.bias",
    "segments": r"(?:[^.]+\.)*bias",
    "dotted_words": r"(\.\w+)*",
    "numbered": r"layer[0-9]+\..*",
    "alternatives": r"(conv|bn)\d+\.weight",
    "disjoint_alternatives": r"(?:conv|bn)*x",
    "atomic": r"(?>a+)+",
    "possessive": r"a*+b",
    "two_wildcards": r".*\.(ln|norm)[^.]*\..*",
    "hf": r"(?i)(.*\.)?norm(\..*)?",
}


@pytest.mark.parametrize("pattern", HANGING.values(), ids=list(HANGING))
def test_patterns_that_can_hang_are_refused_at_construction(pattern):
    with pytest.raises(wdmask.RuleError, match=r"`regex`: .* can hang matching: .*Use a `path` glob"):
        wdmask.Rule(regex=pattern, decay=False)
    with pytest.raises(wdmask.RuleError, match=r"rules\[0\] .*can hang matching"):
        wdmask.loads(f"[[rules]]\nregex = '{pattern}'\ndecay = false\n", "toml")


@pytest.mark.parametrize("pattern", SAFE.values(), ids=list(SAFE))
def test_safe_patterns_are_accepted_and_fail_fast_on_long_paths(pattern):
    rule = wdmask.Rule(regex=pattern, decay=False)
    adversarial = ["a" * 3000 + "!", "blocks." * 400 + "x!", "x" * 2000 + "." + "a" * 2000 + "!"]
    start = time.perf_counter()
    for path in adversarial:
        rule.matches(wdmask.ParamInfo(tuple(path.split(".")), (2,)))
    assert time.perf_counter() - start < 1.0


def test_catastrophic_regex_does_not_hang_decide():
    # `re` cannot be interrupted (no signal reaches C code): a child process with a timeout is the only guard
    code = (
        "import wdmask, time\n"
        "inv = [wdmask.ParamInfo(('layer%d_%d' % (i, j), 'conv%d' % k, 'weight_and_some_long_suffix_x'), (3, 3))\n"
        "       for i in range(4) for j in range(3) for k in range(3)]\n"
        "try:\n"
        "    rules = [wdmask.Rule(regex=r'(.*)*\\.bias', decay=False)]\n"
        "    wdmask.decide(inv, rules)\n"
        "    print('decided')\n"
        "except wdmask.RuleError as e:\n"
        "    print('refused:', e)\n"
    )
    env = {**os.environ, "PYTHONPATH": ROOT}
    try:
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20, env=env,
                             check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("decide with regex '(.*)*\\.bias' still running after 20 s")
    assert run.stdout.startswith("refused:") and "path='**.bias'" in run.stdout, run.stdout + run.stderr[-2000:]
