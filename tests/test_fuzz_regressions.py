"""Shrunk models the fuzzer (tests/fuzz_models.py, issue #22) found breaking the promise: each must sample
correctly or fail with an error that names the site. Fixed ones pass; open ones are xfail(strict=True)
with the reason and the file where the fix lies, so a fix turns them green (and strict makes it visible)."""

from __future__ import annotations

import numpy as np
import pytest

import resilient
from resilient import math as rm
from resilient.distributions import Categorical, Flat, HalfFlat, HalfNormal, Normal, Poisson, Truncated
from resilient.errors import PreflightError, ResilientError
from resilient.model import sample

RUN = dict(draws=50, tune=50, chains=2, progressbar=False, random_seed=1, time_budget=60)


def lone_half_flat():
    sample("mu", Normal(0, 1))
    sample("x0", HalfFlat())


def poisson_counts(y):
    mu = sample("mu", Normal(0, 1))
    sample("y", Poisson(rm.exp(mu)), obs=y)


@pytest.mark.parametrize("backend", ["numpyro", "pymc"])
def test_a_lone_half_flat_is_refused_by_name(backend):
    """Was: sampled silently, every draw of x0 inf (R-hat NaN passed the loop's checks)."""
    with pytest.raises(PreflightError, match=r"x0 ~ HalfFlat\(\): the posterior is improper"):
        resilient.sample(lone_half_flat, backend=backend, **RUN)


@pytest.mark.parametrize("backend", ["numpyro", "pymc"])
@pytest.mark.parametrize("y, words", [([1.0, 2.5, 3.0], "y\\[1\\] = 2.5"), ([1.0, np.inf], "y\\[1\\] = inf")])
def test_count_data_outside_the_support_is_named(backend, y, words):
    """Was: NumPyro's Poisson density is finite at 2.5 (the model sampled with wrong data); PyMC cast 2.5 to
    the integer 2 and inf to -9.2e18 before any check could see them."""
    report = resilient.preflight(poisson_counts, y=np.array(y), backend=backend)
    assert not report.ok
    assert any(f.site == "y" and f.check in ("compile", "observed-data") for f in report.errors)
    with pytest.raises(ResilientError, match=words):
        resilient.sample(poisson_counts, y=np.array(y), backend=backend, **RUN)


def test_native_numpyro_count_data_outside_the_support_is_named():
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0, 1))
        numpyro.sample("y", dist.Poisson(jnp.exp(mu)), obs=y)

    report = resilient.preflight(model, y=np.array([1.0, 2.5]))
    assert [f.site for f in report.errors] == ["y"] and "y[1] = 2.5" in report.errors[0].message


@pytest.mark.parametrize("lower, upper, words", [(3.0, 1.0, "must be below"), (np.inf, None, "leaves no values"),
                                                 (None, -np.inf, "leaves no values")])
def test_empty_truncation_inside_a_model_names_the_site(lower, upper, words):
    """Was: ParameterError('Truncated: `lower` must be below `upper` ...') naming no site."""
    def model():
        s = sample("s", HalfNormal(1))
        sample("x", Truncated(Normal(0, s), lower, upper))

    report = resilient.preflight(model, backend="numpyro")
    assert [f.site for f in report.errors] == ["x"] and words in report.errors[0].message


@pytest.mark.filterwarnings("ignore::resilient.errors.ResilientWarning")  # 50 draws may warn on ESS: not the point
def test_native_pymc_truncation_with_only_an_infinite_upper_bound():
    """Was: PyMC's KeyError 'x_interval__'. Now rewritten on the model's fgraph (both bounds infinite)."""
    import pymc as pm

    with pm.Model() as model:
        s = pm.HalfNormal("s", 1)
        pm.Truncated("x", pm.Cauchy.dist(0, s), lower=None, upper=np.inf)
    data = resilient.sample(model=model, **RUN)
    assert data.posterior["x"].shape[:2] == (2, data.posterior.sizes["draw"]) and data.posterior.sizes["draw"] >= 50


def test_native_numpyro_unsupported_truncation_names_the_site():
    """NumPyro fails building the distribution, before any site exists: the error quotes the user's line (which
    names the site), gives the site, and says which bases NumPyro's TruncatedDistribution takes."""
    import numpyro
    import numpyro.distributions as dist

    def model():
        numpyro.sample("x0", dist.TruncatedDistribution(dist.Weibull(1.0, 2.0), low=-1.0, high=1.0))

    with pytest.raises(ResilientError, match=r"\bx0\b.*Weibull.*whole real line") as caught:
        resilient.sample(model, **RUN)
    assert any(f.site == "x0" for f in caught.value.report.errors), caught.value.report.errors


def test_native_pymc_nan_literal_parameter_is_a_blocking_error_naming_the_site():
    """Found by benchmarks/fuzz.py (2026-12-06): a NaN literal made every checked point non-finite, yet preflight
    only warned (its findings at the points differed in wording, so each counted as 'finite somewhere') and the
    loop spent five attempts on initial points; the fix it suggested was for a negative input."""
    import pymc as pm

    with pm.Model() as model:
        mu = pm.StudentT("mu", nu=1.0, mu=0.0, sigma=3.0)
        pm.Gamma("x0", alpha=np.nan, beta=1.0, shape=3)
        pm.Exponential("y0", lam=pm.math.exp(mu), observed=np.array([1.0, 2, 3, 4, 5]))
    report = resilient.preflight(model)
    assert not report.ok
    assert [f.site for f in report.errors] and {f.site for f in report.errors} == {"x0"}
    assert "literal parameter" in report.errors[0].cause and "give that parameter a number" in report.errors[0].fix


def flat_beside_a_discrete_latent():
    sample("mu", Flat())
    sample("z", Normal(0, 1))
    sample("x0", Categorical(np.array([0.2, 0.3, 0.5])))


@pytest.mark.pymc
def test_a_flat_latent_beside_a_discrete_one_samples_on_pymc_and_is_named_improper():
    """Was (fuzz seed 2): PyTensor's DisconnectedInputError from pm.sample's step assignment, which differentiates
    the log density by each latent when discrete latents make it assign the steps (mu's log density is constant)."""
    with pytest.warns(resilient.ResilientWarning, match="mu"):
        data = resilient.sample(flat_beside_a_discrete_latent, backend="pymc",
                                policy=resilient.Policy(max_attempts=1), **RUN)
    assert {"mu", "z", "x0"} <= set(data.posterior.data_vars)
    report = resilient.preflight(flat_beside_a_discrete_latent, backend="pymc")
    assert any(f.site == "mu" and f.check == "improper-posterior" for f in report.findings)


def test_a_native_numpyro_site_named_by_a_variable_is_named_when_it_fails():
    """Was (fuzz seed 2): an error raised while NumPyro draws or enumerates a site whose name is a variable
    (``numpyro.sample(name, ...)``) named the line only; the site in progress is named now."""
    import numpyro
    import numpyro.distributions as dist

    def model():
        for name in ("mu", "x1"):
            if name == "mu":
                numpyro.sample(name, dist.Normal(0, 1))
            else:
                numpyro.sample(name, dist.Binomial(total_count=2.5, probs=0.3), infer={"enumerate": "parallel"})

    report = resilient.preflight(model)
    assert [f.site for f in report.errors] == ["x1"], report.errors
    assert "while drawing site `x1`" in report.errors[0].message


def flat_under_a_hierarchy():
    mu = sample("mu", Flat())
    tau = sample("tau", HalfNormal(1))
    sample("theta", Normal(mu, tau))


@pytest.mark.pymc
def test_prior_initial_points_a_flat_prior_cannot_give_name_the_site():
    """Was (fuzz seed 3): the loop's last remedy asked for prior draws as initial points, a Flat cannot give them,
    and the final error named no site."""
    from resilient.loop import _InitializationFailed, _initial_points

    compiled = resilient.compile(flat_under_a_hierarchy, backend="pymc").compiled
    with pytest.raises(_InitializationFailed, match=r"`mu`: an improper prior, which cannot be drawn from"):
        _initial_points(compiled, "prior", 2, 0, 3)


def flat_above_a_data_free_hierarchy():
    mu = sample("mu", Flat())
    tau = sample("tau", HalfNormal(1.0))
    theta = sample("theta", Normal(mu, tau))
    sample("theta2", Normal(theta, 1.0))


def flat_above_observed_data(y):
    theta = sample("theta", Normal(sample("mu", Flat()), 1.0))
    sample("y", Normal(theta, 1.0), obs=y)


@pytest.mark.parametrize("backend", ["numpyro", "pymc"])
def test_a_flat_prior_that_only_a_data_free_hierarchy_depends_on_is_named_improper(backend):
    """Was (noticed at stop 25): preflight moved each improper latent alone, and moving ``mu`` alone changes
    ``theta``'s term, so ``mu ~ Flat()`` over ``theta ~ Normal(mu, tau)`` with no data was not flagged; the
    posterior is improper along ``mu``, ``theta`` and ``theta2`` moved together (``tau`` stays put)."""
    report = resilient.preflight(flat_above_a_data_free_hierarchy, backend=backend)
    found = [f for f in report.findings if f.check == "improper-posterior"]
    assert [(f.site, f.severity) for f in found] == [("mu", "warning")]
    assert "`mu`, `theta` and `theta2` move together by the same amount" in found[0].message
    assert found[0].values == {"direction of mu": [1.0], "direction of theta": [1.0], "direction of theta2": [1.0]}
    proper = resilient.preflight(flat_above_observed_data, y=np.array([0.1, 0.5]), backend=backend)
    assert not [f for f in proper.findings if f.check == "improper-posterior"], "data below theta: proper"


def test_a_native_pm_model_with_a_flat_over_unobserved_effects_is_named_improper():
    import pymc as pm

    with pm.Model() as model:
        pm.Normal("effects", pm.Flat("mu"), 1.0, shape=3)
    found = [f for f in resilient.preflight(model).findings if f.check == "improper-posterior"]
    assert [f.site for f in found] == ["mu"] and found[0].values["direction of effects"] == [1.0, 1.0, 1.0]
