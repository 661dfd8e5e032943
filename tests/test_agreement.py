"""check_agreement: one shared-API model on both backends, compared per parameter in MCSE units."""

import numpy as np
import pytest

import resilient
from resilient.agreement import compare
from resilient.draws import to_datatree
from resilient.distributions import HalfNormal, Normal
from resilient.model import sample


def fake_run(shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return to_datatree({"mu": rng.normal(shift, 1, size=(4, 1000)), "beta": rng.normal(0, 2, size=(4, 1000, 2))},
                       {"diverging": np.zeros((4, 1000), bool)})


def test_independent_draws_of_one_posterior_agree_and_a_shift_of_ten_mcse_differs():
    same = compare(fake_run(seed=1), fake_run(seed=2))
    assert same.ok and [p.name for p in same.parameters] == ["mu", "beta[0]", "beta[1]"]
    # 4000 independent draws: MCSE of a mean is about 1/sqrt(4000) = 0.016; 0.3 is about 13 combined MCSEs
    shifted = compare(fake_run(seed=1), fake_run(shift=0.3, seed=2))
    assert shifted.differing == ["mu"] and shifted.parameters[0].z_mean < -shifted.critical_z
    assert "| mu |" in shifted.table()


def regression(x, y):
    alpha = sample("alpha", Normal(0, 2))
    beta = sample("beta", Normal(0, 2))
    sigma = sample("sigma", HalfNormal(1))
    sample("y", Normal(alpha + beta * x, sigma), obs=y)


@pytest.mark.numpyro
@pytest.mark.pymc
@pytest.mark.slow  # two full runs, one per backend
def test_a_shared_api_regression_means_the_same_on_both_backends():
    rng = np.random.default_rng(3)
    x = rng.normal(size=40)
    y = 1.0 + 0.5 * x + rng.normal(0, 0.7, size=40)
    result = resilient.check_agreement(regression, x=x, y=y, draws=1000, random_seed=4)
    assert result.ok, result.table()
