"""Distributions NumPyro lacks: a log-space truncated Normal, HalfStudentT, truncation by CDF."""

from __future__ import annotations

import math as _math
from typing import Any
import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax import lax
from jax.scipy.special import log_ndtr, ndtri
from numpyro.distributions import constraints
from numpyro.distributions.util import promote_shapes


_HALF_LOG_2PI = 0.5 * _math.log(2.0 * _math.pi)


_LOG_2 = _math.log(2.0)


def _log1mexp(d: Any) -> Any:
    """log(1 - exp(d)) for d <= 0, accurate at both ends (Maechler's switch at -log 2)."""
    near = d > -_LOG_2
    d_near = jnp.where(near, d, -1.0)
    d_far = jnp.where(near, -1.0, d)
    return jnp.where(near, jnp.log(-jnp.expm1(d_near)), jnp.log1p(-jnp.exp(d_far)))


def _ndtri_exp(y: Any) -> Any:
    """The standard normal quantile of ``exp(y)``: finite even where ``exp(y)`` underflows."""
    finfo = jnp.finfo(jnp.result_type(y))
    tail = y < -20.0
    y_body = jnp.where(tail, -1.0, y)
    z_body = ndtri(jnp.clip(jnp.exp(y_body), finfo.tiny, 1.0 - finfo.epsneg))
    # Far lower tail: the asymptotic inverse of log Phi(z) ~ -z^2/2 - log(-z) - log(2 pi)/2,
    # refined by Newton steps on log_ndtr (whose derivative is the inverse Mills ratio).
    y_tail = jnp.where(tail, y, -30.0)
    t = -2.0 * y_tail
    z = -jnp.sqrt(t - 2.0 * _HALF_LOG_2PI - jnp.log(t))
    for _ in range(4):
        log_cdf = log_ndtr(z)
        z = z - (log_cdf - y_tail) * jnp.exp(log_cdf + 0.5 * z * z + _HALF_LOG_2PI)
    return jnp.where(tail, z, z_body)


def _support_between(low: Any, high: Any) -> constraints.Constraint:
    if low is not None and high is not None:
        return constraints.interval(low, high)
    if low is not None:
        return constraints.greater_than_eq(low)
    if high is not None:
        return constraints.less_than_eq(high)
    return constraints.real


class StableTruncatedNormal(dist.Distribution):
    """A Normal truncated to ``[low, high]`` (either bound may be ``None``) whose normaliser is
    computed in log space with ``log_ndtr``, so a bound far in a tail (``low=40`` for a standard
    normal, in float32 or float64) gives a finite log density and gradient. Sampling inverts the
    CDF in log space and stays finite there too."""

    arg_constraints = {
        "loc": constraints.real,
        "scale": constraints.positive,
        "low": constraints.dependent(is_discrete=False, event_dim=0),
        "high": constraints.dependent(is_discrete=False, event_dim=0),
    }
    reparametrized_params = ["loc", "scale", "low", "high"]
    pytree_data_fields = ("loc", "scale", "low", "high", "_support")

    def __init__(self, loc: Any = 0.0, scale: Any = 1.0, *, low: Any = None, high: Any = None,
                 validate_args: bool | None = None) -> None:
        shapes = [jnp.shape(v) for v in (loc, scale, low, high) if v is not None]
        batch_shape = lax.broadcast_shapes(*shapes)
        self.loc, self.scale = promote_shapes(loc, scale, shape=batch_shape)
        self.low = None if low is None else promote_shapes(low, shape=batch_shape)[0]
        self.high = None if high is None else promote_shapes(high, shape=batch_shape)[0]
        self._support = _support_between(low, high)
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self) -> constraints.Constraint:
        return self._support

    def _standard_bounds(self) -> tuple[Any, Any]:
        a = None if self.low is None else (self.low - self.loc) / self.scale
        b = None if self.high is None else (self.high - self.loc) / self.scale
        return a, b

    def _log_normaliser(self) -> Any:
        a, b = self._standard_bounds()
        if a is None and b is None:
            return jnp.zeros(self.batch_shape)
        if b is None:
            return log_ndtr(-a)
        if a is None:
            return log_ndtr(b)
        flip = a > 0  # both bounds above the mean: mirror into the lower tail
        lo = jnp.where(flip, -b, a)
        hi = jnp.where(flip, -a, b)
        log_lo, log_hi = log_ndtr(lo), log_ndtr(hi)
        return log_hi + _log1mexp(log_lo - log_hi)

    def log_prob(self, value: Any) -> Any:
        z = (value - self.loc) / self.scale
        log_density = -0.5 * z * z - jnp.log(self.scale) - _HALF_LOG_2PI - self._log_normaliser()
        inside = jnp.ones(jnp.shape(log_density), dtype=bool)
        if self.low is not None:
            inside = inside & (value >= self.low)
        if self.high is not None:
            inside = inside & (value <= self.high)
        return jnp.where(inside, log_density, -jnp.inf)

    def sample(self, key: Any, sample_shape: tuple[int, ...] = ()) -> Any:
        dtype = jnp.result_type(float)
        shape = tuple(sample_shape) + tuple(self.batch_shape)
        u = jax.random.uniform(key, shape=shape, minval=jnp.finfo(dtype).tiny, dtype=dtype)
        log_u = jnp.log(u)
        a, b = self._standard_bounds()
        if a is None and b is None:
            z = ndtri(u)
        elif b is None:
            z = jnp.maximum(-_ndtri_exp(log_u + log_ndtr(-a)), a)
        elif a is None:
            z = jnp.minimum(_ndtri_exp(log_u + log_ndtr(b)), b)
        else:
            flip = a > 0
            lo = jnp.where(flip, -b, a)
            hi = jnp.where(flip, -a, b)
            log_lo, log_hi = log_ndtr(lo), log_ndtr(hi)
            log_mass = log_hi + _log1mexp(log_lo - log_hi)
            z = jnp.clip(_ndtri_exp(jnp.logaddexp(log_lo, log_u + log_mass)), lo, hi)
            z = jnp.where(flip, -z, z)
        return self.loc + self.scale * z


class HalfStudentT(dist.Distribution):
    """|StudentT(df, 0, scale)|: NumPyro has no Half Student-t."""

    arg_constraints = {"df": constraints.positive, "scale": constraints.positive}
    support = constraints.positive
    reparametrized_params = ["df", "scale"]
    pytree_data_fields = ("df", "scale")

    def __init__(self, df: Any, scale: Any = 1.0, *, validate_args: bool | None = None) -> None:
        batch_shape = lax.broadcast_shapes(jnp.shape(df), jnp.shape(scale))
        self.df, self.scale = promote_shapes(df, scale)
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    def _student(self) -> dist.StudentT:
        return dist.StudentT(self.df, 0.0, self.scale)

    def sample(self, key: Any, sample_shape: tuple[int, ...] = ()) -> Any:
        return jnp.abs(self._student().sample(key, sample_shape))

    def log_prob(self, value: Any) -> Any:
        return jnp.where(value >= 0, _LOG_2 + self._student().log_prob(value), -jnp.inf)

    def cdf(self, value: Any) -> Any:
        return jnp.clip(2.0 * self._student().cdf(value) - 1.0, 0.0, 1.0)


def _support_bounds(support: constraints.Constraint) -> tuple[Any, Any]:
    """(lower, upper) of a univariate support; ``None`` where unbounded."""
    lower = getattr(support, "lower_bound", None)
    upper = getattr(support, "upper_bound", None)
    return lower, upper


class TruncatedByCDF(dist.Distribution):
    """Any continuous univariate NumPyro distribution with a ``cdf``, truncated to ``[low, high]``.

    Used for the bases NumPyro's own ``TruncatedDistribution`` does not take (Gamma, LogNormal,
    Weibull, Beta, ...). The support is the intersection with the base's support."""

    arg_constraints = {
        "low": constraints.dependent(is_discrete=False, event_dim=0),
        "high": constraints.dependent(is_discrete=False, event_dim=0),
    }
    reparametrized_params = ["low", "high"]
    pytree_data_fields = ("base_dist", "low", "high", "_support")

    def __init__(self, base_dist: dist.Distribution, low: Any = None, high: Any = None, *,
                 validate_args: bool | None = None) -> None:
        base_low, base_high = _support_bounds(base_dist.support)
        if low is not None and base_low is not None:
            low = jnp.maximum(low, base_low)
        if high is not None and base_high is not None:
            high = jnp.minimum(high, base_high)
        shapes = [tuple(base_dist.batch_shape)] + [jnp.shape(v) for v in (low, high) if v is not None]
        batch_shape = lax.broadcast_shapes(*shapes)
        self.base_dist = base_dist.expand(batch_shape) if tuple(base_dist.batch_shape) != batch_shape else base_dist
        self.low, self.high = low, high
        self._support = _support_between(
            low if low is not None else base_low, high if high is not None else base_high
        )
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self) -> constraints.Constraint:
        return self._support

    def _cdf_bounds(self) -> tuple[Any, Any]:
        cdf_low = 0.0 if self.low is None else self.base_dist.cdf(self.low)
        cdf_high = 1.0 if self.high is None else self.base_dist.cdf(self.high)
        return cdf_low, cdf_high

    def log_prob(self, value: Any) -> Any:
        if self.low is None and self.high is None:
            return self.base_dist.log_prob(value)
        if self.high is None:
            log_mass = jnp.log1p(-self.base_dist.cdf(self.low))
        elif self.low is None:
            log_mass = jnp.log(self.base_dist.cdf(self.high))
        else:
            cdf_low, cdf_high = self._cdf_bounds()
            log_mass = jnp.log(cdf_high - cdf_low)
        log_density = self.base_dist.log_prob(value) - log_mass
        inside = jnp.ones(jnp.shape(log_density), dtype=bool)
        if self.low is not None:
            inside = inside & (value >= self.low)
        if self.high is not None:
            inside = inside & (value <= self.high)
        return jnp.where(inside, log_density, -jnp.inf)

    def sample(self, key: Any, sample_shape: tuple[int, ...] = ()) -> Any:
        dtype = jnp.result_type(float)
        shape = tuple(sample_shape) + tuple(self.batch_shape)
        u = jax.random.uniform(key, shape=shape, dtype=dtype)
        cdf_low, cdf_high = self._cdf_bounds()
        try:
            value = self.base_dist.icdf(cdf_low + u * (cdf_high - cdf_low))
        except (NotImplementedError, ImportError) as error:  # no inverse CDF: init falls back
            raise NotImplementedError(f"{type(self.base_dist).__name__} has no icdf") from error
        lower, upper = self.low, self.high
        if lower is not None:
            value = jnp.maximum(value, lower)
        if upper is not None:
            value = jnp.minimum(value, upper)
        return value


class OrderedVector(dist.Distribution):
    """Stan's ``ordered``: ``base_dist`` (batch shape ``(..., K)``) on vectors sorted ascending along the last
    axis. The log density is the base family's at the vector, summed over that axis (not renormalised, as in
    Stan and PyMC's ``transform=ordered``); the support's bijection (``OrderedTransform``) brings the Jacobian."""

    arg_constraints: dict = {}
    support = constraints.ordered_vector
    pytree_data_fields = ("base_dist",)

    def __init__(self, base_dist: dist.Distribution, *, validate_args: bool | None = None) -> None:
        shape = tuple(base_dist.batch_shape) + tuple(base_dist.event_shape)
        if base_dist.event_shape or len(shape) < 1:
            raise ValueError("OrderedVector needs a univariate base with a batch shape (..., K)")
        self.base_dist = base_dist
        super().__init__(batch_shape=shape[:-1], event_shape=shape[-1:], validate_args=validate_args)

    def log_prob(self, value: Any) -> Any:
        return jnp.sum(self.base_dist.log_prob(value), axis=-1)

    def sample(self, key: Any, sample_shape: tuple[int, ...] = ()) -> Any:
        return jnp.sort(self.base_dist.sample(key, sample_shape), axis=-1)


class PositiveOrderedVector(OrderedVector):
    """Stan's ``positive_ordered``: :class:`OrderedVector` on the positive half-line."""

    support = constraints.positive_ordered_vector
