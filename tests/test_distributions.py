"""Distribution records: construction, validation of literal parameters, readable descriptions."""

import numpy as np
import pytest

import resilient
from resilient import distributions as d
from resilient.errors import ParameterError


def test_every_family_in_design_has_a_constructor():
    design = ["Normal", "HalfNormal", "StudentT", "HalfStudentT", "Cauchy", "HalfCauchy", "Laplace", "Logistic",
              "LogNormal", "Exponential", "Gamma", "InverseGamma", "Beta", "Uniform", "Flat", "HalfFlat", "Weibull",
              "Bernoulli", "Binomial", "Poisson", "NegativeBinomial", "Categorical", "Dirichlet", "MvNormal",
              "LKJCholesky"]
    for name in design:
        assert name in d.FAMILIES
        assert callable(getattr(resilient, name))


@pytest.mark.parametrize("make, argument, shown", [
    (lambda: d.Normal(0, -1), "sigma", "-1"),
    (lambda: d.HalfCauchy(beta=0.0), "beta", "0"),
    (lambda: d.Beta(2.0, -0.5), "beta", "-0.5"),
    (lambda: d.Bernoulli(1.5), "p", "1.5"),
    (lambda: d.Binomial(2.5, 0.3), "n", "2.5"),
    (lambda: d.Exponential(np.array([1.0, -2.0])), "lam", "-2"),
    (lambda: d.Categorical([0.2, 0.2]), "p", "0.2"),
    (lambda: d.Dirichlet([1.0, 0.0]), "a", "0"),
])
def test_literal_parameters_are_checked_when_the_record_is_made(make, argument, shown):
    with pytest.raises(ParameterError, match=rf"`{argument}` must be .*got .*{shown}") as info:
        make()
    assert info.value.argument == argument


def test_unknown_and_missing_parameters_name_the_argument():
    with pytest.raises(ParameterError, match=r"unknown parameter `scale`. Expected one of: mu, sigma"):
        d.Normal(0, scale=1)
    with pytest.raises(ParameterError, match=r"`alpha` is required"):
        d.Gamma()
    with pytest.raises(ParameterError, match=r"exactly one of `cov` or `chol`"):
        d.MvNormal(np.zeros(2))
    with pytest.raises(ParameterError, match=r"`lower` must be below `upper`, got lower=2, upper=1"):
        d.Uniform(2.0, 1.0)


def test_truncated_checks_its_base_and_bounds():
    with pytest.raises(ParameterError, match=r"continuous univariate distribution, got Poisson"):
        d.Truncated(d.Poisson(3.0), lower=0)
    with pytest.raises(ParameterError, match=r"`lower` must be below `upper`, got lower=1, upper=0"):
        d.Truncated(d.Normal(0, 1), lower=1, upper=0)


def test_descriptions_read_like_the_model():
    assert repr(d.Truncated(d.Normal(0, 2.5), lower=0, upper=np.inf)) == "Truncated(Normal(0, 2.5), lower=0, upper=inf)"
    assert repr(d.Normal(0, 1, shape=3)) == "Normal(0, 1, shape=(3,))"
    assert d.Normal(0, 1, shape=[2, 3]).shape == (2, 3)


def test_flat_families_take_no_parameters():
    assert d.Flat().params == {} and d.HalfFlat(shape=2).shape == (2,)


def test_ordered_mixture_and_normal_mixture_records_check_what_can_be_checked_now():
    import numpy as np

    from resilient.distributions import Mixture, NormalMixture, Normal, Poisson, StudentT

    assert Normal(0, 1, shape=3, ordered=True).describe() == "Normal(0, 1, shape=(3,), ordered=True)"
    with pytest.raises(ParameterError, match=r"`ordered=True` needs shape= with at least 2 elements"):
        Normal(0, 1, ordered=True)
    with pytest.raises(ParameterError, match=r"Poisson: `ordered=True` needs a continuous family"):
        Poisson(1.0, shape=2, ordered=True)
    mixture = Mixture([0.3, 0.7], [Normal(0, 1), StudentT(3, 0, 2)])
    assert mixture.describe() == "Mixture([0.3, 0.7], [Normal(0, 1), StudentT(3, 0, 2)])"
    assert set(mixture.params) == {"w", "0.mu", "0.sigma", "1.nu", "1.mu", "1.sigma"}
    with pytest.raises(ParameterError, match=r"Mixture: `w` must be a probability vector"):
        Mixture([0.2, 0.5], [Normal(0, 1), Normal(1, 1)])
    with pytest.raises(ParameterError, match=r"Mixture: component 1 must be a continuous univariate record"):
        Mixture([0.5, 0.5], [Normal(0, 1), Poisson(2.0)])
    with pytest.raises(ParameterError, match=r"NormalMixture: `w`, `mu` and `sigma` need one entry per component"):
        NormalMixture(np.array([0.5, 0.5]), np.zeros(3), np.ones(2))
