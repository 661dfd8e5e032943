"""Small models for many fits and simulation-based calibration (tests, benchmark, demo).

Every model takes its observed values as an argument that defaults to ``None``: called without it,
the model is its own simulator (the observed site is drawn from the prior predictive), which is how
``resilient.sbc`` simulates data sets. The same model is written in the shared API, as a native NumPyro
function and as a PyMC builder, plus ``normal_narrow``: the fitted prior of ``mu`` is 4 times narrower
than the simulator's, the deliberately miscalibrated case SBC must flag.

    resilient sbc examples/sbc_models.py:normal --simulations 200 --data '{"N": 5}' --out sbc-out/
"""

from __future__ import annotations

import numpy as np

from resilient.distributions import HalfNormal, Normal
from resilient.model import sample

#: fixed data for the models here: five observations per data set (little data: the prior matters).
data = {"N": 5}


def normal(N, y=None):
    """``mu ~ Normal(0, 1)``, ``sigma ~ HalfNormal(1)``, ``y[i] ~ Normal(mu, sigma)``."""
    mu = sample("mu", Normal(0, 1))
    sigma = sample("sigma", HalfNormal(1))
    sample("y", Normal(mu, sigma, shape=N), obs=y)


def normal_narrow(N, y=None):
    """As :func:`normal` with ``mu ~ Normal(0, 0.25)``: fitted to data simulated by :func:`normal`, the
    posterior of ``mu`` is pulled towards 0, so the true ``mu`` lands in its tails (U-shaped ranks)."""
    mu = sample("mu", Normal(0, 0.25))
    sigma = sample("sigma", HalfNormal(1))
    sample("y", Normal(mu, sigma, shape=N), obs=y)


def normal_numpyro(N, y=None):
    """:func:`normal` as a native NumPyro model."""
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("N", N):
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


def normal_pymc(N, y=None):
    """:func:`normal` as a PyMC builder (returns the ``pm.Model``)."""
    import pymc as pm

    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 1.0)
        sigma = pm.HalfNormal("sigma", 1.0)
        pm.Normal("y", mu, sigma, shape=N, observed=y)
    return model


def hierarchical(J, n, y=None):
    """Groups of one normal model, non-centred: ``mu ~ Normal(0, 2)``, ``tau ~ HalfNormal(1)``,
    ``z[j] ~ Normal(0, 1)``, ``sigma ~ HalfNormal(1)``, ``y[j, i] ~ Normal(mu + tau z[j], sigma)`` for ``J`` groups of
    ``n``. A model whose sampling is most of a fit (J=8, n=50: 400 observations, 11 latents), for the
    warm-start benchmark of ``sbc`` (``benchmarks/many.py --model hierarchical``)."""
    mu = sample("mu", Normal(0, 2))
    tau = sample("tau", HalfNormal(1))
    z = sample("z", Normal(0, 1, shape=J))
    sigma = sample("sigma", HalfNormal(1))
    group = np.repeat(np.arange(J), n)
    sample("y", Normal(mu + tau * z[group], sigma, shape=J * n), obs=y)


def datasets(count: int, N: int = 5, seed: int = 0) -> list[dict]:
    """``count`` data sets for :func:`normal` (per-group fits: each group's own ``y``)."""
    rng = np.random.default_rng(seed)
    return [{"N": N, "y": rng.normal(rng.normal(0.0, 1.0), 1.0, size=N)} for _ in range(count)]
