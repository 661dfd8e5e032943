"""The model fuzzer (issue #22): random models in all three dialects through ``resilient.sample``.

The promise: a model samples (correctly, where the posterior is known in closed form) or Resilient says
which site is wrong; never a backend traceback, never a hang, never a silently wrong answer. The quick
fuzz samples a fixed set of models (a fixed Hypothesis seed) in ONE worker process, so compilation
warm-up is shared; each model runs under a hard outer limit (time budget + grace). The slow test lets
Hypothesis search and shrink a failing model to a minimal one (one worker process per model).
Generator, builders and classification: ``tests/fuzz_models.py``; N models raw vs Resilient:
``benchmarks/fuzz.py``.
"""

from __future__ import annotations

import pytest

from tests import fuzz_models as fm

pytest.importorskip("hypothesis")

QUICK_MODELS = 6  # the default suite's share (its 4-minute budget on 2 cores; all three dialects); the slow set runs 54 more
MORE_MODELS = 54
QUICK_SEED = 22  # the number: a fixed set of models on every machine
BAD = ("crash", "hang", "wrong")


def known_open(spec: dict, result: dict) -> str | None:
    """Failures tracked by an xfail(strict=True) test in tests/test_fuzz_regressions.py (fix not in the
    fuzzer's files); the quick fuzz reports them but does not fail on them. Returns the test's name."""
    return None


def _failures(specs: list[dict], results: list[dict]) -> list[str]:
    lines = []
    for spec, result in zip(specs, results):
        if result["outcome"] in BAD and not known_open(spec, result):
            lines.append(f"{result['outcome']}: {fm.describe(spec)}\n    {result.get('detail', '')}\n    spec={spec!r}")
    return lines


def test_the_generator_covers_every_dialect_and_is_reproducible():
    first = fm.generate(40, QUICK_SEED)
    assert first == fm.generate(40, QUICK_SEED)
    assert {s["dialect"] for s in first} == set(fm.DIALECTS)
    assert {fm.expectation(s) for s in first} >= {"ok", "error"}
    assert any(fm.truth(s) for s in first)


def test_quick_fuzz_no_crash_no_hang_no_wrong_answer():
    specs = fm.generate(QUICK_MODELS, QUICK_SEED)
    results = fm.run_batch([{"spec": s, "side": "resilient"} for s in specs])
    outcomes = [r["outcome"] for r in results]
    failures = _failures(specs, results)
    assert not failures, f"{len(failures)} of {len(specs)} models broke the promise:\n" + "\n".join(failures)
    # where the answer is known it was checked, and a model without a valid posterior never sampled
    assert outcomes.count("correct") >= 1
    for spec, result in zip(specs, results):
        if fm.expectation(spec) == "error":
            assert result["outcome"] in ("named_error", "unnamed_error", "build_error", "warned"), fm.describe(spec)


@pytest.mark.slow
def test_more_fuzz_no_crash_no_hang_no_wrong_answer():
    """The quick fuzz's promise on 54 more fixed models (the last 54 of ``generate(60, QUICK_SEED)``; CI runs it)."""
    specs = fm.generate(QUICK_MODELS + MORE_MODELS, QUICK_SEED)[QUICK_MODELS:]
    results = fm.run_batch([{"spec": s, "side": "resilient"} for s in specs])
    failures = _failures(specs, results)
    assert not failures, f"{len(failures)} of {len(specs)} models broke the promise:\n" + "\n".join(failures)
    for spec, result in zip(specs, results):
        if fm.expectation(spec) == "error":
            assert result["outcome"] in ("named_error", "unnamed_error", "build_error", "warned"), fm.describe(spec)


@pytest.mark.slow
def test_fuzz_with_shrinking():
    """Hypothesis searches; a failing model shrinks to a minimal spec (printed as the falsifying example)."""
    from hypothesis import HealthCheck, given, settings

    @settings(max_examples=40, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(fm.strategies()["models"]())
    def check(spec):
        result = fm.run_batch([{"spec": spec, "side": "resilient"}])[0]
        assert result["outcome"] not in BAD or known_open(spec, result), f"{fm.describe(spec)}: {result}"

    check()
