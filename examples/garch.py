"""GARCH(1,1) returns, written twice in the shared API: with ``resilient.math.scan`` and as an unrolled loop.

``r[t] ~ Normal(mu, sqrt(s2[t]))``, ``s2[t] = omega + alpha * (r[t-1] - mu)^2 + beta * s2[t-1]``, with the
first variance ``s2[0] = sigma1^2`` given as data (as in the Stan users' guide). Both functions define the same
density; ``garch_unrolled`` builds one graph node per step, which PyMC compiles slowly for long series
(``benchmarks/garch.py`` measures it), while ``garch`` compiles the recurrence as one loop.

    resilient check-agreement examples/garch.py:garch
"""

from __future__ import annotations

import numpy as np

from resilient import math as rm
from resilient.distributions import HalfNormal, Normal, Uniform
from resilient.model import deterministic, sample

#: the parameters :func:`simulate` draws the default data with
TRUE = {"mu": 0.05, "omega": 0.1, "alpha": 0.15, "beta": 0.75}


def simulate(T: int = 200, seed: int = 20261128, mu: float = TRUE["mu"], omega: float = TRUE["omega"],
             alpha: float = TRUE["alpha"], beta: float = TRUE["beta"]) -> dict:
    """Synthetic returns from a GARCH(1,1) with fixed parameters and seed: ``{"r": (T,), "sigma1": float}``,
    ``sigma1`` being the stationary standard deviation ``sqrt(omega / (1 - alpha - beta))``."""
    rng = np.random.default_rng(seed)
    sigma1 = float(np.sqrt(omega / (1.0 - alpha - beta)))
    r = np.empty(T)
    s2 = sigma1**2
    for t in range(T):
        if t > 0:
            s2 = omega + alpha * (r[t - 1] - mu) ** 2 + beta * s2
        r[t] = mu + np.sqrt(s2) * rng.standard_normal()
    return {"r": r, "sigma1": sigma1}


#: the default data: 200 steps
data = simulate()


def _priors():
    mu = sample("mu", Normal(0, 1))
    omega = sample("omega", HalfNormal(1))
    alpha = sample("alpha", Uniform(0, 1))
    beta = sample("beta", Uniform(0, 1))
    return mu, omega, alpha, beta


def garch(r, sigma1):
    """GARCH(1,1) with the variance recurrence as ``resilient.math.scan`` (one loop on either backend)."""
    mu, omega, alpha, beta = _priors()
    r = np.asarray(r, dtype=float)

    def step(s2_previous, r_previous):
        s2 = omega + alpha * (r_previous - mu) ** 2 + beta * s2_previous
        return s2, s2

    _, later = rm.scan(step, 0.0 * omega + float(sigma1) ** 2, r[:-1])
    s2 = rm.concatenate([rm.reshape(0.0 * omega + float(sigma1) ** 2, (1,)), later])
    deterministic("sigma", rm.sqrt(s2[-1]))
    sample("r", Normal(mu, rm.sqrt(s2)), obs=r)


def garch_unrolled(r, sigma1):
    """The same model as :func:`garch` with the recurrence as a Python loop (one node per step)."""
    mu, omega, alpha, beta = _priors()
    r = np.asarray(r, dtype=float)
    s2 = [0.0 * omega + float(sigma1) ** 2]
    for t in range(1, len(r)):
        s2.append(omega + alpha * (r[t - 1] - mu) ** 2 + beta * s2[-1])
    s2 = rm.stack(s2)
    deterministic("sigma", rm.sqrt(s2[-1]))
    sample("r", Normal(mu, rm.sqrt(s2)), obs=r)
