"""The sick models of ``shared/pathologies.md`` in the shared API (P1-P9)."""

from __future__ import annotations

import numpy as np

from resilient.model import sample
from resilient import math as rm
from resilient.distributions import Flat, InverseGamma, Normal, Truncated


def motivating(sigma_prior=(2.0, 3.0)):
    """P1: a half-normal written as a truncation with an infinite upper bound."""
    sigma = sample("sigma", InverseGamma(*sigma_prior))
    sample("V", Truncated(Normal(0, sigma), lower=0, upper=np.inf))


def mirrored():
    """P2: P1 mirrored, with an infinite lower bound."""
    mu = sample("mu", Normal(0, 1))
    sample("V", Truncated(Normal(mu, 1), lower=-np.inf, upper=0))


def both_infinite():
    """P3: a truncation that truncates nothing."""
    sample("V", Truncated(Normal(0, 1), lower=-np.inf, upper=np.inf))


def far_tail(bound=40.0):
    """P4: a truncation 40 sigma out; the naive normaliser underflows in float32."""
    mu = sample("mu", Normal(0, 1))
    sample("V", Truncated(Normal(mu, 1), lower=bound))


def sqrt_of_negative(y=1.0):
    """P6: NaN log density wherever x < 0."""
    x = sample("x", Normal(0, 1))
    sample("y", Normal(rm.sqrt(x), 1), obs=y)


def improper():
    """P7: a flat prior and no data: the posterior is improper."""
    sample("x", Flat())


def negative_scale(y=0.5):
    """P9: a negative literal scale."""
    sample("y", Normal(0, -1), obs=y)
