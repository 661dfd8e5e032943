"""Rewrites keep the target density up to a constant; checked against scipy at random points."""

import numpy as np
import pytest
from scipy import stats

from resilient.distributions import Cauchy, Laplace, Normal, StudentT, Truncated
from resilient.rewrites import drop_infinite_bounds, half_form, log_space_normaliser, stabilize


def log_density(dist, x):
    """A scipy reference density for the records used here."""
    if isinstance(dist, Truncated):
        base = dist.base
        lower = -np.inf if dist.lower is None else dist.lower
        upper = np.inf if dist.upper is None else dist.upper
        frozen = _scipy(base)
        inside = (x >= lower) & (x <= upper)
        return np.where(inside, frozen.logpdf(x) - np.log(frozen.cdf(upper) - frozen.cdf(lower)), -np.inf)
    return _scipy(dist).logpdf(x)


def _scipy(dist):
    p = dist.params
    return {
        "Normal": lambda: stats.norm(p.get("mu", 0), p.get("sigma", 1)),
        "HalfNormal": lambda: stats.halfnorm(0, p["sigma"]),
        "StudentT": lambda: stats.t(p["nu"], p["mu"], p["sigma"]),
        "HalfStudentT": lambda: _HalfT(p["nu"], p["sigma"]),
        "Cauchy": lambda: stats.cauchy(p["alpha"], p["beta"]),
        "HalfCauchy": lambda: stats.halfcauchy(0, p["beta"]),
        "Laplace": lambda: stats.laplace(p["mu"], p["b"]),
        "Exponential": lambda: stats.expon(0, 1 / p["lam"]),
    }[dist.family]()


class _HalfT:
    def __init__(self, nu, sigma):
        self.t = stats.t(nu, 0, sigma)

    def logpdf(self, x):
        return np.where(x >= 0, np.log(2) + self.t.logpdf(x), -np.inf)


POINTS = np.random.default_rng(7).uniform(0.6, 6.0, size=25)  # inside every support below


@pytest.mark.parametrize("before, after_family", [
    (Truncated(Normal(0, 2.0), lower=0, upper=np.inf), "HalfNormal"),
    (Truncated(Normal(0, 2.0), lower=0), "HalfNormal"),
    (Truncated(StudentT(3.0, 0, 1.5), lower=0, upper=np.inf), "HalfStudentT"),
    (Truncated(Cauchy(0, 2.0), lower=0), "HalfCauchy"),
    (Truncated(Laplace(0, 0.7), lower=0), "Exponential"),
    (Truncated(Normal(1.0, 2.0), lower=-np.inf, upper=np.inf), "Normal"),
    (Truncated(Normal(1.0, 2.0), lower=0.5, upper=np.inf), "Truncated"),
])
def test_rewrites_keep_the_density_up_to_a_constant(before, after_family):
    after, applied = stabilize(before)
    assert after.family == after_family
    assert applied, "a rewrite was expected"
    difference = log_density(before, POINTS) - log_density(after, POINTS)
    assert np.ptp(difference) < 1e-9


def test_infinite_bounds_name_which_bound():
    _, reason = drop_infinite_bounds(Truncated(Normal(0, 1), lower=0, upper=np.inf))
    assert reason.startswith("the upper bound is infinite")
    _, reason = drop_infinite_bounds(Truncated(Normal(0, 1), lower=-np.inf, upper=0))
    assert reason.startswith("the lower bound is infinite")
    new, reason = drop_infinite_bounds(Truncated(Normal(0, 1), lower=-np.inf, upper=np.inf))
    assert reason.startswith("the lower and upper bounds are infinite") and new.family == "Normal"


def test_rules_leave_healthy_records_alone():
    for rule in (drop_infinite_bounds, half_form, log_space_normaliser):
        record = Normal(0, 1)
        assert rule(record) == (record, None)
    shifted = Truncated(Normal(1.0, 1.0), lower=0)
    assert half_form(shifted) == (shifted, None)


def test_far_tail_truncation_is_marked_for_a_log_space_normaliser():
    after, applied = stabilize(Truncated(Normal(0, 1), lower=40))
    assert after.stable and [r.rule for r in applied] == ["log-space-normaliser"]


@pytest.mark.parametrize("dist, standard, target", [
    (Normal(1.5, 2.0), stats.norm(0, 1), stats.norm(1.5, 2.0)),
    (StudentT(4.0, -1.0, 0.5), stats.t(4.0, 0, 1), stats.t(4.0, -1.0, 0.5)),
    (Laplace(0.3, 2.0), stats.laplace(0, 1), stats.laplace(0.3, 2.0)),
])
def test_noncentring_maps_the_standard_law_onto_the_original(dist, standard, target):
    from resilient.numpy_math import NUMPY_MATH
    from resilient.rewrites import noncentered

    record, back = noncentered(dist, ())
    assert record.family == dist.family
    q = np.linspace(-3, 3, 13)
    assert np.allclose(target.cdf(back(q, NUMPY_MATH)), standard.cdf(q))


def test_noncentring_scale_rate_and_log_families():
    from resilient.distributions import Exponential, HalfNormal, LogNormal
    from resilient.numpy_math import NUMPY_MATH
    from resilient.rewrites import noncentered

    q = np.linspace(0.1, 4, 9)
    _, back = noncentered(HalfNormal(2.5), ())
    assert np.allclose(stats.halfnorm(0, 2.5).cdf(back(q, NUMPY_MATH)), stats.halfnorm().cdf(q))
    _, back = noncentered(Exponential(3.0), ())
    assert np.allclose(stats.expon(0, 1 / 3.0).cdf(back(q, NUMPY_MATH)), stats.expon().cdf(q))
    record, back = noncentered(LogNormal(0.5, 0.8), ())
    assert record.family == "Normal"
    assert np.allclose(stats.lognorm(0.8, 0, np.exp(0.5)).cdf(back(q - 2, NUMPY_MATH)), stats.norm().cdf(q - 2))


def test_half_form_keeps_the_batch_shape_of_a_vector_location():
    after, _ = stabilize(Truncated(Normal(np.zeros(3), 2.0), lower=0))
    assert after.family == "HalfNormal" and after.shape == (3,)
