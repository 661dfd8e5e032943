"""Shared-API records -> NumPyro distributions, and the handler that runs a shared-API model on NumPyro."""

from __future__ import annotations

import copy
from typing import Any
import numpy as np
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from resilient.distributions import IMPROPER_FAMILIES, Distribution, Mixture, Truncated, is_literal
from resilient.errors import ModelError, ResilientError
from resilient.adapters.numpyro.distributions import (
    HalfStudentT, OrderedVector, PositiveOrderedVector, StableTruncatedNormal, TruncatedByCDF, _support_between,
)
from resilient.adapters.numpyro.math import JAX_MATH


def _family_to_numpyro(record: Distribution) -> dist.Distribution:
    """The NumPyro distribution of a record, before ``shape=`` expansion."""
    p = record.params
    family = record.family
    batch = tuple(record.shape) if record.shape is not None else ()
    if family == "Normal":
        return dist.Normal(p["mu"], p["sigma"])
    if family == "HalfNormal":
        return dist.HalfNormal(p["sigma"])
    if family == "StudentT":
        return dist.StudentT(p["nu"], p["mu"], p["sigma"])
    if family == "HalfStudentT":
        return HalfStudentT(p["nu"], p["sigma"])
    if family == "Cauchy":
        return dist.Cauchy(p["alpha"], p["beta"])
    if family == "HalfCauchy":
        return dist.HalfCauchy(p["beta"])
    if family == "Laplace":
        return dist.Laplace(p["mu"], p["b"])
    if family == "Logistic":
        return dist.Logistic(p["mu"], p["s"])
    if family == "LogNormal":
        return dist.LogNormal(p["mu"], p["sigma"])
    if family == "Exponential":
        return dist.Exponential(p["lam"])
    if family == "Gamma":
        return dist.Gamma(p["alpha"], p["beta"])
    if family == "InverseGamma":
        return dist.InverseGamma(p["alpha"], p["beta"])
    if family == "Beta":
        return dist.Beta(p["alpha"], p["beta"])
    if family == "Uniform":
        return dist.Uniform(p["lower"], p["upper"])
    if family == "Flat":
        return dist.ImproperUniform(constraints.real, batch, ())
    if family == "HalfFlat":
        return dist.ImproperUniform(constraints.positive, batch, ())
    if family == "Weibull":
        return dist.Weibull(p["beta"], p["alpha"])  # NumPyro: Weibull(scale, concentration)
    if family == "Bernoulli":
        return dist.Bernoulli(probs=p["p"])
    if family == "Binomial":
        return dist.Binomial(total_count=p["n"], probs=p["p"])
    if family == "Poisson":
        return dist.Poisson(p["mu"])
    if family == "NegativeBinomial":
        return dist.NegativeBinomial2(mean=p["mu"], concentration=p["alpha"])
    if family == "Categorical":
        return dist.Categorical(probs=p["p"])
    if family == "Dirichlet":
        return dist.Dirichlet(p["a"])
    if family == "MvNormal":
        if p.get("chol") is not None:
            return dist.MultivariateNormal(p["mu"], scale_tril=p["chol"])
        return dist.MultivariateNormal(p["mu"], covariance_matrix=p["cov"])
    if family == "LKJCholesky":
        return dist.LKJCholesky(int(np.asarray(p["n"])), p["eta"])
    raise ModelError(f"The NumPyro backend has no translation for the family {family!r}.")


def _literal_all(value: Any, target: float) -> bool:
    return value is not None and is_literal(value) and bool(np.all(np.asarray(value, float) == target))


_NUMPYRO_TRUNCATABLE = (dist.Normal, dist.Cauchy, dist.StudentT, dist.Laplace, dist.Logistic)


def _with_support(d: dist.Distribution, support: constraints.Constraint) -> dist.Distribution:
    """A copy of ``d`` with another support (so another bijection to the unconstrained space)."""
    new = copy.copy(d)
    new._support = support
    return new


def _truncated_to_numpyro(record: Truncated) -> dist.Distribution:
    base = _family_to_numpyro(record.base)
    lower, upper = record.lower, record.upper
    lower_infinite = _literal_all(lower, -np.inf)
    upper_infinite = _literal_all(upper, np.inf)
    if record.base.family == "Normal" and record.stable:
        low = None if lower is None or lower_infinite else lower
        high = None if upper is None or upper_infinite else upper
        if low is None and high is None:
            return base
        return StableTruncatedNormal(base.loc, base.scale, low=low, high=high)
    if record.base.family in IMPROPER_FAMILIES:
        low = None if lower is None or lower_infinite else lower
        high = None if upper is None or upper_infinite else upper
        if record.base.family == "HalfFlat":
            low = 0.0 if low is None else jnp.maximum(low, 0.0)
        return dist.ImproperUniform(_support_between(low, high), tuple(base.batch_shape), ())
    if lower is None and upper is None:
        return base
    if type(base) in _NUMPYRO_TRUNCATABLE:
        # NumPyro's own truncation, as a NumPyro user would write it (infinite bounds included,
        # with their NaN gradient). Only the support ignores an infinite bound: NumPyro's
        # interval(0, inf) bijection maps every point to inf, which no sampler can use.
        truncated = dist.TruncatedDistribution(base, low=lower, high=upper)
        if lower_infinite or upper_infinite:
            truncated = _with_support(
                truncated,
                _support_between(None if lower_infinite else lower, None if upper_infinite else upper),
            )
        return truncated
    low = None if lower is None or lower_infinite else lower
    high = None if upper is None or upper_infinite else upper
    return TruncatedByCDF(base, low, high)


def _ordered_to_numpyro(record: Distribution) -> dist.Distribution:
    """``ordered=True``: the family's density at a vector sorted along the last axis of ``shape``, on
    ``ordered_vector`` (``positive_ordered_vector`` for a positive family), as Stan's ordered types."""
    shape = tuple(record.shape)
    base = _family_to_numpyro(record)
    if tuple(base.batch_shape) != shape:
        base = base.expand(shape)
    return (PositiveOrderedVector if record.spec.support == "positive" else OrderedVector)(base)


def _mixture_support(components: list[dist.Distribution]) -> constraints.Constraint | None:
    """The support of a mixture: the components' own where they share it, else their union where it is an
    interval with literal bounds, else the real line."""
    supports = [c.support for c in components]
    if all(s is supports[0] for s in supports):
        return supports[0]
    bounds = [(getattr(s, "lower_bound", None), getattr(s, "upper_bound", None)) for s in supports]
    if all(s in (constraints.positive, constraints.nonnegative) for s in supports):
        return constraints.nonnegative if constraints.nonnegative in supports else constraints.positive
    if all(lo is not None and hi is not None and is_literal(lo) and is_literal(hi) for lo, hi in bounds):
        return constraints.interval(np.min([np.asarray(lo, float) for lo, _ in bounds], axis=0),
                                    np.max([np.asarray(hi, float) for _, hi in bounds], axis=0))
    return constraints.real


def _mixture_to_numpyro(record: Mixture) -> dist.Distribution:
    """``Mixture(w, components)`` -> ``MixtureGeneral(Categorical(w), components)``."""
    components = [_family_to_numpyro(c) for c in record.components]
    weights = jnp.asarray(record.w)
    batch = jnp.broadcast_shapes(jnp.shape(weights)[:-1], *(tuple(c.batch_shape) for c in components))
    components = [c if tuple(c.batch_shape) == tuple(batch) else c.expand(tuple(batch)) for c in components]
    return dist.MixtureGeneral(dist.Categorical(probs=weights), components, support=_mixture_support(components))


def to_numpyro(record: Distribution | Truncated | Mixture) -> dist.Distribution:
    """Translate a shared-API record into a NumPyro distribution (``shape`` is the batch shape; for
    ``ordered=True`` its last axis is the ordered vector)."""
    if isinstance(record, Distribution) and record.ordered:
        return _ordered_to_numpyro(record)
    if isinstance(record, Mixture):
        d = _mixture_to_numpyro(record)
    else:
        d = _truncated_to_numpyro(record) if isinstance(record, Truncated) else _family_to_numpyro(record)
    shape = record.shape
    if shape is not None and tuple(shape) != tuple(d.batch_shape):
        d = d.expand(tuple(shape))
    return d


class _SharedHandler:
    """The :class:`resilient.model.SiteHandler` of the NumPyro backend."""

    math = JAX_MATH

    def sample_site(self, name: str, record: Distribution | Truncated | Mixture, observed: Any) -> Any:
        try:
            d = to_numpyro(record)
        except (ValueError, TypeError) as error:
            if isinstance(error, ResilientError):
                raise
            raise ModelError(
                f"{name} ~ {record.describe()}: NumPyro cannot build this distribution ({error}). "
                "Check the parameter shapes and `shape=`.",
                site=name,
            ) from error
        if isinstance(observed, (list, tuple)):
            observed = np.asarray(observed)
        return numpyro.sample(name, d, obs=observed)

    def deterministic_site(self, name: str, value: Any) -> Any:
        return numpyro.deterministic(name, value)

    def factor_site(self, name: str, log_density: Any) -> None:
        numpyro.factor(name, jnp.sum(log_density))
