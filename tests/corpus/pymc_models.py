"""PyMC models in the shapes of PyMC's docs, each with its own synthetic data (a fixed numpy seed).

Every model is a builder that returns a fresh ``pm.Model`` (so ``pm.set_data`` on one test's model
never leaks into another's). ``CASES`` lists them with how long to sample them and, for models with
``pm.Data``, the out-of-sample data that ``pm.set_data`` swaps in before
``pm.sample_posterior_predictive(..., predictions=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = ["PyMCCase", "CASES"]


@dataclass(frozen=True)
class PyMCCase:
    name: str
    build: Callable[[], Any]
    draws: int = 300
    tune: int = 300
    chains: int = 2
    # pm.set_data's arguments for out-of-sample predictions: (new_data, coords) or None.
    new_data: Callable[[], tuple[dict, dict | None]] | None = None
    # What the model exercises (PyMC docs' shape), for FINDINGS.md and test ids.
    shape: str = ""
    notes: dict = field(default_factory=dict)


CASES: dict[str, PyMCCase] = {}


def case(**options: Any) -> Callable:
    def register(build: Callable) -> Callable:
        CASES[build.__name__] = PyMCCase(name=build.__name__, build=build, **options)
        return build

    return register


# --- data ----------------------------------------------------------------------------------------

def _radon_data():
    rng = np.random.default_rng(101)
    counties = ["ANOKA", "BLUE EARTH", "CLAY", "DAKOTA", "HENNEPIN"]
    county_idx = rng.integers(0, len(counties), 60)
    floor = rng.integers(0, 2, 60).astype(float)
    alpha = rng.normal(1.4, 0.4, len(counties))
    log_radon = alpha[county_idx] - 0.6 * floor + rng.normal(0, 0.7, 60)
    return counties, county_idx, floor, log_radon


# --- models --------------------------------------------------------------------------------------

def _radon_new_data():
    return ({"county_idx": np.array([0, 2, 4]), "floor": np.array([0.0, 1.0, 0.0])},
            {"obs_id": ["new-0", "new-1", "new-2"]})


@case(shape="coords/dims, pm.Data + set_data + sample_posterior_predictive(predictions=True), "
            "non-centred hierarchy with a dims'd Deterministic", new_data=_radon_new_data,
      draws=600, tune=600)  # sigma_a of five counties mixes slowly: R-hat 1.02-1.05 at 300 draws
def radon_varying_intercept():
    """The radon varying-intercept model (PyMC's multilevel modelling notebook), non-centred."""
    import pymc as pm

    counties, county_idx, floor, log_radon = _radon_data()
    coords = {"county": counties, "obs_id": [f"obs-{i}" for i in range(len(floor))]}
    with pm.Model(coords=coords) as model:
        county = pm.Data("county_idx", county_idx, dims="obs_id")
        floor_data = pm.Data("floor", floor, dims="obs_id")
        mu_a = pm.Normal("mu_a", 0.0, 5.0)
        sigma_a = pm.HalfNormal("sigma_a", 1.0)
        z_a = pm.Normal("z_a", 0.0, 1.0, dims="county")
        alpha = pm.Deterministic("alpha", mu_a + sigma_a * z_a, dims="county")
        beta = pm.Normal("beta", 0.0, 2.0)
        sigma_y = pm.Exponential("sigma_y", 1.0)
        pm.Normal("log_radon", alpha[county] + beta * floor_data, sigma_y, observed=log_radon,
                  shape=floor_data.shape, dims="obs_id")
    return model


def _regression_new_data():
    return {"x": np.linspace(-2, 2, 5)}, None


@case(shape="pm.Data without dims, observed shape from the data (shape=x.shape), set_data + predictions",
      new_data=_regression_new_data)
def linear_regression_data():
    """The 'out of sample predictions' shape of PyMC's pm.Data docs."""
    import pymc as pm

    rng = np.random.default_rng(102)
    x_obs = rng.normal(0, 1, 40)
    y_obs = 0.5 + 1.5 * x_obs + rng.normal(0, 0.6, 40)
    with pm.Model() as model:
        x = pm.Data("x", x_obs)
        intercept = pm.Normal("intercept", 0, 5)
        slope = pm.Normal("slope", 0, 5)
        sigma = pm.HalfNormal("sigma", 2)
        pm.Normal("y", intercept + slope * x, sigma, observed=y_obs, shape=x.shape)
    return model


@case(shape="coords for a predictor dimension, Bernoulli(logit_p), Deterministic with dims")
def logistic_regression_dims():
    import pymc as pm

    rng = np.random.default_rng(103)
    X = rng.normal(0, 1, (80, 3))
    true_beta = np.array([1.0, -0.5, 0.0])
    y = (rng.uniform(size=80) < 1 / (1 + np.exp(-(0.3 + X @ true_beta)))).astype(int)
    coords = {"predictor": ["age", "income", "noise"], "obs_id": np.arange(80)}
    with pm.Model(coords=coords) as model:
        X_data = pm.Data("X", X, dims=("obs_id", "predictor"))
        intercept = pm.Normal("intercept", 0, 2)
        beta = pm.Normal("beta", 0, 1, dims="predictor")
        p = pm.Deterministic("p", pm.math.sigmoid(intercept + X_data @ beta), dims="obs_id")
        pm.Bernoulli("y", p=p, observed=y, dims="obs_id")
    return model


@case(shape="pm.Potential (a soft sum-to-zero constraint)")
def potential_soft_constraint():
    import pymc as pm

    rng = np.random.default_rng(104)
    group = np.repeat(np.arange(4), 10)
    y = rng.normal(np.array([-1.0, 0.5, 0.2, 0.3])[group], 1.0)
    with pm.Model(coords={"group": ["a", "b", "c", "d"]}) as model:
        effect = pm.Normal("effect", 0, 2, dims="group")
        pm.Potential("soft_sum_to_zero", pm.logp(pm.Normal.dist(0, 0.01), effect.sum()))
        sigma = pm.HalfNormal("sigma", 2)
        pm.Normal("y", effect[group], sigma, observed=y)
    return model


def _gumbel_logp(value, mu, beta):
    import pymc as pm

    z = (value - mu) / beta
    return -pm.math.log(beta) - z - pm.math.exp(-z)


def _gumbel_random(mu, beta, rng=None, size=None):
    return rng.gumbel(mu, beta, size=size)


@case(shape="pm.CustomDist with logp= and random= (observed)")
def custom_dist_gumbel():
    import pymc as pm

    rng = np.random.default_rng(105)
    y = rng.gumbel(2.0, 1.5, 60)
    with pm.Model() as model:
        mu = pm.Normal("mu", 0, 5)
        beta = pm.HalfNormal("beta", 3)
        pm.CustomDist("y", mu, beta, logp=_gumbel_logp, random=_gumbel_random, observed=y)
    return model


@case(shape="pm.Mixture of Normal components, Dirichlet weights, ordered means (transform=ordered)")
def normal_mixture():
    import pymc as pm

    rng = np.random.default_rng(106)
    y = np.concatenate([rng.normal(-2.0, 0.7, 60), rng.normal(2.5, 1.0, 40)])
    with pm.Model(coords={"component": ["low", "high"]}) as model:
        w = pm.Dirichlet("w", a=np.ones(2), dims="component")
        mu = pm.Normal("mu", mu=np.array([-1.0, 1.0]), sigma=3, dims="component",
                       transform=pm.distributions.transforms.ordered)
        sigma = pm.HalfNormal("sigma", 2, dims="component")
        components = pm.Normal.dist(mu=mu, sigma=sigma, shape=(2,))
        pm.Mixture("y", w=w, comp_dists=components, observed=y)
    return model


@case(shape="GaussianRandomWalk with init_dist and dims over time", draws=600, tune=600)
def gaussian_random_walk():
    """A random walk seen through little noise, with a step scale kept off zero (a HalfNormal step scale
    makes a funnel that PyMC's NUTS crosses only with luck: R-hat 1.01-2.2 over seeds, measured)."""
    import pymc as pm

    rng = np.random.default_rng(107)
    T = 25
    level = np.cumsum(rng.normal(0, 0.3, T))
    y = level + rng.normal(0, 0.2, T)
    with pm.Model(coords={"time": np.arange(T)}) as model:
        sigma = pm.LogNormal("sigma", np.log(0.3), 0.4)
        x = pm.GaussianRandomWalk("x", sigma=sigma, init_dist=pm.Normal.dist(0, 1), dims="time")
        pm.Normal("y", x, 0.2, observed=y, dims="time")
    return model


@case(shape="ZeroSumNormal group effects with dims")
def zero_sum_effects():
    import pymc as pm

    rng = np.random.default_rng(108)
    group = np.repeat(np.arange(5), 8)
    y = 1.0 + np.array([-0.8, -0.2, 0.0, 0.3, 0.7])[group] + rng.normal(0, 0.5, 40)
    with pm.Model(coords={"group": list("ABCDE"), "obs_id": np.arange(40)}) as model:
        intercept = pm.Normal("intercept", 0, 3)
        effect = pm.ZeroSumNormal("effect", sigma=1.0, dims="group")
        sigma = pm.HalfNormal("sigma", 1)
        pm.Normal("y", intercept + effect[group], sigma, observed=y, dims="obs_id")
    return model


@case(shape="LKJCholeskyCov(compute_corr=True) + MvNormal(chol=...), corr Deterministic with two dims")
def lkj_mvnormal():
    import pymc as pm

    rng = np.random.default_rng(109)
    cov = np.array([[1.0, 0.6], [0.6, 2.0]])
    y = rng.multivariate_normal([0.5, -1.0], cov, 60)
    coords = {"axis": ["x", "y"], "axis_bis": ["x", "y"], "obs_id": np.arange(60)}
    with pm.Model(coords=coords) as model:
        chol, corr, stds = pm.LKJCholeskyCov("chol", n=2, eta=2.0, sd_dist=pm.Exponential.dist(1.0, shape=2),
                                             compute_corr=True)
        pm.Deterministic("corr", corr, dims=("axis", "axis_bis"))
        pm.Deterministic("stds", stds, dims="axis")
        mu = pm.Normal("mu", 0, 2, dims="axis")
        pm.MvNormal("obs", mu, chol=chol, observed=y, dims=("obs_id", "axis"))
    return model


@case(shape="pm.Censored(Normal) with both bounds, observed at the bounds")
def censored_normal():
    import pymc as pm

    rng = np.random.default_rng(110)
    y = np.clip(rng.normal(0.8, 1.2, 80), -0.5, 2.0)
    with pm.Model() as model:
        mu = pm.Normal("mu", 0, 3)
        sigma = pm.HalfNormal("sigma", 2)
        pm.Censored("y", pm.Normal.dist(mu, sigma), lower=-0.5, upper=2.0, observed=y)
    return model


@case(shape="pm.Truncated(Normal) observed with both bounds, and a latent pm.Truncated with lower only")
def truncated_normal():
    import pymc as pm

    rng = np.random.default_rng(111)
    raw = rng.normal(1.0, 1.5, 400)
    y = raw[(raw > 0) & (raw < 3)][:60]
    with pm.Model() as model:
        mu = pm.Normal("mu", 0, 3)
        sigma = pm.Truncated("sigma", pm.Normal.dist(1.0, 1.0), lower=0.0)
        pm.Truncated("y", pm.Normal.dist(mu, sigma), lower=0.0, upper=3.0, observed=y)
    return model


@case(shape="missing-value imputation: observed with NaNs (y_unobserved / y_observed / y)")
def missing_values():
    import pymc as pm

    rng = np.random.default_rng(112)
    x = rng.normal(0, 1, 30)
    y = 1.0 + 2.0 * x + rng.normal(0, 0.5, 30)
    y[[3, 11, 17, 25]] = np.nan
    with pm.Model() as model:
        intercept = pm.Normal("intercept", 0, 5)
        slope = pm.Normal("slope", 0, 5)
        sigma = pm.HalfNormal("sigma", 2)
        pm.Normal("y", intercept + slope * x, sigma, observed=y)
    return model


@case(shape="dependent bounds: b ~ Uniform(0, 1 - a), Multinomial counts")
def dependent_bounds():
    import pymc as pm

    counts = np.array([32, 45, 23])
    with pm.Model() as model:
        a = pm.Uniform("a", 0, 1)
        b = pm.Uniform("b", 0, 1 - a)
        p = pm.math.stack([a, b, 1 - a - b])
        pm.Multinomial("counts", n=counts.sum(), p=p, observed=counts)
    return model


@case(shape="discrete switchpoint (DiscreteUniform) with pm.math.switch: the coal-mining disasters shape",
      draws=500, tune=500)
def switchpoint():
    import pymc as pm

    rng = np.random.default_rng(113)
    years = np.arange(1900, 1960)
    disasters = np.concatenate([rng.poisson(3.0, 25), rng.poisson(1.0, 35)])
    with pm.Model(coords={"year": years}) as model:
        point = pm.DiscreteUniform("switchpoint", lower=years.min(), upper=years.max())
        early_rate = pm.Exponential("early_rate", 1.0)
        late_rate = pm.Exponential("late_rate", 1.0)
        rate = pm.math.switch(point >= years, early_rate, late_rate)
        pm.Poisson("disasters", rate, observed=disasters, dims="year")
    return model
