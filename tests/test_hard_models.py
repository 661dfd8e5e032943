"""The loop on real models whose failure is known: what it calls the failure, what it does about it, what it
returns. Invariants only (the seeded trajectory differs between CPUs)."""

import numpy as np
import pytest

import resilient
from resilient import record
from resilient.errors import ResilientWarning

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
