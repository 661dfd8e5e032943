"""``float32="auto"`` (issue #16, item 4: "float32 where it is safe and faster is a choice the loop can make, with
float64 as a remedy"): on NumPyro, float32 for large data when a float32 check is clean, float64 otherwise and
on PyMC; the choice and its reason in the run record and the first attempt; a float32 choice that diverges is
remedied by float64, and the attempt log never claims a switch that did not happen."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

import resilient
from resilient import precision, record
from resilient.errors import ResilientError, SamplingFailed
from resilient.policy import Policy
from resilient.resolve import resolve_model

pytestmark = pytest.mark.numpyro

SEED = 20261128


def logistic(design, outcome):
    """proportion_test's shape (benchmarks/precision.py): a Bernoulli outcome on an intercept and two treatments."""
    beta = numpyro.sample("beta", dist.Normal(jnp.zeros(design.shape[-1]), 1.0).to_event(1))
    with numpyro.plate("data", design.shape[0]):
        numpyro.sample("obs", dist.Bernoulli(logits=design @ beta), obs=outcome)


def logistic_data(rows: int):
    rng = np.random.default_rng(0)
    design = np.stack([np.ones(rows), rng.integers(0, 2, rows), rng.integers(0, 2, rows)], axis=1).astype(float)
    outcome = (rng.uniform(size=rows) < 1 / (1 + np.exp(1 - 0.3 * design[:, 1]))).astype(float)
    return design, outcome


LARGE = logistic_data(30_000)  # 120,000 numbers: over the threshold
SMALL = logistic_data(200)


def gaussian():
    """A 10-d standard normal: sampled at target_accept=0.3 (:data:`DIVERGING`), NUTS's step size is too large for
    it and it diverges (14-54% of draws, measured) in either precision."""
    numpyro.sample("x", dist.Normal(jnp.zeros(10), 1.0).to_event(1))


DIVERGING = dict(draws=150, tune=150, chains=2, target_accept=0.3, policy=Policy(remedies=("float64",), max_attempts=3))


def _attempts(sample) -> list[dict]:
    """The attempt log of ``sample()``, whether its last attempt was returned or failed too: how the float64 attempt
    at target_accept 0.3 ends (divergent, or a chain that never moves) differs between CPUs, and is not asserted."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return list(record.read_attempts(sample()))
        except SamplingFailed as failure:
            return [a.to_dict() for a in failure.attempts]


def overflowing(y):
    """Finite in float64, not in float32: the scale 1e30 squares past float32's largest number."""
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    numpyro.sample("obs", dist.Normal(x * 1e30, 1.0), obs=y)


def regression_shared(design, outcome):
    """A shared-API model (one the PyMC engines can run); auto decides on PyMC without running it."""
    from resilient.distributions import Normal
    from resilient.model import sample

    beta = sample("beta", Normal(0.0, 1.0, shape=design.shape[-1]))
    sample("obs", Normal(design @ beta, 1.0), obs=outcome)


def _run(model, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return resilient.sample(model, *args, random_seed=SEED, progressbar=False, log_likelihood=False, **kwargs)


def test_auto_takes_float32_for_large_data_and_records_why():
    data = _run(logistic, *LARGE, float32="auto", draws=100, tune=100, chains=2)
    assert data.posterior["beta"].dtype == np.float32
    reason = record.read_run(data)["precision_reason"]
    assert reason.startswith("auto: float32: the data hold 120,000 numbers") and "agree with float64's" in reason
    attempts = record.read_attempts(data)
    assert attempts[0]["settings"]["float32"] is True and attempts[0]["settings"]["precision_reason"] == reason


def test_auto_takes_float64_for_small_data_and_records_why():
    data = _run(logistic, *SMALL, float32="auto", draws=100, tune=100, chains=2)
    assert data.posterior["beta"].dtype == np.float64
    reason = record.read_run(data)["precision_reason"]
    assert reason.startswith("auto: float64: the data hold 800 numbers, under the 100,000")
    assert record.read_attempts(data)[0]["settings"]["float32"] is False


def test_auto_is_float64_where_float32_is_not_safe_or_not_applied(monkeypatch):
    monkeypatch.setattr(precision, "AUTO_FLOAT32_MIN_ELEMENTS", 1)
    model = resolve_model(overflowing, (np.array([0.5, -0.2]),), {})
    choice = precision.choose_precision(model, "numpyro", {}, 0)
    assert not choice.float32 and choice.model is model
    assert "the float32 log density or gradient is not finite at an initial point where float64's are" in choice.reason
    choice = precision.choose_precision(model, "nutpie", {}, 0)
    assert not choice.float32 and "the nutpie engine samples in float64" in choice.reason
    pymc_model = resolve_model(regression_shared, LARGE, {})
    for engine in ("pymc", "nutpie"):
        choice = precision.choose_precision(pymc_model, engine, {}, 0)
        assert not choice.float32 and "PyMC models here run in float64" in choice.reason
    with pytest.raises(ResilientError, match=r"`float32` must be True, False or 'auto'"):
        resilient.sample(logistic, *SMALL, float32="yes")
    with pytest.raises(ResilientError, match=r"preflight's `float32` must be True, False or None, got 'auto'"):
        resilient.preflight(logistic, *SMALL, float32="auto")


def test_the_tolerance_is_float32_rounding():
    eps = float(np.finfo(np.float32).eps)
    # 1024 terms: 10 ulps of pairwise summation + 4 per term, of |log density| 100; x rounded: sum |g x| = 3
    assert precision.float32_tolerance(-100.0, np.array([1.0, -2.0]), np.array([1.0, 1.0]), 1024) == pytest.approx(
        eps * (14 * 100 + 3))


def test_a_float32_choice_that_diverges_is_remedied_by_float64_and_the_log_says_only_what_happened(monkeypatch):
    monkeypatch.setattr(precision, "AUTO_FLOAT32_MIN_ELEMENTS", 0)  # the model has no data: make auto take float32
    sampler = resilient.compile(gaussian, float32="auto")
    attempts = _attempts(lambda: sampler.sample(random_seed=SEED, progressbar=False, **DIVERGING))
    assert [a["settings"]["float32"] for a in attempts] == [True, False]
    assert attempts[0]["failure"] == "divergences" and attempts[0]["message"].endswith("next: switched to float64")
    assert attempts[1]["remedy"] == "float64" and "precision_reason" not in attempts[1]["settings"]
    # each attempt ran the precision it records: the compiled model of each variant is in that precision
    compiled = {bool(model.float32): c for (engine, model), c in sampler.cache.items()}
    assert compiled[True].float32 is True and compiled[False].float32 is False
    # chosen float64 (the default threshold: no data), the same failure gets no float64 "remedy"
    monkeypatch.setattr(precision, "AUTO_FLOAT32_MIN_ELEMENTS", 100_000)
    attempts = _attempts(lambda: resilient.sample(gaussian, float32="auto", random_seed=SEED, progressbar=False,
                                                  **DIVERGING))
    assert attempts[0]["settings"]["precision_reason"].startswith("auto: float64")
    assert len(attempts) == 1 and attempts[0]["settings"]["float32"] is False and attempts[0]["remedy"] is None
    assert attempts[0]["outcome"] == "gave-up" and "no remedy left" in attempts[0]["message"]


# -- issue #26, item 2: the default is the backend's habit -----------------------------------------------------

@pytest.fixture
def x64_on():
    """jax's x64 turned on as a user turns it on (``numpyro.enable_x64()``), and put back as it was."""
    import jax

    before = jax.config.read("jax_enable_x64")
    numpyro.enable_x64()
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)


def test_a_native_numpyro_model_runs_by_default_in_raw_numpyros_float32_and_says_why():
    import jax

    assert not jax.config.read("jax_enable_x64")  # jax's default, as a raw NumPyro user has it
    data = _run(logistic, *SMALL, draws=100, tune=100, chains=2)
    assert data.posterior["beta"].dtype == np.float32
    reason = record.read_run(data)["precision_reason"]
    assert reason.startswith("raw: float32: raw NumPyro's precision: jax's x64 is off")
    assert "agree with float64's at 4 initial points" in reason and "float64 is the remedy" in reason
    attempts = record.read_attempts(data)
    assert attempts[0]["settings"]["float32"] is True and attempts[0]["settings"]["precision_reason"] == reason
    assert not jax.config.read("jax_enable_x64")
    # asked for, float64 is what runs
    data = _run(logistic, *SMALL, float32=False, draws=100, tune=100, chains=2)
    assert data.posterior["beta"].dtype == np.float64 and "precision_reason" not in record.read_run(data)


def test_with_x64_on_a_native_numpyro_model_runs_in_float64_as_raw_numpyro_does(x64_on):
    data = _run(logistic, *SMALL, draws=100, tune=100, chains=2)
    assert data.posterior["beta"].dtype == np.float64
    reason = record.read_run(data)["precision_reason"]
    assert reason.startswith("raw: float64: jax's x64 is on")
    assert record.read_attempts(data)[0]["settings"]["float32"] is False


def test_shared_api_models_keep_float64_by_default():
    data = _run(regression_shared, *SMALL, backend="numpyro", draws=100, tune=100, chains=2)
    assert data.posterior["beta"].dtype == np.float64 and "precision_reason" not in record.read_run(data)
    assert precision.default_float32(resolve_model(regression_shared, SMALL, {})) is False


def test_the_default_takes_float64_where_float32_fails_its_check_and_never_refuses_float32_alone():
    model, mode = precision.default_form(resolve_model(overflowing, (np.array([0.5, -0.2]),), {}), precision.RAW)
    assert mode == precision.RAW and model.float32 is True  # raw NumPyro's precision, before the check
    choice = precision.choose_precision(model, "numpyro", {}, 0, mode)
    assert not choice.float32 and choice.model.float32 is False
    assert choice.reason.startswith("raw: float64: the float32 log density or gradient is not finite")
    # float64 that does not compile (NumPyro's hmm_enum under x64) leaves float32, raw NumPyro's precision
    from examples.hmm_enum import model_1, simulate

    hmm = simulate(num_sequences=2, max_length=4, data_dim=2, hidden_dim=2)
    model, mode = precision.default_form(resolve_model(model_1, (hmm["sequences"], hmm["lengths"], hmm["args"]), {}),
                                         precision.RAW)
    choice = precision.choose_precision(model, "numpyro", {}, 0, mode)
    assert choice.float32 and choice.model is model
    assert "does not run in float64" in choice.reason and "carry input and carry output" in choice.reason
    # on nutpie a NumPyro function runs in float64 whatever the default
    choice = precision.choose_precision(model, "nutpie", {}, 0, mode)
    assert not choice.float32 and choice.model.float32 is False and "nutpie" in choice.reason


def test_the_default_float32_is_remedied_by_a_model_really_compiled_in_float64():
    sampler = resilient.compile(gaussian)
    assert sampler.model.float32 is True and sampler.float32_auto == precision.RAW
    attempts = _attempts(lambda: sampler.sample(random_seed=SEED, progressbar=False, **DIVERGING))
    assert [a["settings"]["float32"] for a in attempts] == [True, False]
    assert attempts[0]["failure"] == "divergences" and attempts[0]["message"].endswith("next: switched to float64")
    assert attempts[1]["remedy"] == "float64"
    compiled = {bool(model.float32): c for (engine, model), c in sampler.cache.items()}
    assert compiled[True].float32 is True and compiled[False].float32 is False
    x = np.full(10, 1e-9)
    assert compiled[False].constrain(x)["x"].dtype == np.float64 and compiled[True].constrain(x)["x"].dtype == np.float32
    # the float64 program sees what float32 rounds away: x + 1e-9 for x = 1
    one = compiled[False].log_density(np.ones(10) + 1e-9) - compiled[False].log_density(np.ones(10))
    assert one == pytest.approx(-10 * 1e-9, rel=1e-3)
    assert compiled[True].log_density(np.ones(10) + 1e-9) == compiled[True].log_density(np.ones(10))


@pytest.mark.numpyro
def test_preflight_checks_a_native_numpyro_model_in_the_precision_sample_starts_in():
    """resilient.preflight (and `resilient preflight`) on NumPyro's hmm_enum: clean in float32, its raw precision,
    where float64 cannot even run it (it stopped with 'scan body function carry input and carry output must have
    equal types' when preflight always checked float64)."""
    from examples.hmm_enum import model_1, simulate

    data = simulate()
    report = resilient.preflight(model_1, data["sequences"], data["lengths"], data["args"])
    assert report.ok, report.table()
