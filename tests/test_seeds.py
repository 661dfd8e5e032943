"""Reproducible seeds (#22.5): the same random_seed gives the same draws on NumPyro, PyMC's NUTS and nutpie, in one
process and in a fresh one. Bitwise: each seeds every chain from the run's seed (NumPyro's threefry keys, PyMC's
per-chain seeds, nutpie's per-chain generators), and each chain starts at its own initial point whichever chain
asks first (nutpie's chains ask from a thread pool: a start given in call order moved between chains under load,
which is why the same seed once gave other draws in CI), so neither scheduling nor CPU load changes a chain's draws
on one machine. Another CPU may give other draws (compiled code takes other paths): no test compares machines."""

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


def _draws(engine: str, seed: int, **options) -> dict[str, list]:
    backend = "numpyro" if engine == "numpyro" else "pymc"  # nutpie samples the PyMC translation
    with warnings.catch_warnings():  # a seed whose short run fails a check warns; the draws are what is compared
        warnings.simplefilter("ignore", resilient.ResilientWarning)
        data = resilient.sample(schools, Y, S, backend=backend, engine=engine, draws=150, tune=150, chains=2,
                                random_seed=seed, progressbar=False, max_attempts=1, **options)
    return {name: data.posterior[name].values.tolist() for name in ("mu", "tau", "theta_raw")}


def _differing(first: dict[str, list], second: dict[str, list]) -> list[str]:
    """The variables whose draws differ (a plain list: pytest's diff of two long nested lists takes minutes)."""
    return sorted(name for name in first if not np.array_equal(np.asarray(first[name]), np.asarray(second[name])))


@pytest.mark.parametrize("engine", IN_PROCESS)
def test_the_same_seed_gives_the_same_draws_in_one_process_and_another_seed_other_draws(engine):
    first, again, other = _draws(engine, 11), _draws(engine, 11), _draws(engine, 12)
    assert _differing(first, again) == [], "bitwise equal"
    assert _differing(first, other) == ["mu", "tau", "theta_raw"]


@pytest.mark.slow
@pytest.mark.pymc
def test_nutpie_gives_each_chain_its_own_start_whichever_chain_asks_first(monkeypatch):
    """nutpie starts its chains on a thread pool, so under load chain 1 can ask for its start before chain 0 (the
    cause of CI's "same seed, other draws" on 2026-12-07). Here the first chain to ask is held back, so the other
    asks first: the draws must still be those of an undisturbed run."""
    import threading
    import time

    from resilient.adapters.nutpie import runner

    undisturbed = _draws("nutpie", 11, cores=2)
    held, asked = threading.Lock(), []
    real = runner._Starts.__call__

    def slow_first(self, seed=None):
        with held:
            first = not asked
            asked.append(seed)
        if first:
            time.sleep(0.5)
        return real(self, seed)

    monkeypatch.setattr(runner._Starts, "__call__", slow_first)
    disturbed = _draws("nutpie", 11, cores=2)
    assert len(asked) == 2
    assert _differing(undisturbed, disturbed) == [], "bitwise equal"


CHILD = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r})
    from tests.test_seeds import _draws
    print(json.dumps(_draws({engine!r}, 11)))
""")


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_the_same_seed_gives_the_same_draws_in_a_fresh_process(engine):
    here = _draws(engine, 11)
    done = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), engine=engine)], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _differing(json.loads(done.stdout.strip().splitlines()[-1]), here) == [], "bitwise equal"
