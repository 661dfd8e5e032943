"""Remedies are real on native models: the loop non-centres a native NumPyro site with LocScaleReparam
and a pm.Model's site on PyMC's model fgraph, and every remedy the attempt log names changed the
compiled model (or the settings) it claims to have changed."""

import numpy as np
import pytest

import resilient
from resilient import record
from tests.loop_paths import returned_attempt

SEED = 20261128

#: what the first attempt on a centred hierarchy may fail on. Which one a seed hits differs between CPUs
#: (floating-point details of compiled code): divergences on one machine, a chain stuck in the funnel's neck on
#: another (an AMD EPYC), so tests assert the outcome, never one machine's trajectory.
CENTRED_FAILURES = ("divergences", "convergence", "stuck", "tree-depth")

Y = np.array([28.0, 8, -3, 7, -1, 1, 18, 12])
S = np.array([15.0, 10, 16, 11, 9, 11, 10, 18])


def centred_eight_schools_plate(y, s):
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0, 5))
    tau = numpyro.sample("tau", dist.HalfCauchy(5))
    with numpyro.plate("school", 8):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, s), obs=y)


def funnel():
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    y = numpyro.sample("y", dist.Normal(0, 3))
    numpyro.sample("x", dist.Normal(jnp.zeros(9), jnp.exp(y / 2)))


@pytest.mark.numpyro
def test_native_numpyro_sites_carry_structured_facts_read_from_the_distributions(compiled):
    sites = compiled(centred_eight_schools_plate, "numpyro", Y, S).compiled.sites
    theta = sites["theta"]
    assert (theta.family, dict(theta.parameter_inputs), theta.noncenterable) == (
        "Normal", {"mu": ("mu",), "sigma": ("tau",)}, True)
    assert not sites["mu"].noncenterable and sites["tau"].family == "HalfCauchy"
    x = compiled(funnel, "numpyro").compiled.sites["x"]
    assert dict(x.parameter_inputs) == {"mu": (), "sigma": ("y",)} and x.noncenterable


def _assert_non_centred_and_accepted(data, attempts, names):
    """The invariant of a remedied centred hierarchy on any CPU: the first attempt failed on one of
    :data:`CENTRED_FAILURES`, the run ends "ok", the returned attempt (the run record's, not necessarily the last)
    runs ``names`` non-centred, and the result's divergence rate is under the policy's limit. Which remedies came
    between is the loop's choice."""
    assert attempts[0]["outcome"] == "retry" and attempts[0]["failure"] in CENTRED_FAILURES, attempts[0]
    assert record.read_run(data)["status"] == "ok", [(a["failure"], a["remedy"], a["outcome"]) for a in attempts]
    assert set(names) <= set(returned_attempt(data)["settings"]["noncentered"])
    assert float(data.sample_stats["diverging"].mean()) <= resilient.Policy().max_divergence_rate  # the loop's <=


def _first_non_centred(attempts):
    return next(a for a in attempts if a["settings"]["noncentered"])


def _attempt_models(sampler, attempts):
    """The compiled model each attempt ran, from the sampler's cache, by the attempt's settings."""
    by_noncentered = {tuple(sorted(model.noncentered)): compiled for (_, model), compiled in sampler.cache.items()}
    return [by_noncentered[tuple(a["settings"]["noncentered"])] for a in attempts]


@pytest.mark.numpyro
@pytest.mark.slow  # 8 s cold; P5 and the pm.Model run on nutpie cover the loop's non-centring by default
@pytest.mark.parametrize("model, args, centred", [(centred_eight_schools_plate, (Y, S), "theta"), (funnel, (), "x")])
def test_the_loop_non_centres_native_numpyro_models_and_the_model_really_changes(model, args, centred):
    sampler = resilient.compile(model, *args, backend="numpyro")
    data = sampler.sample(draws=500, tune=500, chains=4, random_seed=SEED, progressbar=False)
    attempts = record.read_attempts(data)
    _assert_non_centred_and_accepted(data, attempts, [centred])
    before, after = _attempt_models(sampler, [attempts[0], _first_non_centred(attempts)])
    assert before.latent_names != after.latent_names
    assert any(name.endswith("_decentered") for name in after.latent_names)


def _centred_pm_model():
    import pymc as pm

    with pm.Model(coords={"school": list("ABCDEFGH")}) as model:
        mu = pm.Normal("mu", 0, 5)
        tau = pm.HalfCauchy("tau", 5)
        theta = pm.Normal("theta", mu, tau, dims="school")
        pm.Normal("y", theta, S, observed=Y, dims="school")
    return model


@pytest.mark.pymc
def test_a_pm_model_is_non_centred_on_its_fgraph_with_the_same_density():
    """theta ~ Normal(mu, tau) becomes theta_decentered ~ Normal(0, 1), theta = mu + tau * theta_decentered:
    at matching points the log densities differ by exactly the Jacobian, 8 log tau."""
    from resilient.backend import get_adapter
    from resilient.model import NativeModel

    model = _centred_pm_model()
    sites = resilient.compile(model).compiled.sites
    assert sites["theta"].family == "Normal" and sites["theta"].noncenterable and not sites["mu"].noncenterable
    assert dict(sites["theta"].parameter_inputs) == {"mu": ("mu",), "sigma": ("tau",)}
    centred = get_adapter("pymc").compile(NativeModel("pymc", model))
    rewritten = get_adapter("pymc").compile(NativeModel("pymc", model, noncentered=frozenset({"theta"})))
    assert set(rewritten.latent_names) == {"mu", "tau", "theta_decentered"} and rewritten.ignored_options == ()
    assert "theta" in rewritten.sites and rewritten.sites["theta"].kind == "deterministic"
    rng = np.random.default_rng(SEED)
    for _ in range(3):
        mu, log_tau, raw = rng.normal(), rng.normal(), rng.normal(size=8)
        tau = np.exp(log_tau)
        theta = mu + tau * raw
        x_centred = centred.unconstrain({"mu": mu, "tau": tau, "theta": theta})
        x_rewritten = rewritten.unconstrain({"mu": mu, "tau": tau, "theta_decentered": raw})
        np.testing.assert_allclose(rewritten.log_density(x_rewritten), centred.log_density(x_centred) + 8 * log_tau,
                                   rtol=1e-10)
    assert [v.name for v in model.free_RVs] == ["mu", "tau", "theta"], "the user's model is left as it was"


@pytest.mark.pymc
@pytest.mark.parametrize("engine", [pytest.param("pymc", marks=pytest.mark.slow), "nutpie"])
def test_the_loop_non_centres_a_native_pm_model_and_the_posterior_keeps_its_names(engine):
    sampler = resilient.compile(_centred_pm_model(), engine=engine)
    data = sampler.sample(draws=500, tune=500, chains=4, random_seed=SEED, progressbar=False)
    attempts = record.read_attempts(data)
    _assert_non_centred_and_accepted(data, attempts, ["theta"])
    assert returned_attempt(data)["settings"]["noncentered"] == ["theta"]  # the only centred site of the model
    assert set(data.posterior.data_vars) == {"mu", "tau", "theta"}
    assert data.posterior["theta"].dims == ("chain", "draw", "school")
