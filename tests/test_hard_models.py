"""The loop on real models whose failure is known: what it calls the failure, what it does about it, what it
returns. Invariants only (the seeded trajectory differs between CPUs)."""

import numpy as np
import pytest

import resilient
from resilient import record
from resilient.errors import ResilientWarning
from tests.loop_paths import healthy_path, returned_attempt

SEED = 20261205


def bimodal():
    """``x ~ Normal(0, 10); 4 ~ Normal(x**2, 0.1)``: two modes, at x = 2 and x = -2 (issue #26)."""
    import numpyro
    import numpyro.distributions as dist

    x = numpyro.sample("x", dist.Normal(0, 10))
    numpyro.sample("obs", dist.Normal(x**2, 0.1), obs=4.0)


@pytest.mark.numpyro
def test_chains_in_the_two_modes_are_named_multimodal_and_every_draw_comes_back():
    starts = [{"x": 1.5}, {"x": -1.5}, {"x": 1.5}, {"x": -1.5}]  # two chains in each mode, on any CPU
    with pytest.warns(ResilientWarning, match=r"multimodal") as said:
        data = resilient.sample(bimodal, draws=1000, tune=300, chains=4, random_seed=SEED, initvals=starts,
                                progressbar=False)
    attempts = record.read_attempts(data)
    assert [a["failure"] for a in attempts] == ["multimodal"], "not retried: no remedy crosses between modes"
    assert data.posterior["x"].shape == (4, 1000)
    means = data.posterior["x"].mean("draw").values
    assert np.allclose(np.abs(means), 2.0, atol=0.05) and np.sign(means).tolist() == [1, -1, 1, -1]
    assert record.read_run(data)["returned_attempt"] == 1
    message = " ".join(str(w.message) for w in said)
    assert "chain(s) 1, 3 near -2" in message and "chain(s) 0, 2 near 2" in message


def correlated():
    """A 2-d Gaussian with correlation 0.995 and scales 1 and 10: hard for a diagonal mass matrix."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    cov = jnp.array([[1.0, 0.995 * 10], [0.995 * 10, 100.0]])
    numpyro.sample("x", dist.MultivariateNormal(jnp.zeros(2), cov))


@pytest.mark.numpyro
def test_numpyro_adapts_a_dense_mass_matrix_when_asked_and_the_loop_can_choose_it():
    from resilient.engine import mass_matrices
    from resilient.loop import LoopState, choose_remedy
    from resilient.model import NativeModel
    from resilient.policy import Policy

    assert "full" in mass_matrices("numpyro")
    state = LoopState(NativeModel("numpyro", correlated), "numpyro", 0.8)
    assert choose_remedy("tree-depth", state, Policy(), mass_matrices=mass_matrices("numpyro"), dimension=2).remedy == (
        "dense_mass")
    data = resilient.sample(correlated, draws=300, tune=300, chains=2, random_seed=SEED, mass_matrix="full",
                            progressbar=False)
    # the returned attempt, not the last: a few divergences or an R-hat just over the goal on some CPU bring one
    # soft retry (a higher target_accept, or the same chains run longer), each with the dense metric kept
    healthy_path(data)
    assert {a["settings"]["mass_matrix"] for a in record.read_attempts(data)} == {"full"}
    attempt = returned_attempt(data)
    assert attempt["ess_bulk"] > 150, "a dense metric makes this posterior easy"
