"""Non-centring of native NumPyro scale families and Gaussian random walks (issue #20, item 1): the horseshoe's
local and global scales (HalfNormal, HalfCauchy) as ``scale * raw`` and a random walk through its innovations
(``scale * cumsum(raw)``), where NumPyro's ``LocScaleReparam`` does not apply. The rewritten log density is the
original's after the change of variables."""

import numpy as np
import pytest

pytestmark = pytest.mark.numpyro

SEED = 20261206
STEPS = 6


def _model(family):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    def model():
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        tau = numpyro.sample("tau", dist.HalfNormal(1.0))
        if family == "GaussianRandomWalk":
            x = numpyro.sample("x", dist.GaussianRandomWalk(scale=tau, num_steps=STEPS))
        elif family == "HalfCauchy":
            x = numpyro.sample("x", dist.HalfCauchy(tau * jnp.ones(STEPS)))
        else:
            x = numpyro.sample("x", dist.HalfNormal(tau).expand([STEPS]))
        numpyro.sample("y", dist.Normal(mu + jnp.sum(x), 1.0), obs=0.3)

    return model


FAMILIES = ["HalfNormal", "HalfCauchy", "GaussianRandomWalk"]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_rewritten_log_density_is_the_original_after_the_change_of_variables(family):
    """At random points: log p_rewritten(mu, tau, raw) = log p(mu, tau, x(raw)) + log |dx/draw|, both on the
    unconstrained space (a Half- x through its log transform, where x = tau * raw has Jacobian 1 in log space;
    a walk's x = tau * cumsum(raw) has log-Jacobian STEPS * log tau)."""
    from resilient.backend import get_adapter
    from resilient.model import NativeModel

    adapter = get_adapter("numpyro")
    centred = adapter.compile(NativeModel("numpyro", _model(family), float32=False))
    assert centred.sites["x"].noncenterable and not centred.sites["mu"].noncenterable
    rewritten = adapter.compile(NativeModel("numpyro", _model(family), float32=False, noncentered=frozenset({"x"})))
    assert "x_decentered" in rewritten.latent_names and "x" not in rewritten.latent_names
    rng = np.random.default_rng(SEED)
    for _ in range(4):
        mu, tau, raw = rng.normal(), float(np.exp(rng.normal())), rng.normal(size=STEPS)
        if family == "GaussianRandomWalk":
            x, log_jacobian = tau * np.cumsum(raw), STEPS * np.log(tau)
        else:
            raw = np.abs(raw)
            x, log_jacobian = tau * raw, 0.0
        left = rewritten.log_density(rewritten.unconstrain({"mu": mu, "tau": tau, "x_decentered": raw}))
        right = centred.log_density(centred.unconstrain({"mu": mu, "tau": tau, "x": x})) + log_jacobian
        np.testing.assert_allclose(left, right, rtol=1e-10, atol=1e-10)


def test_a_literal_scale_is_not_centred_and_stays_as_it_is():
    import numpyro
    import numpyro.distributions as dist

    from resilient.backend import get_adapter
    from resilient.model import NativeModel

    def model():
        numpyro.sample("x", dist.GaussianRandomWalk(scale=0.5, num_steps=STEPS))

    compiled = get_adapter("numpyro").compile(NativeModel("numpyro", model, float32=False))
    assert not compiled.sites["x"].noncenterable
