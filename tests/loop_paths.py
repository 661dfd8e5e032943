"""What a seeded run of the loop may legitimately do on any CPU, for the tests' assertions.

JAX/XLA, PyTensor and Numba take other floating-point paths on other CPUs, so a seeded trajectory differs between
machines. Where the model does not force it, the loop may run the same chains longer (``more_draws``: the result
then holds more draws than asked), raise target_accept once after a few divergences under the limit
(``target_accept``, the better of the two attempts returned), and return the best attempt by its diagnostics, which
is not necessarily the last. These helpers read the attempt log for what came back and check each such step against
the condition that justifies it, so a test asserts the invariant, not one machine's path.
"""

from __future__ import annotations

from resilient import record


def returned_attempt(data) -> dict:
    """The attempt whose draws ``data`` holds (the run record's ``returned_attempt``), not the last one."""
    number = record.read_run(data)["returned_attempt"]
    [attempt] = [a for a in record.read_attempts(data) if a["attempt"] == number]
    return attempt


def remedies(data) -> list:
    return [a["remedy"] for a in record.read_attempts(data)]


def draws_returned(data, asked: int) -> int:
    """The draws per chain ``data`` must hold: ``asked``, or more where the returned attempt ran the chains longer
    (``more_draws``). Asserts the returned attempt's own count agrees."""
    attempt = returned_attempt(data)
    continued = attempt["settings"].get("continued")
    if continued is None:
        expected = attempt["settings"]["draws"]  # asked, or twice that after a longer_warmup on the way
        longer = any(a["remedy"] == "longer_warmup" for a in record.read_attempts(data)[:attempt["attempt"]])
        assert expected == asked or (longer and expected > asked), (expected, asked)
    else:
        assert attempt["remedy"] == "more_draws" and continued["extra_draws"] > 0, attempt
        expected = continued["draws_before"] + continued["extra_draws"]
        assert expected > asked
    assert attempt["draws"] == expected, (attempt["draws"], expected)
    return expected


def healthy_path(data, *, max_divergence_rate: float = 0.005) -> list:
    """A model with nothing to fix may still, on some CPU, be continued once (R-hat just over the goal) or get one
    target_accept raise (a few divergences under the limit), or both; nothing else. Returns the remedies."""
    attempts = record.read_attempts(data)
    steps = [a["remedy"] for a in attempts]
    assert steps[0] is None and set(steps[1:]) <= {"more_draws", "target_accept"}, steps
    assert len(steps) == len(set(steps)), f"each soft retry at most once: {steps}"
    if "target_accept" in steps:  # the raise is from the first attempt's rate, right after it or its continuation
        raised = next(a for a in attempts if a["remedy"] == "target_accept")
        before = attempts[raised["attempt"] - 2]
        limit = max_divergence_rate * before["draws"] * before["settings"]["chains"]
        assert before["failure"] == "divergences" and 0 < before["divergences"] <= limit, before
    for attempt in attempts:
        if attempt["remedy"] == "more_draws":
            origin = attempts[attempt["settings"]["continued"]["from_attempt"] - 1]
            assert origin["failure"] == "convergence" and origin["rhat"] is not None, origin
    assert record.read_run(data)["status"] == "ok", record.read_run(data)
    return steps
