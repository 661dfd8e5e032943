"""Non-centring of native pm.Model loc-scale sites on PyMC's model fgraph (issue #20, item 1): StudentT,
Laplace, Cauchy, Logistic, LogNormal (in log space) and GaussianRandomWalk (through its innovations), as
Normal already was. The rewritten model's log density is the original's after the change of variables, the
Deterministic keeps the site's name and dims, and a site that cannot be rewritten safely stays centred."""

import warnings

import numpy as np
import pytest

import resilient
from resilient import record
from tests.loop_paths import returned_attempt

pytestmark = pytest.mark.pymc

SEED = 20261128
Y = np.array([28.0, 8, -3, 7, -1, 1, 18, 12])
S = np.array([15.0, 10, 16, 11, 9, 11, 10, 18])
GROUPS = list("abcde")


def _hierarchy(family, **site):
    """``mu ~ Normal(0, 1)``, ``tau ~ HalfNormal(1)``, ``x ~ family(loc=mu, scale=tau)`` over 5 groups."""
    import pymc as pm

    with pm.Model(coords={"g": GROUPS}) as model:
        mu = pm.Normal("mu", 0, 1)
        tau = pm.HalfNormal("tau", 1)
        if family == "StudentT":
            pm.StudentT("x", nu=4, mu=mu, sigma=tau, dims="g", **site)
        elif family == "StudentT-lam":  # the precision form: PyMC keeps sigma = lam ** -0.5
            pm.StudentT("x", nu=3, mu=mu, lam=tau ** -2, dims="g", **site)
        elif family == "Cauchy":
            pm.Cauchy("x", alpha=mu, beta=tau, dims="g", **site)
        elif family == "HalfNormal":  # the horseshoe's scales: a scale that is another latent
            pm.HalfNormal("x", sigma=tau, dims="g", **site)
        elif family == "HalfCauchy":
            pm.HalfCauchy("x", beta=tau, dims="g", **site)
        elif family == "HalfStudentT":
            pm.HalfStudentT("x", nu=3, sigma=tau, dims="g", **site)
        elif family == "GaussianRandomWalk":  # init Normal(mu, 2 tau): its parameters are latents too
            pm.GaussianRandomWalk("x", mu=mu, sigma=tau, init_dist=pm.Normal.dist(mu, 2 * tau), dims="g", **site)
        else:
            getattr(pm, family)("x", mu, tau, dims="g", **site)
    return model


def _centred_value(family, mu, tau, raw):
    """``x`` and the log-Jacobian ``log |dx/draw|`` (on x's unconstrained space) of the non-centred map."""
    if family == "GaussianRandomWalk":
        steps = np.r_[mu + 2 * tau * raw[0], mu + tau * raw[1:]]
        return np.cumsum(steps), np.log(2 * tau) + (raw.size - 1) * np.log(tau)
    if family.startswith("Half"):  # x = tau * raw; on the log scale log x = log tau + log raw: Jacobian 1
        return tau * raw, 0.0
    x = mu + tau * raw  # LogNormal: x's unconstrained value is log x = mu + tau * raw
    return (np.exp(x) if family == "LogNormal" else x), raw.size * np.log(tau)


FAMILIES = ["Normal", "StudentT", "StudentT-lam", "Laplace", "Cauchy", "Logistic", "LogNormal", "HalfNormal",
            "HalfCauchy", "HalfStudentT", "GaussianRandomWalk"]
HALF = ("HalfNormal", "HalfCauchy", "HalfStudentT")


@pytest.mark.parametrize("family", FAMILIES)
def test_the_rewritten_log_density_is_the_original_after_the_change_of_variables(family):
    """At random points (mu, tau, raw): log p_rewritten(mu, tau, raw) = log p(mu, tau, x(raw)) + log |dx/draw|,
    both on the unconstrained space the sampler sees (LogNormal's x through its log transform)."""
    from resilient.backend import get_adapter
    from resilient.model import NativeModel

    model = _hierarchy(family)
    adapter = get_adapter("pymc")
    centred = adapter.compile(NativeModel("pymc", model))
    assert centred.sites["x"].noncenterable and not centred.sites["mu"].noncenterable
    rewritten = adapter.compile(NativeModel("pymc", model, noncentered=frozenset({"x"})))
    assert set(rewritten.latent_names) == {"mu", "tau", "x_decentered"}
    assert rewritten.sites["x"].kind == "deterministic" and rewritten.hidden == frozenset({"x_decentered"})
    rng = np.random.default_rng(SEED)
    for _ in range(4):
        mu, tau, raw = rng.normal(), np.exp(rng.normal()), rng.normal(size=len(GROUPS)) * 1.5
        raw = np.abs(raw) if family in HALF else raw
        x, log_jacobian = _centred_value(family, mu, tau, raw)
        left = rewritten.log_density(rewritten.unconstrain({"mu": mu, "tau": tau, "x_decentered": raw}))
        right = centred.log_density(centred.unconstrain({"mu": mu, "tau": tau, "x": x})) + log_jacobian
        np.testing.assert_allclose(left, right, rtol=1e-12, atol=1e-12)
    assert [v.name for v in model.free_RVs] == ["mu", "tau", "x"], "the user's model is left as it was"


@pytest.mark.parametrize("family", FAMILIES)
def test_the_deterministic_keeps_the_name_and_dims_and_maps_the_raw_values(family):
    """x is a Deterministic of x_decentered with x's name and dims; evaluated at given (mu, tau, raw) it is
    the value the change of variables says (the forward map, checked on its own)."""
    from resilient.adapters.pymc.native import noncentred_model

    model = _hierarchy(family)
    rewritten = noncentred_model(model, frozenset({"x"}))
    assert [v.name for v in rewritten.deterministics] == ["x"]
    assert {v.name for v in rewritten.free_RVs} == {"mu", "tau", "x_decentered"}
    assert rewritten.named_vars_to_dims["x"] == model.named_vars_to_dims["x"] == ("g",)
    assert rewritten.named_vars_to_dims["x_decentered"] == ("g",)
    transform = rewritten.rvs_to_transforms[rewritten["x_decentered"]]
    assert (transform is not None and transform.name == "log") if family in HALF else transform is None
    rng = np.random.default_rng(SEED + 1)
    mu, tau, raw = rng.normal(), np.exp(rng.normal()), rng.normal(size=len(GROUPS))
    raw = np.abs(raw) if family in HALF else raw
    x = rewritten.compile_fn(rewritten["x"], inputs=[rewritten["mu"], rewritten["tau"], rewritten["x_decentered"]],
                             point_fn=False, on_unused_input="ignore")(mu, tau, raw)  # a Half- x has no mu
    np.testing.assert_allclose(x, _centred_value(family, mu, tau, raw)[0], rtol=1e-12)


def test_a_batched_random_walk_is_rewritten_along_its_last_axis():
    """GaussianRandomWalk of shape (3, 6) with a drift per row: time is the last axis; the rewritten log density
    is the original's at x = cumsum over time, plus the Jacobian."""
    import pymc as pm

    from resilient.backend import get_adapter
    from resilient.model import NativeModel

    with pm.Model() as model:
        mu = pm.Normal("mu", 0, 1, shape=3)
        tau = pm.HalfNormal("tau", 1)
        init = pm.Normal.dist(np.float64(0.0), np.float64(3.0))  # float64: PyMC makes a literal 3.0 float32
        pm.GaussianRandomWalk("x", mu=mu, sigma=tau, init_dist=init, shape=(3, 6))
    adapter = get_adapter("pymc")
    centred = adapter.compile(NativeModel("pymc", model))
    rewritten = adapter.compile(NativeModel("pymc", model, noncentered=frozenset({"x"})))
    assert centred.sites["x"].noncenterable
    rng = np.random.default_rng(SEED)
    mu, tau, raw = rng.normal(size=3), np.exp(rng.normal()), rng.normal(size=(3, 6))
    steps = np.concatenate([3.0 * raw[:, :1], mu[:, None] + tau * raw[:, 1:]], axis=1)
    x = np.cumsum(steps, axis=1)
    left = rewritten.log_density(rewritten.unconstrain({"mu": mu, "tau": tau, "x_decentered": raw}))
    right = centred.log_density(centred.unconstrain({"mu": mu, "tau": tau, "x": x}))
    np.testing.assert_allclose(left, right + 3 * np.log(3.0) + 3 * 5 * np.log(tau), rtol=1e-12)


def _not_rewritable():
    """Latent sites of loc-scale families that must stay centred, each with why."""
    import pymc as pm
    from pymc.distributions.transforms import Interval

    with pm.Model() as model:
        mu = pm.Normal("mu", 0, 1)
        tau = pm.HalfNormal("tau", 1)
        pm.Truncated("truncated", pm.StudentT.dist(nu=4, mu=mu, sigma=tau), lower=-5, upper=5)
        pm.TruncatedNormal("truncated_normal", mu, tau, lower=-5)
        pm.Laplace("other_transform", mu, tau, transform=Interval(-10, 10))
        pm.LogNormal("untransformed", mu, tau, default_transform=None)
        pm.HalfCauchy("half_untransformed", beta=tau, default_transform=None)
        pm.StudentT("only_nu_latent", nu=tau + 1, mu=0, sigma=1)
        pm.GaussianRandomWalk("laplace_init", mu=mu, sigma=tau, init_dist=pm.Laplace.dist(0, 1), steps=4)
        pm.RandomWalk("studentt_walk", init_dist=pm.Normal.dist(0, 1),
                      innovation_dist=pm.StudentT.dist(nu=4, mu=mu, sigma=tau), steps=4)
        pm.Logistic("observed", mu, tau, observed=np.zeros(3))
    return model


def test_sites_that_cannot_be_rewritten_safely_stay_centred():
    from resilient.adapters.pymc.native import _native_sites, noncentred_model
    from resilient.errors import ModelError

    model = _not_rewritable()
    sites = _native_sites(model)
    assert not any(site.noncenterable for site in sites.values()), {n: s.noncenterable for n, s in sites.items()}
    for name in ("truncated", "truncated_normal", "other_transform", "untransformed", "half_untransformed",
                 "laplace_init", "studentt_walk"):
        with pytest.raises(ModelError, match=f"Cannot non-centre `{name}`"):
            noncentred_model(model, frozenset({name}))


@pytest.mark.slow  # ~50 s on a busy 2-core machine: up to four attempts on nutpie
def test_a_centred_student_t_hierarchy_is_accepted_non_centred_by_the_loop():
    """Eight schools with StudentT(nu=4) effects, centred: whatever the first attempts try, the accepted attempt
    samples theta non-centred (theta_decentered ~ StudentT(4, 0, 1)) and theta keeps its name in the draws."""
    import pymc as pm

    with pm.Model(coords={"school": list("ABCDEFGH")}) as model:
        mu = pm.Normal("mu", 0, 5)
        tau = pm.HalfCauchy("tau", 5)
        theta = pm.StudentT("theta", nu=4, mu=mu, sigma=tau, dims="school")
        pm.Normal("y", theta, S, observed=Y, dims="school")
    sampler = resilient.compile(model, engine="nutpie")
    assert sampler.compiled.sites["theta"].noncenterable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the loop's ResilientWarning on the attempts it retried
        data = sampler.sample(draws=500, tune=500, chains=4, random_seed=SEED, progressbar=False)
    attempts = record.read_attempts(data)
    # the returned attempt (the run record's), not necessarily the last one
    assert record.read_run(data)["status"] == "ok", [(a["failure"], a["remedy"], a["outcome"]) for a in attempts]
    assert "theta" in returned_attempt(data)["settings"]["noncentered"]
    assert set(data.posterior.data_vars) == {"mu", "tau", "theta"}
    assert data.posterior["theta"].dims[-1] == "school"


def _stochastic_volatility():
    from examples.gallery.pymc_models import stochastic_volatility

    return stochastic_volatility()


def test_the_gallery_stochastic_volatility_walk_is_noncenterable_and_rewritten_with_its_dims():
    """PyMC gallery stochastic volatility: volatility ~ GaussianRandomWalk(sigma=step_size, init Normal(0, 100))
    depends on the latent step_size, so the loop may non-centre it; the rewrite keeps ``time``."""
    from resilient.adapters.pymc.native import _native_sites, noncentred_model

    model = _stochastic_volatility()
    sites = _native_sites(model)
    assert sites["volatility"].noncenterable
    assert not any(sites[name].noncenterable for name in ("step_size", "nu", "returns"))
    rewritten = noncentred_model(model, frozenset({"volatility"}))
    assert [v.name for v in rewritten.deterministics] == ["volatility"]
    assert rewritten.named_vars_to_dims["volatility"] == rewritten.named_vars_to_dims["volatility_decentered"] == (
        "time",)


@pytest.mark.slow  # 12-30 s: nutpie on 300 time points, 2 chains
def test_the_non_centred_stochastic_volatility_model_samples_with_a_small_r_hat():
    """Non-centred through its innovations, the stochastic volatility model samples at the gallery's settings
    (2 chains x 500 + 500) with R-hat <= 1.05 on every variable, volatility included."""
    import arviz as az

    nutpie = pytest.importorskip("nutpie")
    from resilient.adapters.pymc.native import noncentred_model

    rewritten = noncentred_model(_stochastic_volatility(), frozenset({"volatility"}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nutpie's and PyMC's notices are not what this test is about
        trace = nutpie.sample(nutpie.compile_pymc_model(rewritten), draws=500, tune=500, chains=2, seed=SEED,
                              progress_bar=False)
    posterior = trace.posterior
    rhat = az.rhat(getattr(posterior, "dataset", posterior))
    worst = {name: float(np.max(value)) for name, value in rhat.data_vars.items()}
    assert set(worst) >= {"step_size", "nu", "volatility", "volatility_decentered"}
    assert max(worst.values()) <= 1.05, worst
