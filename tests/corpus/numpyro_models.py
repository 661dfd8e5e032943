"""NumPyro models in the shapes of NumPyro's examples, each with its own synthetic data (a fixed numpy seed).

Each case is a model function plus the positional and keyword arguments it is run with, the same for
``numpyro.infer.MCMC(NUTS(model)).run(key, *args, **kwargs)`` and
``resilient.sample(model, *args, **kwargs)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = ["NumPyroCase", "CASES"]


@dataclass(frozen=True)
class NumPyroCase:
    name: str
    model: Callable
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    draws: int = 300
    tune: int = 300
    chains: int = 2
    shape: str = ""
    # Initial values, as NumPyro's mixture tutorial sets them: raw NUTS(init_strategy=init_to_value(values=...)),
    # ours resilient.sample(initvals=...).
    init_values: dict | None = None
    # numpyro.factor sites: az.from_numpyro lists them as observed data (and log likelihood); they are not data.
    factors: tuple[str, ...] = ()


CASES: dict[str, NumPyroCase] = {}


def case(data: Callable[[], tuple[tuple, dict]], **options: Any) -> Callable:
    def register(model: Callable) -> Callable:
        args, kwargs = data()
        CASES[model.__name__] = NumPyroCase(name=model.__name__, model=model, args=args, kwargs=kwargs, **options)
        return model

    return register


# --- models --------------------------------------------------------------------------------------

def _schools():
    rng = np.random.default_rng(201)
    sigma = np.array([15.0, 10, 16, 11, 9, 11, 10, 18])
    y = rng.normal(rng.normal(5.0, 6.0, 8), sigma)
    return (sigma,), {"y": y}


@case(_schools, shape="plate + handlers.reparam(LocScaleReparam(0)) (NumPyro's eight schools / funnel examples)")
def eight_schools_reparam(sigma, y=None):
    import numpyro
    import numpyro.distributions as dist
    from numpyro.handlers import reparam
    from numpyro.infer.reparam import LocScaleReparam

    mu = numpyro.sample("mu", dist.Normal(0, 5))
    tau = numpyro.sample("tau", dist.HalfCauchy(5))
    with numpyro.plate("school", len(sigma)):
        with reparam(config={"theta": LocScaleReparam(centered=0)}):
            theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def _regression():
    rng = np.random.default_rng(202)
    x = rng.normal(0, 1, 50)
    return (x,), {"y": 1.0 - 0.7 * x + rng.normal(0, 0.4, 50)}


@case(_regression, shape="plate over observations + numpyro.deterministic inside the plate")
def regression_deterministic(x, y=None):
    import numpyro
    import numpyro.distributions as dist

    a = numpyro.sample("a", dist.Normal(0, 5))
    b = numpyro.sample("b", dist.Normal(0, 5))
    sigma = numpyro.sample("sigma", dist.Exponential(1))
    with numpyro.plate("data", len(x)):
        mu = numpyro.deterministic("mu", a + b * x)
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


def _factor():
    rng = np.random.default_rng(203)
    return (rng.normal(0.4, 1.0, (3, 12)),), {}


@case(_factor, shape="numpyro.factor (a soft sum-to-zero constraint) with a plate", factors=("soft_sum_to_zero",))
def factor_soft_constraint(y):
    import numpyro
    import numpyro.distributions as dist

    with numpyro.plate("group", y.shape[0]):
        effect = numpyro.sample("effect", dist.Normal(0, 2))
    numpyro.factor("soft_sum_to_zero", dist.Normal(0, 0.01).log_prob(effect.sum()))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2))
    numpyro.sample("y", dist.Normal(effect[:, None], sigma), obs=y)


def _series():
    rng = np.random.default_rng(204)
    z = np.zeros(30)
    for t in range(1, 30):
        z[t] = 0.7 * z[t - 1] + rng.normal(0, 0.5)
    return (z + rng.normal(0, 0.3, 30),), {"sigma_y": 0.3}


@case(_series, shape="numpyro.contrib.control_flow.scan over a latent AR(1) state, known observation noise "
                     "(the time-series examples)")
def ar1_state_space_scan(y, sigma_y):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.contrib.control_flow import scan

    phi = numpyro.sample("phi", dist.Uniform(-1, 1))
    sigma_z = numpyro.sample("sigma_z", dist.HalfNormal(1))

    def transition(previous, y_t):
        z = numpyro.sample("z", dist.Normal(phi * previous, sigma_z))
        numpyro.sample("y", dist.Normal(z, sigma_y), obs=y_t)
        return z, z

    scan(transition, jnp.zeros(()), y)


def _nested():
    rng = np.random.default_rng(205)
    groups, per_group = 8, 20
    x = rng.normal(0, 1, (groups, per_group))
    alpha = rng.normal(0, 1, groups)
    p = 1 / (1 + np.exp(-(alpha[:, None] + 1.2 * x)))
    return (x,), {"y": (rng.uniform(size=p.shape) < p).astype(np.int32)}


@case(_nested, shape="nested plates (group x obs), centred hierarchical logistic regression, Bernoulli(logits=)",
      draws=500, tune=500)  # sigma_alpha mixes slowly (raw R-hat 1.08 at 300 draws)
def hierarchical_logistic_plates(x, y=None):
    import numpyro
    import numpyro.distributions as dist

    mu_alpha = numpyro.sample("mu_alpha", dist.Normal(0, 2))
    sigma_alpha = numpyro.sample("sigma_alpha", dist.HalfNormal(1))
    beta = numpyro.sample("beta", dist.Normal(0, 2))
    with numpyro.plate("group", x.shape[0], dim=-2):
        alpha = numpyro.sample("alpha", dist.Normal(mu_alpha, sigma_alpha))
        with numpyro.plate("obs", x.shape[1], dim=-1):
            numpyro.sample("y", dist.Bernoulli(logits=alpha + beta * x), obs=y)


def _mixture():
    rng = np.random.default_rng(206)
    return (np.concatenate([rng.normal(-2.5, 0.7, 60), rng.normal(2.5, 1.0, 40)]),), {}


@case(_mixture, shape="MixtureSameFamily(Categorical, Normal) in a plate, ordered means (TransformedDistribution "
                      "with OrderedTransform), vector sites via to_event, initial values (init_to_value / initvals)",
      init_values={"w": np.array([0.5, 0.5]), "mu": np.array([-1.0, 1.0]), "sigma": np.array([1.0, 1.0])})
def normal_mixture_ordered(y):
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions.transforms import OrderedTransform

    # The posterior has a local mode "both means on the left cluster, one wide component over the right", where a
    # raw chain from init_to_uniform can park (seen with the corpus seed: R-hat 1.8), so the case starts both
    # sides from the same initial values, as NumPyro's mixture tutorial does.
    w = numpyro.sample("w", dist.Dirichlet(np.ones(2)))
    mu = numpyro.sample("mu", dist.TransformedDistribution(dist.Normal(0.0, 3.0).expand([2]), OrderedTransform()))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2).expand([2]).to_event(1))
    with numpyro.plate("data", len(y)):
        numpyro.sample("y", dist.MixtureSameFamily(dist.Categorical(probs=w), dist.Normal(mu, sigma)), obs=y)


def _ordinal():
    rng = np.random.default_rng(207)
    x = rng.normal(0, 1, 80)
    latent = 1.3 * x + rng.logistic(size=80)
    return (x,), {"y": np.digitize(latent, [-1.0, 0.5, 1.5]).astype(np.int32)}


@case(_ordinal, shape="ordinal regression: OrderedLogistic with ordered cutpoints (NumPyro's ordinal example)")
def ordinal_regression(x, y=None, n_classes=4):
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions.transforms import OrderedTransform

    beta = numpyro.sample("beta", dist.Normal(0, 3))
    cutpoints = numpyro.sample("cutpoints", dist.TransformedDistribution(
        dist.Normal(0.0, 3.0).expand([n_classes - 1]), OrderedTransform()))
    with numpyro.plate("obs", len(x)):
        numpyro.sample("y", dist.OrderedLogistic(beta * x, cutpoints), obs=y)


def _lognormal():
    rng = np.random.default_rng(208)
    return (rng.normal(0, 1, (6, 10)) + rng.normal(0, 0.8, (6, 1)),), {}


@case(_lognormal, shape="handlers.reparam(TransformReparam) on a TransformedDistribution(AffineTransform) in a plate")
def transform_reparam_hierarchy(y):
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions.transforms import AffineTransform
    from numpyro.handlers import reparam
    from numpyro.infer.reparam import TransformReparam

    mu = numpyro.sample("mu", dist.Normal(0, 3))
    tau = numpyro.sample("tau", dist.HalfNormal(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1))
    with numpyro.plate("group", y.shape[0]):
        with reparam(config={"theta": TransformReparam()}):
            theta = numpyro.sample("theta", dist.TransformedDistribution(dist.Normal(0.0, 1.0),
                                                                         AffineTransform(mu, tau)))
        with numpyro.plate("obs", y.shape[1]):
            numpyro.sample("y", dist.Normal(theta, sigma), obs=y.T)
