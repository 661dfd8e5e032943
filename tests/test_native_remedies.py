"""Remedies are real on native models: the loop non-centres a native NumPyro site only where the
adapter rewrites it (LocScaleReparam), never on a pm.Model it cannot rewrite, and every remedy the
attempt log names changed the compiled model (or the settings) it claims to have changed."""

import numpy as np
import pytest

import resilient
from resilient import record

SEED = 20261128
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


def _attempt_models(sampler, attempts):
    """The compiled model each attempt ran, from the sampler's cache, by the attempt's settings."""
    by_noncentered = {tuple(sorted(model.noncentered)): compiled for (_, model), compiled in sampler.cache.items()}
    return [by_noncentered[tuple(a["settings"]["noncentered"])] for a in attempts]


@pytest.mark.numpyro
@pytest.mark.parametrize("model, args", [(centred_eight_schools_plate, (Y, S)),
                                         pytest.param(funnel, (), marks=pytest.mark.slow)])
def test_the_loop_non_centres_native_numpyro_models_and_the_model_really_changes(model, args):
    sampler = resilient.compile(model, *args, backend="numpyro")
    data = sampler.sample(draws=500, tune=500, chains=4, random_seed=SEED, progressbar=False)
    attempts = record.read_attempts(data)
    assert attempts[0]["failure"] in ("divergences", "convergence")
    remedied = [a for a in attempts if a["remedy"] == "noncenter"]
    assert remedied and attempts[-1]["outcome"] == "accepted"
    before, after = _attempt_models(sampler, [attempts[0], remedied[0]])
    assert before.latent_names != after.latent_names
    assert any(name.endswith("_decentered") for name in after.latent_names)
    assert float(data.sample_stats["diverging"].mean()) < 0.005


@pytest.mark.pymc
def test_a_pm_model_is_never_claimed_non_centred():
    import pymc as pm

    with pm.Model() as model:
        mu = pm.Normal("mu", 0, 5)
        tau = pm.HalfCauchy("tau", 5)
        theta = pm.Normal("theta", mu, tau, shape=8)
        pm.Normal("y", theta, S, observed=Y)
    sites = resilient.compile(model).compiled.sites
    assert sites["theta"].family == "Normal" and not sites["theta"].noncenterable
    assert dict(sites["theta"].parameter_inputs) == {"mu": ("mu",), "sigma": ("tau",)}
