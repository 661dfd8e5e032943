"""Warm start (#23.3): a compiled model sampled again starts from its last accepted adaptation, with a short,
checked window instead of the full warm-up, and falls back to the full warm-up when the check fails.

The default suite checks the window's check and the gate on stored numbers (no backend), and one NumPyro model
end to end (warm, ``warm_start=False``, a state of another model, a broken state). The slow set runs eight
schools (non-centred) on NumPyro, PyMC's NUTS and nutpie: a warm call's posterior agrees with a cold call's
within Monte Carlo error, and the fallback works on each engine.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import resilient
from resilient import record
from resilient.backend import Chunk, NUTSRun, NUTSSettings
from resilient.distributions import HalfNormal, Normal
from resilient.model import sample as site
from resilient.sampler_state import SamplerState, model_fingerprint
from resilient.warm_start import (ACCEPTANCE_TOLERANCE, REESTIMATE_WINDOW, STEP_SIZE_FACTOR, WINDOW, WarmStart,
                                  check_window, run_warm)

# -- the check, on stored numbers ---------------------------------------------------------------------------------


def _window(accept: float = 0.8, divergent: int = 0, size: int = WINDOW) -> dict[str, np.ndarray]:
    diverging = np.zeros(size, bool)
    diverging[size - divergent:] = True
    return {"acceptance_rate": np.full(size, accept), "diverging": diverging}


def test_a_window_that_kept_the_step_size_and_the_target_passes():
    passed, why, acceptance, divergent = check_window(_window(0.81), 0.5, 0.45, 0.8)
    assert passed and why == "" and acceptance == pytest.approx(0.81) and divergent == 0


@pytest.mark.parametrize("final", [0.45 * STEP_SIZE_FACTOR * 1.01, 0.45 / STEP_SIZE_FACTOR / 1.01, 0.45e3, 0.45e-3,
                                   float("nan")])
def test_a_step_size_that_moved_past_the_factor_fails_and_says_both(final):
    passed, why, _, _ = check_window(_window(), final, 0.45, 0.8)
    assert not passed and "the step size moved from 0.45" in why


def test_after_the_mass_matrix_was_estimated_again_only_a_shrunk_step_size_fails():
    """A state of other data: the window estimated the mass matrix again, so a step size that grew means an easier
    posterior in the new scaling; one that shrank past the factor still fails."""
    grown = check_window(_window(), 0.45 * STEP_SIZE_FACTOR * 3, 0.45, 0.8, reestimated=True)
    shrunk = check_window(_window(), 0.45 / STEP_SIZE_FACTOR / 1.01, 0.45, 0.8, reestimated=True)
    assert grown[0] and not shrunk[0] and "the step size moved from 0.45" in shrunk[1]
    assert not check_window(_window(), 0.45 * STEP_SIZE_FACTOR * 3, 0.45, 0.8)[0], "kept: both ways fail"


def test_an_acceptance_off_target_or_many_divergences_fail():
    low = check_window(_window(0.8 - ACCEPTANCE_TOLERANCE - 0.01), 0.45, 0.45, 0.8)
    assert not low[0] and "acceptance rate was 0.64 against a target of 0.8" in low[1]
    divergent = check_window(_window(divergent=30), 0.45, 0.45, 0.8)
    assert not divergent[0] and "30 of its last 75 iterations diverged" in divergent[1]
    early = check_window(_window(divergent=0) | {"diverging": np.arange(WINDOW) < 40}, 0.45, 0.45, 0.8)
    assert early[0]  # the first half (dual averaging's first, large proposals) is not counted


# -- the gate, with a stand-in engine -----------------------------------------------------------------------------


class _Engine:
    """A stand-in compiled model: one latent of size 2; ``run`` delivers warm-up then draws in chunks of 50 per
    chain, with the step size it is told (a warm run's window settles on ``warm_step``)."""

    backend = "numpyro"
    dimension = 2
    latent_names = ("x",)
    sites: dict = {}
    name = "stand-in"

    def __init__(self, warm_step: float) -> None:
        self.warm_step = warm_step
        self.runs: list[tuple[int, bool]] = []

    def blocks(self) -> dict[str, slice]:
        return {"x": slice(0, 2)}

    def observed_data(self) -> dict[str, np.ndarray]:
        return {}

    def run(self, settings: NUTSSettings, on_chunk, warm=None, window: int = 0, reestimate: bool = False) -> NUTSRun:
        tune = window if warm is not None else settings.tune
        step = self.warm_step if warm is not None else 0.5
        self.runs.append((tune, warm is not None))
        for warmup, total in ((True, tune), (False, settings.draws)):
            for start in range(0, total, 50):
                for chain in range(settings.chains):
                    n = min(50, total - start)
                    stats = {"acceptance_rate": np.full((1, n), 0.8), "diverging": np.zeros((1, n), bool),
                             "step_size": np.full((1, n), step)}
                    chunk = Chunk((chain,), start, warmup, {"x": np.zeros((1, n, 2))}, stats)
                    if on_chunk(chunk) is False:
                        return NUTSRun(False, "stopped")
        return NUTSRun(True)


def _state(engine: _Engine, step: float = 0.5) -> SamplerState:
    return SamplerState(engine="numpyro", chains=(0, 1), positions=np.zeros((2, 2)), step_size=np.full(2, step),
                        draws_done=np.full(2, 100), tune_done=np.full(2, 300), inverse_mass_matrix=np.ones((2, 2)),
                        settings={"target_accept": 0.8}, fingerprint=model_fingerprint(engine))


def _run(engine: _Engine, state: SamplerState, **changes):
    seen: list[Chunk] = []
    warm = WarmStart(state, "a test")
    settings = NUTSSettings(draws=100, tune=400, chains=2, random_seed=3, warm_state=warm, **changes)
    outcome = run_warm(engine, "numpyro", settings, lambda chunk: seen.append(chunk) or True, engine.run)
    warmup = {c: sum(k.size for k in seen if k.warmup and c in k.chains) for c in range(2)}
    draws = {c: sum(k.size for k in seen if not k.warmup and c in k.chains) for c in range(2)}
    return outcome, warm.log, warmup, draws


def test_a_passing_window_hands_on_the_short_warm_up_and_the_draws():
    engine = _Engine(warm_step=0.55)
    outcome, log, warmup, draws = _run(engine, _state(engine))
    assert engine.runs == [(WINDOW, True)]
    assert warmup == {0: WINDOW, 1: WINDOW} and draws == {0: 100, 1: 100} and outcome.completed
    assert log[0]["used"] and log[0]["passed"] and log[0]["random_seed"] == 3 and log[0]["window"] == WINDOW
    assert outcome.extra["warm_start"]["passed"]


def test_a_failing_window_hands_on_nothing_of_it_and_warms_up_in_full():
    engine = _Engine(warm_step=0.5e3)  # the window settles 1000x away from the saved step size
    outcome, log, warmup, draws = _run(engine, _state(engine))
    assert engine.runs == [(WINDOW, True), (400, False)]
    assert warmup == {0: 400, 1: 400} and draws == {0: 100, 1: 100}  # the cold run's only
    assert log[0]["used"] and log[0]["passed"] is False and "the step size moved" in log[0]["found"]
    assert log[0]["fallback"].startswith("a full warm-up of 400 iterations")


@pytest.mark.parametrize("changes, why", [
    ({"tune": WINDOW}, "no longer than the warm-start window"),
    ({"mass_matrix": "full"}, "the saved mass matrix is 'diag'"),
    ({"chains": 3}, "the saved state has 2 chains and this run 3"),
])
def test_a_state_that_does_not_fit_the_run_is_not_used_and_says_why(changes, why):
    engine = _Engine(warm_step=0.55)
    warm = WarmStart(_state(engine), "a test")
    settings = NUTSSettings(**{"draws": 100, "tune": 400, "chains": 2, "random_seed": 3, "warm_state": warm,
                               **changes})
    run_warm(engine, "numpyro", settings, lambda chunk: True, engine.run)
    assert engine.runs == [(settings.tune, False)] and not warm.log[0]["used"] and why in warm.log[0]["why"]


def test_another_target_accept_is_no_reason_the_window_adapts_to_it():
    engine = _Engine(warm_step=0.4)  # a higher target: a smaller step, within the check's factor
    outcome, log, warmup, _ = _run(engine, _state(engine), target_accept=0.9)
    assert engine.runs == [(WINDOW, True)] and log[0]["used"] and log[0]["target_accept"] == 0.9
    assert warmup == {0: WINDOW, 1: WINDOW}


def test_another_models_state_and_a_second_attempt_warm_up_in_full():
    engine = _Engine(warm_step=0.55)
    other = _state(engine)
    other = SamplerState(**{**other.__dict__, "fingerprint": {**other.fingerprint, "latents": {"x": 2, "y": 1}}})
    _, log, warmup, _ = _run(engine, other)
    assert warmup == {0: 400, 1: 400} and "another model" in log[0]["why"] and "`y` are missing" in log[0]["why"]
    engine = _Engine(warm_step=0.55)
    warm = WarmStart(_state(engine), "a test")
    for seed in (1, 1001):  # the loop's first attempt, then a remedy's
        run_warm(engine, "numpyro", NUTSSettings(draws=100, tune=400, chains=2, random_seed=seed, warm_state=warm),
                 lambda chunk: True, engine.run)
    assert engine.runs == [(WINDOW, True), (400, False)]
    assert warm.log[1]["random_seed"] == 1001 and "only a call's first attempt" in warm.log[1]["why"]


def test_the_loops_smaller_step_retry_starts_warm_too():
    engine = _Engine(warm_step=0.45)
    warm = WarmStart(_state(engine), "a test")
    for seed, target in ((1, 0.8), (1001, 0.9), (2001, 0.9)):  # attempt 1; target_accept raised; another remedy
        run_warm(engine, "numpyro", NUTSSettings(draws=100, tune=400, chains=2, random_seed=seed,
                                                 target_accept=target, warm_state=warm), lambda chunk: True, engine.run)
    assert engine.runs == [(WINDOW, True), (WINDOW, True), (400, False)]
    assert warm.log[1]["used"] and warm.log[1]["target_accept"] == 0.9 and not warm.log[2]["used"]


def test_a_sampler_state_survives_the_result_group():
    engine = _Engine(0.5)
    state = _state(engine)
    back = SamplerState.from_dataset(state.to_dataset())
    assert back.engine == "numpyro" and back.chains == (0, 1) and back.fingerprint == state.fingerprint
    np.testing.assert_array_equal(back.inverse_mass_matrix, state.inverse_mass_matrix)
    np.testing.assert_array_equal(back.step_size, state.step_size)


def test_warm_start_takes_auto_false_or_a_result_only():
    sampler = resilient.CompiledSampler(resilient.model.Model(lambda: site("x", Normal(0, 1))), "numpyro")
    with pytest.raises(resilient.ResilientError, match=r"`warm_start` must be 'auto', False or a result of "
                                                        r"resilient.sample .*got 'yes'"):
        sampler.sample(warm_start="yes")
    import xarray as xr

    with pytest.raises(resilient.ResilientError, match="got DataTree without one"):
        sampler.sample(warm_start=xr.DataTree())


# -- one NumPyro model end to end (default suite) -----------------------------------------------------------------

X = np.linspace(-1.0, 1.0, 20)
Y = 0.5 + 1.5 * X + np.random.default_rng(0).normal(0.0, 0.3, X.size)
RUN = dict(draws=500, tune=400, chains=2, progressbar=False)  # ESS far past the loop's limit: one attempt


def regression(x, y):
    alpha = site("alpha", Normal(0, 5))
    beta = site("beta", Normal(0, 5))
    sigma = site("sigma", HalfNormal(1))
    site("y", Normal(alpha + beta * x, sigma), obs=y)


def regression_with_slope_prior(x, y):  # another model: one latent more
    alpha = site("alpha", Normal(0, 5))
    scale = site("scale", HalfNormal(5))
    beta = site("beta", Normal(0, scale))
    sigma = site("sigma", HalfNormal(1))
    site("y", Normal(alpha + beta * x, sigma), obs=y)


def _warm(data) -> dict:
    return record.read_attempts(data)[0]["settings"].get("warm_start") or {}


def _warmup_length(data) -> int:
    return int(data["warmup_sample_stats"].sizes["draw"])


@pytest.fixture(scope="module")
def regression_runs():
    """One compiled regression sampled cold (seed 1) then warm (seed 2); and another model's result."""
    sampler = resilient.compile(regression, x=X, y=Y, backend="numpyro")
    cold = sampler.sample(random_seed=1, **RUN)
    warm = sampler.sample(random_seed=2, **RUN)
    other = resilient.compile(regression_with_slope_prior, x=X, y=Y, backend="numpyro").sample(random_seed=1, **RUN)
    return sampler, cold, warm, other


@pytest.mark.numpyro
def test_the_second_call_warms_up_for_the_window_only(regression_runs):
    _, cold, warm, _ = regression_runs
    assert _warm(cold) == {} and _warmup_length(cold) == RUN["tune"]
    entry = _warm(warm)
    assert entry["used"] and entry["window"] == WINDOW and entry["source"] == "the last accepted call of this compiled model"
    # the same model and data: the saved adaptation fits (the check's margins are several times the spread of
    # a window's step size and acceptance between runs, see resilient/warm_start.py)
    assert entry["passed"] and _warmup_length(warm) == WINDOW
    assert "warm start" in record.read_attempts(warm)[0]["message"] and "warm_start" in record.read_run(warm)
    assert warm.sampler_state["tune_done"].values.tolist() == [_warmup_length(warm)] * RUN["chains"]


@pytest.mark.numpyro
def test_a_warm_attempt_run_longer_keeps_its_window_as_its_warm_up(regression_runs):
    """A warm attempt continued by more_draws (a goal no chain can meet forces it) counts the window it warmed up
    for, not the schedule the continuation runs under (CI, 2026-12-06: it said 400 of a 150-iteration window)."""
    sampler, _, _, _ = regression_runs
    data = sampler.sample(random_seed=5, policy=resilient.Policy(rhat_goal=1.0000001, retry_divergences=False), **RUN)
    attempts = record.read_attempts(data)
    assert _warm(data)["passed"] and [a["remedy"] for a in attempts][:2] == [None, "more_draws"]
    assert data.sampler_state["tune_done"].values.tolist() == [WINDOW] * RUN["chains"]
    assert data.sampler_state["draws_done"].values.tolist() == [data.posterior.sizes["draw"]] * RUN["chains"]


@pytest.mark.numpyro
def test_warm_start_false_and_another_models_state_warm_up_in_full(regression_runs):
    sampler, _, _, other = regression_runs
    never = sampler.sample(random_seed=3, warm_start=False, **RUN)
    assert _warm(never) == {} and _warmup_length(never) == RUN["tune"]
    refused = sampler.sample(random_seed=3, warm_start=other, **RUN)
    entry = _warm(refused)
    assert entry["used"] is False and "another model" in entry["why"] and "`scale` are missing" in entry["why"]
    assert _warmup_length(refused) == RUN["tune"]


@pytest.mark.numpyro
def test_a_broken_state_fails_the_check_and_the_full_warm_up_runs(regression_runs):
    sampler, cold, _, _ = regression_runs
    broken = cold.copy()
    state = broken["sampler_state"].to_dataset()
    state["step_size"] = state["step_size"] * 1000.0
    broken["sampler_state"] = state
    data = sampler.sample(random_seed=4, warm_start=broken, **RUN)
    entry = _warm(data)
    assert entry["used"] and entry["passed"] is False and "the step size moved" in entry["found"]
    assert _warmup_length(data) == RUN["tune"]
    assert "fell back to a full warm-up of 400 iterations" in record.read_attempts(data)[0]["message"]


# -- every engine, eight schools (slow) ---------------------------------------------------------------------------


def _mcse_agree(first, second, names) -> list[str]:
    """Variables whose posterior means differ by more than 4 combined Monte Carlo standard errors."""
    from arviz_stats.base import array_stats

    far = []
    for name in names:
        a, b = (np.asarray(d.posterior[name].values, float) for d in (first, second))
        for index in np.ndindex(a.shape[2:]):
            x, y = a[(slice(None), slice(None), *index)], b[(slice(None), slice(None), *index)]
            error = np.hypot(*(float(array_stats.mcse(v, chain_axis=0, draw_axis=1, method="mean")) for v in (x, y)))
            if abs(x.mean() - y.mean()) > 4 * error:
                far.append(f"{name}{list(index)}: {x.mean():.3f} vs {y.mean():.3f} (4 mcse {4 * error:.3f})")
    return far


@pytest.mark.slow
@pytest.mark.parametrize("engine", [pytest.param("numpyro", marks=pytest.mark.numpyro),
                                    pytest.param("pymc", marks=pytest.mark.pymc),
                                    pytest.param("nutpie", marks=pytest.mark.pymc)])
def test_every_engine_warm_starts_eight_schools_and_agrees_with_a_cold_run(engine):
    from examples import reference_models

    function, data, _ = reference_models.load("eight_schools-eight_schools_noncentered")
    backend = "numpyro" if engine == "numpyro" else "pymc"
    sampler = resilient.compile(function, backend=backend, engine=engine, **data)
    # the loop's own remedies kept out of the way (a retry after a few divergences, a longer run for R-hat between
    # 1.01 and 1.05), so the attempt compared is the one the warm start made
    policy = resilient.Policy(retry_divergences=False, max_divergence_rate=0.02, rhat_goal=1.05)
    run = dict(draws=1000, tune=1000, chains=4, progressbar=False, policy=policy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", resilient.ResilientWarning)  # a run's diagnostics are not what is tested
        cold = sampler.sample(random_seed=11, **run)
        warm = sampler.sample(random_seed=12, **run)
        entry = _warm(warm)
        assert entry["used"] and entry["window"] == WINDOW and entry["passed"], entry
        assert _warmup_length(warm) == WINDOW
        assert _mcse_agree(cold, warm, ["mu", "tau", "theta"]) == []
        never = sampler.sample(random_seed=13, warm_start=False, **run)
        assert _warm(never) == {} and _warmup_length(never) == run["tune"]
        for factor in (1e3, 1e-3):  # a saved step size 1000 times too large, then too small
            broken = cold.copy()
            state = broken["sampler_state"].to_dataset()
            state["step_size"] = state["step_size"] * factor
            broken["sampler_state"] = state
            fallen = sampler.sample(random_seed=14, warm_start=broken, **run)
            entry = _warm(fallen)
            assert entry["used"] and entry["passed"] is False and "fallback" in entry, (factor, entry)
            assert _warmup_length(fallen) == run["tune"]
            assert "fell back to a full warm-up" in record.read_attempts(fallen)[0]["message"]


# -- a state of other data (sample_many's and sbc's next data set) -------------------------------------------------

def location(y):
    mu = site("mu", Normal(0, 10))
    site("y", Normal(mu, 1.0), obs=y)


@pytest.mark.numpyro
def test_a_state_of_other_data_estimates_the_mass_matrix_again_and_of_the_same_data_keeps_it():
    """The saved mass matrix fits the data it was adapted on: a result of other data (here 1,000 observations
    after 10, a posterior variance 100 times smaller) gets the longer window that estimates it again, and the
    new run's mass matrix is this posterior's variance (1/N, known exactly); a result of the same data keeps it."""
    rng = np.random.default_rng(3)
    few, many = rng.normal(2.0, 1.0, 10), rng.normal(-1.0, 1.0, 1000)
    run = dict(draws=300, tune=400, chains=2, progressbar=False)
    first = resilient.compile(location, y=few, backend="numpyro").sample(random_seed=1, **run)
    sampler = resilient.compile(location, y=many, backend="numpyro")
    other = sampler.sample(random_seed=2, warm_start=first, **run)
    entry = _warm(other)
    assert entry["used"] and entry["passed"] and entry["window"] == REESTIMATE_WINDOW, entry
    assert entry["mass_matrix"].startswith("estimated again") and _warmup_length(other) == REESTIMATE_WINDOW
    saved = float(np.median(first.sampler_state["inverse_mass_matrix"].values))
    found = other.sampler_state["inverse_mass_matrix"].values.ravel()
    assert saved > 0.03 and np.all((found > 1e-3 / 3) & (found < 1e-3 * 3)), (saved, found)
    same = sampler.sample(random_seed=3, warm_start=other, **run)
    assert _warm(same)["window"] == WINDOW and _warm(same)["mass_matrix"] == "the saved one"


@pytest.mark.slow
@pytest.mark.pymc
def test_pymc_nuts_does_not_take_a_state_of_other_data_and_says_why():
    """PyMC's NUTS would keep the saved mass matrix fixed: a state of other data is not used, the attempt warms
    up in full, and the attempt log says why."""
    rng = np.random.default_rng(3)
    run = dict(draws=200, tune=400, chains=2, progressbar=False)
    first = resilient.compile(location, y=rng.normal(2.0, 1.0, 10), backend="pymc", engine="pymc").sample(
        random_seed=1, **run)
    other = resilient.compile(location, y=rng.normal(-1.0, 1.0, 1000), backend="pymc", engine="pymc").sample(
        random_seed=2, warm_start=first, **run)
    entry = _warm(other)
    assert entry["used"] is False and "PyMC's NUTS would keep its mass matrix fixed" in entry["why"], entry
    assert _warmup_length(other) == run["tune"]
