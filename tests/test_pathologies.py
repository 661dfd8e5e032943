"""The sick models of shared/pathologies.md, on both backends: diagnosis, repair, bounded calls."""

import time
import warnings

import numpy as np
import pytest

import resilient
from examples import pathologies, reference_models
from resilient import record
from resilient.errors import PreflightError, SamplingFailed
from resilient.errors import ResilientWarning
from tests.loop_paths import returned_attempt
from tests.reference_checks import mismatches

BACKENDS = [pytest.param("numpyro", marks=pytest.mark.numpyro), pytest.param("pymc", marks=pytest.mark.pymc)]
#: The longest PyMC runs (30-40 s each on 2 cores) are slow: CI runs them, `make test` does not.
BACKENDS_SLOW_PYMC = [pytest.param("numpyro", marks=pytest.mark.numpyro),
                      pytest.param("pymc", marks=[pytest.mark.pymc, pytest.mark.slow])]
SEED = 20261126
STANDARD_NORMAL_QUANTILES = (-1.6448536, 0.0, 1.6448536)

#: the loop's message when a time budget stops the first attempt (the finished draws are returned)
BUDGET_MESSAGE = r"time budget of 20 s ran out during attempt 1 \(after \d+ of \d+ draws per chain\).* are returned"
NO_DRAWS_MESSAGE = r"time budget of 20 s ran out during attempt 1 \(after 0 of \d+ draws per chain\); no draws were finished"



def quantile_band_ok(draws, expected):
    """|q - expected| within 4.5 quantile-MCSE for q05/q50/q95 (the references are exact or 2e7 draws)."""
    from arviz_stats.base import array_stats

    problems = []
    for prob, value in zip((0.05, 0.5, 0.95), expected):
        estimate = float(np.quantile(draws, prob))
        mcse = float(array_stats.mcse(draws, chain_axis=0, draw_axis=1, method="quantile", prob=prob))
        if abs(estimate - value) > 4.5 * mcse:
            problems.append(f"q{int(prob * 100):02d}: {estimate:.4f} vs {value} (4.5 mcse = {4.5 * mcse:.4f})")
    return problems


def by_site(report, site, check=None):
    return [f for f in report.findings if f.site == site and (check is None or f.check == check)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_p1_preflight_names_v_sigma_and_the_infinite_bound(backend):
    report = resilient.preflight(pathologies.motivating, backend=backend, fix=False)
    rewrite = by_site(report, "V", "rewrite")[0]
    assert rewrite.parameter == "sigma"
    assert rewrite.cause == "infinite bound"
    assert rewrite.message.startswith("V ~ Truncated(Normal(0, sigma), lower=0, upper=inf): the upper bound is infinite")
    if backend == "numpyro":  # NumPyro really has the NaN gradient; PyMC canonicalises the bound
        gradient = by_site(report, "V", "gradient")[0]
        assert gradient.severity == "error" and gradient.parameter == "sigma"
        assert "the gradient with respect to sigma is NaN or infinite" in gradient.message
        assert "because the upper bound is infinite" in gradient.message
        assert report.exit_code == 1
    fixed = resilient.preflight(pathologies.motivating, backend=backend)
    assert fixed.ok and fixed.status == "fixed"
    assert [f.fix for f in by_site(fixed, "V", "rewrite")] == ["V ~ Truncated(Normal(0, sigma), lower=0)",
                                                                "V ~ HalfNormal(sigma)"]


@pytest.mark.parametrize("backend", BACKENDS_SLOW_PYMC)
def test_p1_samples_after_the_rewrite_with_the_right_quantiles(backend):
    data = resilient.sample(pathologies.motivating, backend=backend, draws=2000, chains=4, random_seed=SEED,
                            progressbar=False)
    # V ~ HalfNormal(sigma) under a heavy-tailed sigma is a funnel: how many divergences a seeded first attempt
    # flags differs between CPUs (PyMC flags a few even at target_accept 0.95, as its own pm.sample does). Where
    # the first attempt had any, the loop must have non-centred V in the draws it returns; always, the returned
    # draws are under the rate limit
    divergent = int(data.sample_stats["diverging"].sum())
    attempts = record.read_attempts(data)
    assert record.read_run(data)["status"] == "ok" and divergent <= 0.005 * data.sample_stats["diverging"].size
    if attempts[0]["divergences"]:
        assert "V" in returned_attempt(data)["settings"]["noncentered"], attempts
    sigma = data.posterior["sigma"].values
    v = data.posterior["V"].values
    assert quantile_band_ok(sigma, (0.632, 1.787, 8.442)) == []
    assert quantile_band_ok(v, (0.094, 1.163, 7.842)) == []


@pytest.mark.numpyro
def test_p1_native_numpyro_gets_the_same_diagnosis_and_fix():
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    def native():
        sigma = numpyro.sample("sigma", dist.InverseGamma(2.0, 3.0))
        numpyro.sample("V", dist.TruncatedNormal(0.0, sigma, low=0.0, high=jnp.inf))

    report = resilient.preflight(native, fix=False)
    assert report.exit_code == 1
    gradient = by_site(report, "V", "gradient")[0]
    assert gradient.parameter == "sigma" and "because the upper bound is infinite" in gradient.message
    data = resilient.sample(native, draws=2500, random_seed=SEED, progressbar=False)
    fixed = record.read_preflight(data)
    assert any(f["site"] == "V" and f["severity"] == "fixed" for f in fixed["findings"])
    assert quantile_band_ok(data.posterior["V"].values, (0.094, 1.163, 7.842)) == []


@pytest.mark.parametrize("backend", BACKENDS_SLOW_PYMC)
def test_p2_mirrored_infinite_lower_bound(backend):
    report = resilient.preflight(pathologies.mirrored, backend=backend, fix=False)
    rewrite = by_site(report, "V", "rewrite")[0]
    assert rewrite.parameter == "mu" and "the lower bound is infinite" in rewrite.message
    data = resilient.sample(pathologies.mirrored, backend=backend, draws=2500, random_seed=SEED, progressbar=False)
    assert quantile_band_ok(data.posterior["V"].values, (-2.433, -0.703, -0.056)) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_p3_both_bounds_infinite_becomes_a_normal(backend, compiled):
    sampler = compiled(pathologies.both_infinite, backend)
    report = sampler.preflight()
    assert by_site(report, "V", "rewrite")[0].fix == "V ~ Normal(0, 1)"
    data = resilient.sample(sampler, draws=2000, random_seed=SEED, progressbar=False)
    assert quantile_band_ok(data.posterior["V"].values, STANDARD_NORMAL_QUANTILES) == []


@pytest.mark.numpyro
def test_p4_far_tail_in_float32_is_detected_then_fixed():
    report = resilient.preflight(pathologies.far_tail, fix=False, float32=True)
    assert report.exit_code == 1
    finding = [f for f in report.errors if f.site == "V"][0]
    assert "underflows to log(0) in float32" in finding.cause
    data = resilient.sample(pathologies.far_tail, float32=True, draws=2000, random_seed=SEED, progressbar=False)
    assert quantile_band_ok(data.posterior["mu"].values, STANDARD_NORMAL_QUANTILES) == []
    v = data.posterior["V"].values
    # In float32 the spacing of numbers at 40 is 3.8e-6 while V - 40 ~ Exponential(rate 40): about one draw
    # in 7000 rounds to exactly 40.0. None may fall below the bound, and only those few may sit on it.
    assert np.all(v >= 40) and np.mean(v > 40) > 0.999


@pytest.mark.pymc
def test_p4_far_tail_on_pymc_samples():
    data = resilient.sample(pathologies.far_tail, backend="pymc", draws=2000, random_seed=SEED, progressbar=False)
    assert quantile_band_ok(data.posterior["mu"].values, STANDARD_NORMAL_QUANTILES) == []
    assert np.all(data.posterior["V"].values > 40)


@pytest.mark.parametrize("backend", BACKENDS_SLOW_PYMC)
def test_p5_the_loop_non_centres_eight_schools(backend):
    function, data, reference = reference_models.load("eight_schools-eight_schools_noncentered")
    budget = 600
    start = time.monotonic()
    result = resilient.sample(reference_models.eight_schools_centered, backend=backend, draws=1000, chains=4,
                              random_seed=SEED, progressbar=False, time_budget=budget, **data)
    assert time.monotonic() - start < budget + 30  # the budget bounds the call (30 s to assemble the result)
    attempts = record.read_attempts(result)
    # which failure the centred model's first attempt hits differs between CPUs: assert the outcome
    assert attempts[0]["failure"] in ("divergences", "convergence", "stuck", "tree-depth")
    # the returned attempt, not necessarily the last (once theta is non-centred every later attempt keeps it)
    assert record.read_run(result)["status"] == "ok" and "theta" in returned_attempt(result)["settings"]["noncentered"]
    diverging = result.sample_stats["diverging"].values
    assert diverging.mean() <= resilient.Policy().max_divergence_rate  # the rate the loop accepts (at most)
    assert mismatches(result, reference, ["mu", "tau", "theta"]) == []


@pytest.mark.parametrize("backend", [pytest.param("numpyro", marks=pytest.mark.numpyro),
                                     pytest.param("pymc", marks=[pytest.mark.pymc, pytest.mark.slow])])
def test_p6_nan_region_is_reported_and_the_call_is_bounded(backend):
    report = resilient.preflight(pathologies.sqrt_of_negative, backend=backend)
    finding = by_site(report, "y")[0]
    assert finding.parameter == "x" and finding.values["x"] < 0
    assert "x is negative here" in finding.cause
    budget = 120
    start = time.monotonic()
    # Either outcome is allowed (pathologies.md: "succeeds with a warning or stops with a clear error
    # after its retry cap"); each must carry the diagnosis and respect the caps.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            data = resilient.sample(pathologies.sqrt_of_negative, backend=backend, draws=200, tune=200,
                                    random_seed=SEED, progressbar=False, time_budget=budget, max_attempts=3)
        except SamplingFailed as failure:
            assert 1 <= len(failure.attempts) <= 3 and failure.attempts[-1].outcome == "gave-up"
            assert by_site(failure.preflight, "y")[0].parameter == "x"
            assert str(failure).startswith("Sampling failed: ")
            data = None
    if data is not None:
        said = [f for f in record.read_preflight(data)["findings"] if f["site"] == "y"]
        assert said and said[0]["parameter"] == "x" and said[0]["severity"] == "warning"
        attempts = record.read_attempts(data)
        warned = [str(w.message) for w in caught if issubclass(w.category, ResilientWarning)]
        assert len(attempts) <= 3
        assert attempts[-1]["outcome"] == "accepted" or (
            attempts[-1]["outcome"] == "gave-up" and any("do not trust them" in m for m in warned))
        assert np.all(data.posterior["x"].values >= 0), "a draw in the NaN region was accepted"
    assert time.monotonic() - start < budget + 30


@pytest.mark.parametrize("backend", [pytest.param("numpyro", marks=pytest.mark.numpyro),
                                     pytest.param("pymc", marks=[pytest.mark.pymc, pytest.mark.slow])])
def test_p7_improper_posterior_stops_within_caps(backend, tmp_path):
    budget = 60
    start = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            partial = resilient.sample(pathologies.improper, backend=backend, draws=200, tune=200, max_tree_depth=6,
                                       random_seed=SEED, progressbar=False, time_budget=budget, max_attempts=2,
                                       checkpoint=str(tmp_path / "p7"))
            said = " ".join(str(w.message) for w in caught if issubclass(w.category, ResilientWarning))
        except SamplingFailed as failure:
            partial = failure.partial
            said = str(failure) + " " + " ".join(a.message for a in failure.attempts)
    assert time.monotonic() - start < budget + 30
    assert "improper or unidentified" in said
    assert partial is not None and partial.posterior["x"].size > 0
    assert any((tmp_path / "p7").glob("attempt-*/chunk-*.nc"))


@pytest.mark.slow  # a wall-clock budget of 20 s a backend
@pytest.mark.parametrize("backend, engine, draws, chains", [
    pytest.param("numpyro", "auto", 200_000, 4, marks=pytest.mark.numpyro),
    pytest.param("pymc", "pymc", 200_000, 4, marks=pytest.mark.pymc),
    # nutpie finished 2,000,000 draws of blr inside this budget: tests/test_engine.py gives it a slower model.
])
def test_p8_a_short_budget_returns_the_finished_draws_and_keeps_them_on_disk(backend, engine, draws, chains, tmp_path):
    # The budget covers preflight, compilation and warm-up (NumPyro: about 8 s on a loaded 2-core
    # machine, 12 s once), with room left for posterior draws, but not for all the draws asked.
    budget = 20
    start = time.monotonic()
    # the draws that finished are returned; on a machine too loaded to finish any, the warning says so
    with pytest.warns(ResilientWarning, match=BUDGET_MESSAGE + "|" + NO_DRAWS_MESSAGE) as said:
        data = resilient.sample(reference_models.blr, backend=backend, engine=engine, draws=draws, tune=200,
                                chains=chains, random_seed=SEED, progressbar=False, time_budget=budget,
                                log_likelihood=False,  # 4 x ~40,000 draws x 100 rows: past the default's limit
                                checkpoint=str(tmp_path / "p8"), **reference_models.load("sblrc-blr")[1])
    assert time.monotonic() - start < budget + 30
    assert {w.filename for w in said if issubclass(w.category, ResilientWarning)} == {__file__}, "warn at the caller"
    finished = data.posterior.sizes["draw"] if "posterior" in data.children else 0
    assert finished < draws
    assert record.read_attempts(data)[-1]["outcome"] == "budget"
    if finished == 0:  # a machine so loaded that compilation and warm-up took the whole budget: said, not hidden
        assert any("no draws were finished" in str(w.message) for w in said)
        return
    from resilient.checkpoint import read_checkpoint

    on_disk = read_checkpoint(tmp_path / "p8")
    assert on_disk.posterior.sizes["draw"] >= finished


@pytest.mark.parametrize("backend", BACKENDS)
def test_p9_negative_literal_scale_stops_before_sampling(backend):
    report = resilient.preflight(pathologies.negative_scale, backend=backend)
    finding = report.errors[0]
    assert (finding.site, finding.parameter, finding.values) == ("y", "sigma", {"sigma": -1})
    assert finding.message == ("y ~ Normal(0, -1): Normal: `sigma` must be positive and finite, got -1. "
                               "Pass a valid `sigma` (the default is 1).")
    with pytest.raises(PreflightError, match=r"y ~ Normal\(0, -1\): Normal: `sigma` must be positive and finite"):
        resilient.sample(pathologies.negative_scale, backend=backend, progressbar=False)
