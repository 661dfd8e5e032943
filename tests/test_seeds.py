"""Reproducible seeds (#22.5): the same random_seed gives the same draws on NumPyro and PyMC's NUTS in one process
and in a fresh one, and on nutpie in one process. Bitwise: each seeds every chain from the run's seed (NumPyro's
threefry keys, PyMC's per-chain seeds, nutpie's per-chain generators), so neither scheduling nor CPU load changes a
chain's draws on one machine. nutpie in a fresh process is not promised: on 2026-12-06 a fresh process gave other
draws than the parent (the slow set at load about 4; cause not found), while 40 of 40 in-process repeats agreed;
its test is a non-strict xfail that says so. Another CPU may give other draws (compiled code takes other paths): no
test compares machines."""

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import resilient

ROOT = Path(__file__).resolve().parents[1]
Y = np.array([28.0, 8, -3, 7, -1, 1, 18, 12])
S = np.array([15.0, 10, 16, 11, 9, 11, 10, 18])
ENGINES = [pytest.param("numpyro", marks=pytest.mark.numpyro), pytest.param("pymc", marks=pytest.mark.pymc),
           pytest.param("nutpie", marks=pytest.mark.pymc)]
#: in the default suite NumPyro only (the suite's time budget); CI runs all three
IN_PROCESS = [ENGINES[0], *(pytest.param(*p.values, marks=[*p.marks, pytest.mark.slow]) for p in ENGINES[1:])]


def schools(y, s):
    """Non-centred eight schools in the shared API: it passes the loop's checks at once, on any engine."""
    from resilient.distributions import HalfCauchy, Normal
    from resilient.model import deterministic, sample

    mu = sample("mu", Normal(0, 5))
    tau = sample("tau", HalfCauchy(5))
    raw = sample("theta_raw", Normal(0, 1, shape=8))
    deterministic("theta", mu + tau * raw)
    sample("y", Normal(mu + tau * raw, s), observed=y)


def _draws(engine: str, seed: int) -> dict[str, list]:
    backend = "numpyro" if engine == "numpyro" else "pymc"  # nutpie samples the PyMC translation
    with warnings.catch_warnings():  # a seed whose short run fails a check warns; the draws are what is compared
        warnings.simplefilter("ignore", resilient.ResilientWarning)
        data = resilient.sample(schools, Y, S, backend=backend, engine=engine, draws=150, tune=150, chains=2,
                                random_seed=seed, progressbar=False, max_attempts=1)
    return {name: data.posterior[name].values.tolist() for name in ("mu", "tau", "theta_raw")}


def _differing(first: dict[str, list], second: dict[str, list]) -> list[str]:
    """The variables whose draws differ (a plain list: pytest's diff of two long nested lists takes minutes)."""
    return sorted(name for name in first if not np.array_equal(np.asarray(first[name]), np.asarray(second[name])))


@pytest.mark.parametrize("engine", IN_PROCESS)
def test_the_same_seed_gives_the_same_draws_in_one_process_and_another_seed_other_draws(engine):
    first, again, other = _draws(engine, 11), _draws(engine, 11), _draws(engine, 12)
    assert _differing(first, again) == [], "bitwise equal"
    assert _differing(first, other) == ["mu", "tau", "theta_raw"]


CHILD = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r})
    from tests.test_seeds import _draws
    print(json.dumps(_draws({engine!r}, 11)))
""")


FRESH = [*ENGINES[:2], pytest.param("nutpie", marks=[pytest.mark.pymc, pytest.mark.xfail(
    strict=False, reason="nutpie in a fresh process gave other draws once (2026-12-06, cause not found): not promised")])]


@pytest.mark.slow
@pytest.mark.parametrize("engine", FRESH)
def test_the_same_seed_gives_the_same_draws_in_a_fresh_process(engine):
    here = _draws(engine, 11)
    done = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), engine=engine)], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _differing(json.loads(done.stdout.strip().splitlines()[-1]), here) == [], "bitwise equal"
