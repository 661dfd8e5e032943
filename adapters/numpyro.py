"""The NumPyro backend: compiles a shared-API :class:`~resilient.model.Model` or a native NumPyro
model function (:class:`~resilient.model.NativeModel`) into a :class:`~resilient.backend.CompiledModel`.

What it does, in order:

* translates the shared API's distribution records into ``numpyro.distributions`` objects
  (:func:`to_numpyro`), with a log-space truncated Normal (:class:`StableTruncatedNormal`) for
  far-tail truncations;
* for native models, an effect handler (:class:`_NativeFixes`) applies the same stabilising
  rewrites as :mod:`resilient.rewrites` to NumPyro's truncated distributions, and
  ``LocScaleReparam`` non-centres the sites named in ``NativeModel.noncentered``;
* flattens the latent sites, in the order the model declares them, into one unconstrained
  vector ``x`` and builds jitted log density, gradient, per-site terms and constraining functions
  from a seeded trace of the model, so a model whose density is NaN somewhere still compiles;
* runs NUTS in chunks with one compiled ``lax.scan`` reused for every chunk, warm-up and sampling
  alike (:meth:`NumPyroCompiledModel.run_nuts`).

Precision: float64 unless the model asks for float32. jax's global x64 flag is never flipped; each
jax call runs inside ``jax.enable_x64(...)`` (jit caches are keyed on it). Imported before jax has
made its devices, this module asks XLA for one CPU device per core, so chains can run in parallel.
"""

from __future__ import annotations

import contextlib
import copy
import math as _math
import os
import re
import secrets
import sys
import time
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType, SimpleNamespace
from typing import Any, Callable, Iterator, Mapping

import numpy as np


def _backend_started() -> bool:
    """True once jax has created its devices (the device count is fixed from then on)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge._backends)
    except (ImportError, AttributeError):  # a jax without this internal: assume started
        return True


if not _backend_started():  # one XLA device per core, so chains can run in parallel (pmap)
    import numpyro as _numpyro

    if not re.search(r"--xla_force_host_platform_device_count=", os.environ.get("XLA_FLAGS", "")):
        _numpyro.set_host_device_count(os.cpu_count() or 1)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from jax import lax  # noqa: E402
from jax.scipy.special import log_ndtr, ndtri  # noqa: E402
from numpyro import handlers  # noqa: E402
from numpyro.distributions import constraints  # noqa: E402
from numpyro.distributions.distribution import (  # noqa: E402
    ExpandedDistribution,
    Independent,
    MaskedDistribution,
    validation_enabled,
)
from numpyro.distributions.transforms import biject_to  # noqa: E402
from numpyro.distributions.truncated import (  # noqa: E402
    LeftTruncatedDistribution,
    RightTruncatedDistribution,
    TwoSidedTruncatedDistribution,
)
from numpyro.distributions.util import promote_shapes, sum_rightmost  # noqa: E402
from numpyro.infer import NUTS  # noqa: E402
from numpyro.infer.initialization import init_to_median, init_to_sample, init_to_uniform  # noqa: E402
from numpyro.infer.reparam import LocScaleReparam  # noqa: E402
from numpyro.infer.util import constrain_fn, potential_energy  # noqa: E402
from numpyro.primitives import Messenger  # noqa: E402

from resilient.backend import STAT_NAMES, Chunk, NUTSRun, NUTSSettings  # noqa: E402
from resilient.distributions import Distribution, Truncated, is_literal  # noqa: E402
from resilient.errors import ModelError, ResilientError, SamplerError, UnsupportedModelError  # noqa: E402
from resilient.model import Model, NativeModel, Site, Trace, data_arguments  # noqa: E402
from resilient.rewrites import Rewrite, stabilize  # noqa: E402

__all__ = [
    "NumPyroAdapter", "NumPyroCompiledModel", "StableTruncatedNormal", "HalfStudentT", "TruncatedByCDF",
    "JAX_MATH", "to_numpyro", "INITIAL_STRATEGIES", "CHAIN_METHODS",
]

INITIAL_STRATEGIES = ("default", "uniform", "prior", "median")
CHAIN_METHODS = ("parallel", "vectorized")
_HALF_LOG_2PI = 0.5 * _math.log(2.0 * _math.pi)
_LOG_2 = _math.log(2.0)


# --------------------------------------------------------------------------------------------
# The math namespace
# --------------------------------------------------------------------------------------------

JAX_MATH = SimpleNamespace(
    exp=jnp.exp, log=jnp.log, log1p=jnp.log1p, expm1=jnp.expm1, sqrt=jnp.sqrt, square=jnp.square,
    abs=jnp.abs, sum=jnp.sum, mean=jnp.mean, prod=jnp.prod, dot=jnp.dot, matmul=jnp.matmul,
    sigmoid=jax.nn.sigmoid, logit=jax.scipy.special.logit, softplus=jax.nn.softplus, tanh=jnp.tanh,
    sin=jnp.sin, cos=jnp.cos, erf=jax.scipy.special.erf, lgamma=jax.scipy.special.gammaln,
    maximum=jnp.maximum, minimum=jnp.minimum, where=jnp.where, clip=jnp.clip, stack=jnp.stack,
    concatenate=jnp.concatenate, logsumexp=jax.scipy.special.logsumexp,
    log_softmax=jax.nn.log_softmax, softmax=jax.nn.softmax, cumsum=jnp.cumsum, zeros=jnp.zeros,
    ones=jnp.ones, arange=jnp.arange, reshape=jnp.reshape, transpose=jnp.transpose, outer=jnp.outer,
    diag=jnp.diag,
)


# --------------------------------------------------------------------------------------------
# Distributions NumPyro lacks
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Shared-API records -> NumPyro distributions
# --------------------------------------------------------------------------------------------

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
    if record.base.family in ("Flat", "HalfFlat"):
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


def to_numpyro(record: Distribution | Truncated) -> dist.Distribution:
    """Translate a shared-API record into a NumPyro distribution (``shape`` is the batch shape)."""
    d = _truncated_to_numpyro(record) if isinstance(record, Truncated) else _family_to_numpyro(record)
    shape = record.shape
    if shape is not None and tuple(shape) != tuple(d.batch_shape):
        d = d.expand(tuple(shape))
    return d


class _SharedHandler:
    """The :class:`resilient.model.SiteHandler` of the NumPyro backend."""

    math = JAX_MATH

    def sample_site(self, name: str, record: Distribution | Truncated, observed: Any) -> Any:
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


# --------------------------------------------------------------------------------------------
# Native NumPyro models: descriptions and the fix handler
# --------------------------------------------------------------------------------------------

def _concrete(value: Any) -> np.ndarray | None:
    if value is None or isinstance(value, jax.core.Tracer):
        return None
    try:
        array = np.asarray(value)
    except Exception:  # noqa: BLE001 (anything that is not an array is not a literal)
        return None
    return array if array.dtype.kind in "biuf" else None


def _equal(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return a is not None and b is not None and a.shape == b.shape and bool(np.array_equal(a, b))


def _value_text(value: Any, namer: Callable[[Any], str | None]) -> str:
    name = namer(value)
    if name:
        return name
    array = _concrete(value)
    if array is None:
        return "<expr>"
    if array.ndim == 0 or array.size == 1:
        number = array.reshape(()).item()
        if isinstance(number, float):
            return "inf" if number == np.inf else "-inf" if number == -np.inf else f"{number:g}"
        return str(number)
    return np.array2string(array, precision=4, threshold=6, separator=", ").replace("\n", "")


def _describe_numpyro(d: Any, namer: Callable[[Any], str | None]) -> str:
    """``TruncatedNormal(0, sigma, low=0, high=inf)``-style text for a NumPyro distribution."""
    if isinstance(d, ExpandedDistribution):
        return f"{_describe_numpyro(d.base_dist, namer)}.expand({tuple(d.batch_shape)})"
    if isinstance(d, Independent):
        return f"{_describe_numpyro(d.base_dist, namer)}.to_event({d.reinterpreted_batch_ndims})"
    if isinstance(d, MaskedDistribution):
        return f"{_describe_numpyro(d.base_dist, namer)}.mask(...)"
    if isinstance(d, (LeftTruncatedDistribution, RightTruncatedDistribution, TwoSidedTruncatedDistribution)):
        bounds = "".join(
            f", {b}={_value_text(getattr(d, b), namer)}" for b in ("low", "high") if hasattr(d, b)
        )
        base = d.base_dist
        if type(base) in (dist.Normal, dist.Cauchy):
            inner = ", ".join(_value_text(v, namer) for v in (base.loc, base.scale))
            return f"Truncated{type(base).__name__}({inner}{bounds})"
        return f"TruncatedDistribution({_describe_numpyro(base, namer)}{bounds})"
    if isinstance(d, dist.ImproperUniform):
        return f"ImproperUniform({type(d.support).__name__.lstrip('_')})"
    values = [vars(d).get(k) for k in getattr(type(d), "arg_constraints", {})]
    parts = [_value_text(v, namer) for v in values if v is not None]
    name = type(d).__name__
    for suffix in ("Probs", "Logits"):
        if name.endswith(suffix) and name != suffix:
            name = name[: -len(suffix)]
    return f"{name}({', '.join(parts)})"


def _parameter_values(d: Any) -> list[Any]:
    """The parameter values of a NumPyro distribution (truncation bounds included)."""
    if isinstance(d, (ExpandedDistribution, Independent, MaskedDistribution)):
        return _parameter_values(d.base_dist)
    if isinstance(d, (LeftTruncatedDistribution, RightTruncatedDistribution, TwoSidedTruncatedDistribution)):
        return _parameter_values(d.base_dist) + [getattr(d, b, None) for b in ("low", "high")]
    return [vars(d).get(k) for k in getattr(type(d), "arg_constraints", {})]


def _native_text(record: Any, namer: Callable[[Any], str | None]) -> str:
    """A rewrite record in NumPyro's words: ``TruncatedNormal(0, sigma, low=0)``, ``HalfNormal(sigma)``."""
    if isinstance(record, Truncated):
        base = record.base.describe(namer)
        bounds = "".join(
            f", {word}={(namer(v) if namer else None) or _value_text(v, lambda _: None)}"
            for word, v in (("low", record.lower), ("high", record.upper)) if v is not None
        )
        if record.base.family in ("Normal", "Cauchy"):
            return f"Truncated{base[:-1]}{bounds})"
        return f"TruncatedDistribution({base}{bounds})"
    return record.describe(namer)


# NumPyro base class -> (resilient family, ((numpyro attribute, resilient parameter), ...))
_NATIVE_BASES: dict[type, tuple[str, tuple[tuple[str, str], ...]]] = {
    dist.Normal: ("Normal", (("loc", "mu"), ("scale", "sigma"))),
    dist.Cauchy: ("Cauchy", (("loc", "alpha"), ("scale", "beta"))),
    dist.StudentT: ("StudentT", (("df", "nu"), ("loc", "mu"), ("scale", "sigma"))),
    dist.Laplace: ("Laplace", (("loc", "mu"), ("scale", "b"))),
    dist.Logistic: ("Logistic", (("loc", "mu"), ("scale", "s"))),
}
_TRUNCATED_TYPES = (LeftTruncatedDistribution, RightTruncatedDistribution, TwoSidedTruncatedDistribution)


def _unwrap(d: Any) -> tuple[Any, Callable[[Any], Any]]:
    """The innermost distribution under expand/to_event/mask wrappers, and a function that
    puts a replacement back under the same wrappers."""
    if isinstance(d, ExpandedDistribution):
        inner, rewrap = _unwrap(d.base_dist)
        shape = tuple(d.batch_shape)
        return inner, lambda new: rewrap(new).expand(shape)
    if isinstance(d, Independent):
        inner, rewrap = _unwrap(d.base_dist)
        ndims = d.reinterpreted_batch_ndims
        return inner, lambda new: rewrap(new).to_event(ndims)
    if isinstance(d, MaskedDistribution):
        inner, rewrap = _unwrap(d.base_dist)
        mask = d._mask
        return inner, lambda new: rewrap(new).mask(mask)
    return d, lambda new: new


def _truncation_record(d: Any, literals: Mapping[str, np.ndarray]) -> Truncated | None:
    """The resilient record of a NumPyro truncated distribution; ``literals`` replaces values
    known (from the compile-time trace) to be constants, so the rules see them as literals."""
    spec = _NATIVE_BASES.get(type(d.base_dist))
    if spec is None:
        return None
    family, names = spec
    params = {}
    for attribute, pname in names:
        params[pname] = literals.get(attribute, getattr(d.base_dist, attribute))
    base = Distribution(family, MappingProxyType(params))
    lower = literals.get("low", getattr(d, "low", None))
    upper = literals.get("high", getattr(d, "high", None))
    try:
        return Truncated(base, lower=lower, upper=upper)
    except ResilientError:
        return None


def _stabilize_native(record: Any, namer: Callable[[Any], str | None]) -> tuple[Any, tuple[Rewrite, ...]]:
    """:func:`resilient.rewrites.stabilize`, with each step described in NumPyro's words."""
    return stabilize(record, describe=lambda each: _native_text(each, namer))


@dataclass
class _SiteNotes:
    description: str = ""
    rewrites: tuple[Rewrite, ...] = ()
    literals: Mapping[str, np.ndarray] | None = None  # None: not a truncation we handle
    inputs: tuple[str, ...] = ()  # sites whose values are parameters of this one


class _NativeFixes(Messenger):
    """Applies :mod:`resilient.rewrites` to NumPyro's truncated distributions by swapping
    ``msg["fn"]``: infinite bounds dropped, Half- forms, log-space normaliser.

    Two concrete runs at different random points (``learning`` 1 and 2) name every value by the
    site that made it and find the parameters that are constants: unnamed, and equal at both points
    (a value computed from a latent variable differs). The second run writes a note per site; later
    runs (under jit, where every value is a tracer) apply the same decisions by site name. With
    ``fix=False`` the density is left as written and only the rewrites are noted (a literal
    infinite bound still stops shaping the support, whose bijection would otherwise map every point
    to infinity)."""

    def __init__(self, fn: Callable, fix: bool) -> None:
        super().__init__(fn)
        self.fix = fix
        self.learning = 0  # 0: applying notes; 1, 2: the two learning runs
        self.notes: dict[str, _SiteNotes] = {}
        self._names: dict[int, str] = {}
        self._first_literals: dict[str, dict[str, np.ndarray]] = {}
        self._first_values: dict[str, list[np.ndarray | None]] = {}

    def start_learning(self, run: int) -> None:
        self.learning = run
        self._names.clear()

    def name_of(self, value: Any) -> str | None:
        return self._names.get(id(value))

    def _literals(self, d: Any) -> dict[str, np.ndarray]:
        found = {}
        candidates = [(a, getattr(d.base_dist, a, None)) for a in ("df", "loc", "scale")]
        candidates += [(a, getattr(d, a, None)) for a in ("low", "high")]
        for attribute, value in candidates:
            if value is None or self.name_of(value) is not None:
                continue
            array = _concrete(value)
            if array is not None:
                found[attribute] = np.asarray(array, dtype=float)
        return found

    def process_message(self, msg: dict) -> None:
        if msg["type"] != "sample" or _is_unit(msg):
            return
        name = msg["name"]
        inner, rewrap = _unwrap(msg["fn"])
        if self.learning == 1:
            self._first_values[name] = [_concrete(v) for v in _parameter_values(msg["fn"])]
            if isinstance(inner, _TRUNCATED_TYPES):
                self._first_literals[name] = self._literals(inner)
            return
        if self.learning == 2:
            values = _parameter_values(msg["fn"])
            first = self._first_values.get(name, [None] * len(values))
            varying = {  # unnamed values that moved with the random point: expressions of latents
                id(v): "<expr>" for v, before in zip(values, first)
                if v is not None and self.name_of(v) is None
                and not (before is not None and _equal(before, _concrete(v)))
            }

            def namer(value: Any) -> str | None:
                return self.name_of(value) or varying.get(id(value))

            names = (self.name_of(v) for v in values if v is not None)
            notes = _SiteNotes(description=_describe_numpyro(msg["fn"], namer),
                               inputs=tuple(dict.fromkeys(n for n in names if n)))
            if isinstance(inner, _TRUNCATED_TYPES):
                first_literals = self._first_literals.get(name, {})
                literals = {k: v for k, v in self._literals(inner).items() if _equal(first_literals.get(k), v)}
                record = _truncation_record(inner, literals)
                if record is not None:
                    notes.literals = literals
                    _, notes.rewrites = _stabilize_native(record, namer)
            self.notes[name] = notes
        notes = self.notes.get(name)
        if notes is None or notes.literals is None or not isinstance(inner, _TRUNCATED_TYPES):
            return
        record = _truncation_record(inner, notes.literals)
        if record is None:
            return
        if self.fix and notes.rewrites:
            stable, _ = _stabilize_native(record, lambda _: None)
            new = to_numpyro(stable)
            if tuple(new.batch_shape) != tuple(inner.batch_shape):
                new = new.expand(tuple(inner.batch_shape))
            msg["fn"] = rewrap(new)
            return
        lower_infinite = _literal_all(record.lower, -np.inf)
        upper_infinite = _literal_all(record.upper, np.inf)
        if lower_infinite or upper_infinite:
            support = _support_between(
                None if lower_infinite else getattr(inner, "low", None),
                None if upper_infinite else getattr(inner, "high", None),
            )
            msg["fn"] = rewrap(_with_support(inner, support))

    def postprocess_message(self, msg: dict) -> None:
        if self.learning and msg["type"] in ("sample", "deterministic") and msg.get("value") is not None:
            self._names[id(msg["value"])] = msg["name"]


# --------------------------------------------------------------------------------------------
# The compiled model
# --------------------------------------------------------------------------------------------

def _is_unit(site: dict) -> bool:
    return type(site.get("fn")).__name__ == "Unit"


def _is_real(support: constraints.Constraint) -> bool:
    return support is constraints.real or (
        isinstance(support, constraints.independent) and support.base_constraint is constraints.real
    )


_STRATEGIES = {
    "default": lambda: init_to_uniform(radius=2),
    "uniform": lambda: init_to_uniform(radius=2),
    "prior": lambda: init_to_sample,
    "median": lambda: init_to_median(num_samples=15),
}


@dataclass
class _Runner:
    """NUTS's compiled init and chunk functions, reused across runs. Both take the target
    acceptance as an argument, so the loop's ``target_accept`` ladder does not recompile."""

    init: Callable
    chunk: Callable
    length: int


class NumPyroCompiledModel:
    """A model compiled for NumPyro; see :class:`resilient.backend.CompiledModel`."""

    backend = "numpyro"

    def __init__(self, model_fn: Callable, *, float32: bool, chain_method: str | None, name: str) -> None:
        self._model_fn = model_fn
        self.float32 = float32
        self.name = name
        self._chain_method = chain_method
        self.sites: dict[str, Site] = {}
        self._observed: dict[str, np.ndarray] = {}
        self._latent_shapes: dict[str, tuple[int, ...]] = {}
        self._unconstrained_shapes: dict[str, tuple[int, ...]] = {}
        self._blocks: dict[str, slice] = {}
        self.latent_names: tuple[str, ...] = ()
        self.dimension = 0
        self._jitted: dict[str, Callable] = {}
        self._runners: dict[tuple, _Runner] = {}

    # -- set-up -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def precision(self) -> Iterator[None]:
        """The context every jax call of this model runs in: its precision, and NumPyro's argument
        validation off (it would raise on a NaN parameter in an eager trace, and a model that is NaN
        somewhere must still compile so that preflight can say where)."""
        with jax.enable_x64(not self.float32), validation_enabled(False):
            yield

    @property
    def dtype(self) -> Any:
        return np.float32 if self.float32 else np.float64

    def _trace_once(self, seed: int = 0) -> dict:
        """A concrete trace at a seeded uniform(-2, 2) point: shapes and sites, no validity search."""
        seeded = handlers.seed(self._model_fn, rng_seed=seed)
        substituted = handlers.substitute(seeded, substitute_fn=init_to_uniform(radius=2))
        return handlers.trace(substituted).get_trace()

    def _layout(self, model_trace: dict) -> None:
        start = 0
        names = []
        for name, site in model_trace.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            if site["fn"].support.is_discrete:
                raise ModelError(
                    f"Site `{name}` is a discrete latent variable; NUTS needs every latent variable to be "
                    "continuous. Marginalise it out (sum over its values) or pass its values as observed data.",
                    site=name,
                )
            shape = tuple(jnp.shape(site["value"]))
            unconstrained = tuple(biject_to(site["fn"].support).inverse_shape(shape))
            size = int(np.prod(unconstrained, dtype=int))
            names.append(name)
            self._latent_shapes[name] = shape
            self._unconstrained_shapes[name] = unconstrained
            self._blocks[name] = slice(start, start + size)
            start += size
        self.latent_names = tuple(names)
        self.dimension = start
        self._observed = {
            name: np.asarray(site["value"])
            for name, site in model_trace.items()
            if site["type"] == "sample" and site["is_observed"] and not _is_unit(site)
        }

    # -- flattening ---------------------------------------------------------------------------

    def blocks(self) -> dict[str, slice]:
        return dict(self._blocks)

    def unravel(self, x: Any) -> dict[str, Any]:
        """Unconstrained values by latent name from the flat vector (jax-traceable)."""
        return {
            name: jnp.reshape(x[self._blocks[name]], self._unconstrained_shapes[name])
            for name in self.latent_names
        }

    def _input(self, x: Any) -> np.ndarray:
        """``x`` checked and cast to the model's dtype; a NumPy array, which a jitted function
        takes without the dispatch ``jnp.asarray`` costs (most of an evaluation on small models)."""
        array = np.asarray(x, dtype=float).reshape(-1)
        if array.shape != (self.dimension,):
            raise ValueError(
                f"`x` must be a vector of length {self.dimension} (the model's unconstrained dimension), "
                f"got shape {np.shape(x)}."
            )
        return array.astype(self.dtype)

    # -- pure functions of x (jax-traceable) ---------------------------------------------------

    def _potential(self, x: Any) -> Any:
        return potential_energy(self._model_fn, (), {}, self.unravel(x))

    def _log_density(self, x: Any) -> Any:
        return -self._potential(x)

    def _site_terms(self, x: Any) -> dict[str, Any]:
        params = self.unravel(x)
        log_jacobians: dict[str, Any] = {}

        def substitute_fn(site: dict) -> Any:
            name = site["name"]
            if site["type"] != "sample" or name not in params:
                return None
            p = params[name]
            support = site["fn"].support
            if _is_real(support):
                return p
            transform = biject_to(support)
            value = transform(p)
            log_det = transform.log_abs_det_jacobian(p, value)
            log_det = sum_rightmost(log_det, jnp.ndim(log_det) - jnp.ndim(value) + len(site["fn"].event_shape))
            if site.get("scale") is not None:
                log_det = site["scale"] * log_det
            log_jacobians[name] = jnp.sum(log_det)
            return value

        model_trace = handlers.trace(handlers.substitute(self._model_fn, substitute_fn=substitute_fn)).get_trace()
        terms = {}
        for name, site in model_trace.items():
            if site["type"] != "sample":
                continue
            log_prob = site["fn"].log_prob(site["value"])
            if site.get("scale") is not None:
                log_prob = site["scale"] * log_prob
            terms[name] = jnp.sum(log_prob) + log_jacobians.get(name, 0.0)
        return terms

    def _constrain(self, x: Any) -> dict[str, Any]:
        return constrain_fn(self._model_fn, (), {}, self.unravel(x), return_deterministic=True)

    def _initial(self, strategy: str, key: Any) -> Any:
        seeded = handlers.seed(self._model_fn, rng_seed=key)
        substituted = handlers.substitute(seeded, substitute_fn=_STRATEGIES[strategy]())
        model_trace = handlers.trace(substituted).get_trace()
        parts = []
        for name in self.latent_names:
            site = model_trace[name]
            value = site["value"]
            unconstrained = value if _is_real(site["fn"].support) else biject_to(site["fn"].support).inv(value)
            parts.append(jnp.reshape(unconstrained, (-1,)))
        if not parts:
            return jnp.zeros((0,))
        return jnp.concatenate(parts).astype(jnp.result_type(float))

    def _unconstrain(self, values: Mapping[str, Any]) -> Any:
        model_trace = handlers.trace(handlers.substitute(self._model_fn, data=dict(values))).get_trace()
        parts = []
        for name in self.latent_names:
            site = model_trace[name]
            value = site["value"]
            unconstrained = value if _is_real(site["fn"].support) else biject_to(site["fn"].support).inv(value)
            parts.append(jnp.reshape(unconstrained, (-1,)))
        return jnp.concatenate(parts) if parts else jnp.zeros((0,))

    def _function(self, name: str) -> Callable:
        if name not in self._jitted:
            if name == "value_and_grad":
                function = jax.value_and_grad(self._log_density)
            elif name == "site_terms":
                function = self._site_terms
            elif name == "site_gradients":
                # One reverse pass per site, not a Jacobian of all terms: there a zero cotangent
                # times another site's NaN partial would spread that NaN to every row.
                def gradients(x):
                    names = tuple(self._site_terms(x))
                    return {site: jax.grad(lambda y, site=site: self._site_terms(y)[site])(x) for site in names}

                function = gradients
            elif name == "constrain":
                function = self._constrain
            elif name.startswith("initial:"):
                function = partial(self._initial, name.split(":", 1)[1])
            elif name == "unconstrain":
                function = self._unconstrain
            else:  # pragma: no cover - internal names only
                raise KeyError(name)
            self._jitted[name] = jax.jit(function)
        return self._jitted[name]

    # -- CompiledModel ------------------------------------------------------------------------

    def log_density(self, x: np.ndarray) -> float:
        """The value half of :meth:`log_density_and_gradient`: one jitted function for both saves
        a compilation (0.1-0.3 s) on every model, for a gradient that costs microseconds here."""
        return self.log_density_and_gradient(x)[0]

    def log_density_and_gradient(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        with self.precision():
            value, gradient = self._function("value_and_grad")(self._input(x))
            return float(value), np.asarray(gradient, dtype=np.float64)

    def site_log_densities(self, x: np.ndarray) -> dict[str, float]:
        with self.precision():
            terms = self._function("site_terms")(self._input(x))
            return {name: float(value) for name, value in terms.items()}

    def site_gradients(self, x: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        with self.precision():
            gradients = self._function("site_gradients")(self._input(x))
            return {
                site: {latent: np.asarray(gradient[block], dtype=np.float64) for latent, block in self._blocks.items()}
                for site, gradient in gradients.items()
            }

    def constrain(self, x: np.ndarray) -> dict[str, np.ndarray]:
        with self.precision():
            values = self._function("constrain")(self._input(x))
            return {name: np.asarray(value) for name, value in values.items()}

    def unconstrain(self, values: Mapping[str, Any]) -> np.ndarray:
        missing = [name for name in self.latent_names if name not in values]
        if missing:
            raise ValueError(
                f"`values` must hold every latent variable ({', '.join(self.latent_names)}); "
                f"missing: {', '.join(missing)}."
            )
        latent = {}
        for name in self.latent_names:
            array = np.asarray(values[name], dtype=float)
            try:
                latent[name] = np.broadcast_to(array, self._latent_shapes[name]).astype(self.dtype)
            except ValueError as error:
                raise ValueError(
                    f"`values[{name!r}]` must have shape {self._latent_shapes[name]}, got {array.shape}."
                ) from error
        with self.precision():
            return np.asarray(self._function("unconstrain")(latent), dtype=np.float64)

    def initial_point(self, strategy: str = "default", random_seed: int | None = None) -> np.ndarray:
        if strategy not in INITIAL_STRATEGIES:
            raise ValueError(
                f"`strategy` must be one of {', '.join(repr(s) for s in INITIAL_STRATEGIES)}, got {strategy!r}."
            )
        seed = secrets.randbits(31) if random_seed is None else int(random_seed)
        if strategy in ("default", "uniform"):  # init_to_uniform(radius=2), drawn without a model trace
            return np.random.default_rng(seed).uniform(-2.0, 2.0, self.dimension)
        with self.precision():  # prior draws run many small random kernels: one compilation is cheaper
            point = self._function(f"initial:{strategy}")(jax.random.PRNGKey(seed % 2**32))
            return np.asarray(point, dtype=np.float64)

    def observed_data(self) -> dict[str, np.ndarray]:
        return {name: value.copy() for name, value in self._observed.items()}

    # -- NUTS ---------------------------------------------------------------------------------

    def chain_method(self, chains: int) -> str:
        """``parallel`` (pmap, one device per chain) where there are enough devices, else ``vectorized``."""
        method = self._chain_method
        if method is None or method == "parallel":
            return "parallel" if jax.local_device_count() >= chains else "vectorized"
        return method

    def _runner(self, settings: NUTSSettings, method: str, resume_from: int | None = None) -> _Runner:
        length = max(1, min(settings.chunk_size, max(settings.tune, settings.draws)))
        key = (settings.chains, method, settings.tune, settings.max_tree_depth, length)
        if key in self._runners:
            return self._runners[key]
        if resume_from is not None and resume_from >= settings.tune:
            # Past warm-up every runner whose warm-up ended by then takes the same steps: reuse one.
            for (chains, other_method, tune, *rest), runner in self._runners.items():
                if (chains, other_method, *rest) == (key[0], key[1], *key[3:]) and tune <= resume_from:
                    return runner
        tune = settings.tune

        def kernel_from(rng_key, z, target):
            """A NUTS kernel for ``target`` (traced) and its first state. NumPyro builds the
            sampling step, with the target inside its warm-up adaptation, in ``init``; the
            chunk function calls it in its own trace and uses only that step (XLA drops the
            rest), so a new target reuses the compiled code."""
            kernel = NUTS(potential_fn=self._potential, target_accept_prob=target,
                          max_tree_depth=settings.max_tree_depth)
            return kernel, kernel.init(rng_key, tune, init_params=z, model_args=(), model_kwargs={})

        def init_one(rng_key, z, target):
            return kernel_from(rng_key, z, target)[1]

        def chunk_one(state, n, target):
            kernel, _ = kernel_from(state.rng_key, state.z, target)

            def step(current):
                return kernel.sample(current, (), {})

            def body(carry, k):
                new = lax.cond(k < n, step, lambda s: s, carry)
                stats = (new.potential_energy, new.energy, new.num_steps, new.accept_prob,
                         new.diverging, new.adapt_state.step_size)
                return new, (new.z, stats)

            state, (zs, stats) = lax.scan(body, state, jnp.arange(length))
            posterior = jax.vmap(self._constrain)(zs)
            return state, posterior, stats

        if method == "parallel":
            devices = jax.local_devices()[: settings.chains]
            init = jax.pmap(init_one, in_axes=(0, 0, None), devices=devices)
            chunk = jax.pmap(chunk_one, in_axes=(0, None, None), devices=devices)
        else:
            init = jax.jit(jax.vmap(init_one, in_axes=(0, 0, None)))
            chunk = jax.jit(jax.vmap(chunk_one, in_axes=(0, None, None)))
        runner = _Runner(init, chunk, length)
        self._runners[key] = runner
        return runner

    def _starting_points(self, settings: NUTSSettings, seed: int) -> tuple[np.ndarray, bool]:
        if settings.initial_points is not None:
            points = np.asarray(settings.initial_points, dtype=np.float64)
            if points.shape != (settings.chains, self.dimension):
                raise ValueError(
                    f"`initial_points` must have shape (chains, dimension) = ({settings.chains}, {self.dimension}), "
                    f"got {points.shape}."
                )
            return points, False
        seeds = np.random.SeedSequence(seed).generate_state(settings.chains)
        return np.stack([self.initial_point("default", int(s)) for s in seeds]), True

    def run_nuts(self, settings: NUTSSettings, on_chunk: Callable[[Chunk], bool]) -> NUTSRun:
        method = self.chain_method(settings.chains)
        if method not in CHAIN_METHODS:
            raise ValueError(
                f"`chain_method` must be one of {', '.join(repr(m) for m in CHAIN_METHODS)}, got {method!r}."
            )
        seed = secrets.randbits(31) if settings.random_seed is None else int(settings.random_seed)
        chains = settings.chains
        extra: dict[str, Any] = {"chain_method": method, "random_seed": seed}
        warmup_seconds = sampling_seconds = 0.0
        started = time.monotonic()
        progress: Any = _NoProgress()
        try:
            with self.precision():
                resume_from = None
                if settings.resume_state is not None:
                    resume_from = _resume_iteration(settings.resume_state, chains, self.dimension)
                runner = self._runner(settings, method, resume_from)
                target = np.asarray(settings.target_accept, self.dtype)  # an argument: no recompile per target
                if settings.resume_state is not None:
                    state = settings.resume_state
                    warmup_start = min(resume_from, settings.tune)
                    extra["resumed_from_iteration"] = resume_from
                else:
                    with _jax_failure("while starting the chains"):
                        state, warmup_start = self._initial_state(runner, settings, seed, target), 0
                warmup_seconds += time.monotonic() - started
                progress = _progress(settings, settings.tune - warmup_start + settings.draws)
                phases = ((True, warmup_start, settings.tune), (False, 0, settings.draws))
                for warmup, start, stop in phases:
                    position = start
                    while position < stop:
                        if settings.deadline is not None and time.monotonic() > settings.deadline:
                            return NUTSRun(False, "deadline", warmup_seconds, sampling_seconds, extra)
                        n = min(runner.length, stop - position)
                        tic = time.monotonic()
                        phase = "warm-up" if warmup else "sampling"
                        with _jax_failure(f"in {phase} iterations {position}-{position + n - 1}"):
                            state, chunk = self._chunk(runner, state, n, position, warmup, chains, target)
                        elapsed = time.monotonic() - tic
                        if warmup:
                            warmup_seconds += elapsed
                        else:
                            sampling_seconds += elapsed
                        position += n
                        progress.update(n)
                        if on_chunk(chunk) is False:
                            return NUTSRun(False, "stopped", warmup_seconds, sampling_seconds, extra)
                return NUTSRun(True, "", warmup_seconds, sampling_seconds, extra)
        except KeyboardInterrupt:
            return NUTSRun(False, "interrupted", warmup_seconds, sampling_seconds, extra)
        finally:
            progress.close()

    def _initial_state(self, runner: _Runner, settings: NUTSSettings, seed: int, target: np.ndarray) -> Any:
        chains = settings.chains
        points, searched = self._starting_points(settings, seed)
        keys = jax.random.split(jax.random.PRNGKey(seed % 2**32), chains)
        state = jax.device_get(runner.init(keys, jnp.asarray(points.astype(self.dtype)), target))
        if searched:  # like NumPyro: retry chains whose start has a non-finite density or gradient
            for attempt in range(1, 20):
                valid = np.isfinite(state.potential_energy) & np.all(np.isfinite(state.z_grad), axis=-1)
                if valid.all():
                    break
                retry = np.random.SeedSequence([seed, attempt]).generate_state(chains)
                for chain in np.flatnonzero(~valid):
                    points[chain] = self.initial_point("default", int(retry[chain]))
                state = jax.device_get(runner.init(keys, jnp.asarray(points.astype(self.dtype)), target))
        return state

    def _chunk(self, runner: _Runner, state: Any, n: int, start: int, warmup: bool,
               chains: int, target: np.ndarray) -> tuple[Any, Chunk]:
        new_state, posterior, stats = jax.device_get(runner.chunk(state, np.int32(n), target))
        potential, energy, num_steps, accept_prob, diverging, step_size = (s[:, :n] for s in stats)
        num_steps = np.asarray(num_steps, dtype=np.int64)
        tree_depth = np.where(num_steps > 0, np.floor(np.log2(np.maximum(num_steps, 1))).astype(np.int64) + 1, 0)
        sample_stats = {
            "diverging": np.asarray(diverging, dtype=bool),
            "tree_depth": tree_depth,
            "n_steps": num_steps,
            "energy": np.asarray(energy),
            "lp": -np.asarray(potential),
            "acceptance_rate": np.asarray(accept_prob),
            "step_size": np.asarray(step_size),
        }
        assert tuple(sample_stats) == STAT_NAMES
        chunk = Chunk(
            chains=tuple(range(chains)),
            start=start,
            warmup=warmup,
            posterior={name: np.asarray(value)[:, :n] for name, value in posterior.items()},
            sample_stats=sample_stats,
            state=new_state,
        )
        return new_state, chunk


def _resume_iteration(state: Any, chains: int, dimension: int) -> int:
    """The iteration a saved sampler state stopped at (the same for every chain)."""
    z = np.asarray(getattr(state, "z", None))
    if not hasattr(state, "i") or z.shape != (chains, dimension):
        raise ValueError(
            f"`resume_state` must be the state of a Chunk from a NumPyro run of this model with {chains} chains "
            f"(z of shape ({chains}, {dimension})), got {type(state).__name__} with z of shape {z.shape}."
        )
    return int(np.asarray(state.i).reshape(-1)[0])


@contextlib.contextmanager
def _jax_failure(where: str) -> Iterator[None]:
    """JAX failing while it runs NUTS (device out of memory, a host callback that raised) as a
    :class:`SamplerError`; the chunks before it have reached ``on_chunk``."""
    try:
        yield
    except jax.errors.JaxRuntimeError as error:
        lines = str(error).strip().splitlines() or [type(error).__name__]
        text = lines[0].removesuffix(" Traceback (most recent call last):")
        if len(lines) > 1 and "Traceback" in lines[0]:  # a host callback raised: say what it raised
            text += f" {lines[-1].strip()}"
        memory = "RESOURCE_EXHAUSTED" in text
        raise SamplerError(f"JAX stopped the NumPyro run {where}: {text}"
                           + ("; the device ran out of memory" if memory else ""),
                           backend="numpyro", kind="resources" if memory else "crash") from error


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(settings: NUTSSettings, total: int) -> Any:
    """A per-chunk progress bar (draws per chain) when asked for, else nothing."""
    if not settings.progressbar:
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(total=total, desc="NUTS (numpyro)", unit="draw")


# --------------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------------

class NumPyroAdapter:
    """Compiles shared-API models and native NumPyro model functions for NumPyro.

    ``chain_method``: ``"parallel"`` (pmap, one XLA device per chain), ``"vectorized"`` (vmap), or
    ``None``: parallel where ``jax.local_device_count() >= chains``, else vectorized.
    """

    name = "numpyro"

    def __init__(self, chain_method: str | None = None) -> None:
        if chain_method is not None and chain_method not in CHAIN_METHODS:
            raise ValueError(
                f"`chain_method` must be one of {', '.join(repr(m) for m in CHAIN_METHODS)} or None, "
                f"got {chain_method!r}."
            )
        self.chain_method = chain_method

    def compile(self, model: Any) -> NumPyroCompiledModel:
        if isinstance(model, Model):
            return self._compile_shared(model)
        if isinstance(model, NativeModel):
            if model.backend != "numpyro":
                raise UnsupportedModelError(
                    f"The NumPyro backend cannot run a native {model.backend!r} model. "
                    f"Use backend={model.backend!r}, or write the model in the shared API."
                )
            if not callable(model.model):
                raise UnsupportedModelError(
                    f"A native NumPyro model must be a function, got {type(model.model).__name__}."
                )
            return self._compile_native(model)
        raise UnsupportedModelError(
            f"The NumPyro backend compiles resilient.Model or NativeModel(backend='numpyro'), "
            f"got {type(model).__name__}."
        )

    def _compile_shared(self, model: Model) -> NumPyroCompiledModel:
        args, kwargs = data_arguments(model.args, model.kwargs)
        model = model.with_options(args=args, kwargs=kwargs)
        handler = _SharedHandler()
        recorded: dict[str, dict[str, Site]] = {}

        def numpyro_model() -> None:
            sites = Trace(model, handler).run()
            recorded.setdefault("sites", sites)

        compiled = NumPyroCompiledModel(numpyro_model, float32=model.float32, chain_method=self.chain_method,
                                        name=model.name)
        with compiled.precision():
            model_trace = _run_model(compiled)
            compiled.sites = dict(recorded.get("sites", {}))
            compiled._layout(model_trace)
        return compiled

    def _compile_native(self, model: NativeModel) -> NumPyroCompiledModel:
        args, kwargs = data_arguments(model.args, model.kwargs)
        user_fn = model.model

        def numpyro_model() -> Any:
            return user_fn(*args, **kwargs)

        fixes = _NativeFixes(numpyro_model, fix=model.fix)
        model_fn: Callable = fixes
        noncentered = frozenset(model.noncentered)
        if noncentered:
            model_fn = handlers.reparam(fixes, config={name: LocScaleReparam(0) for name in noncentered})
        compiled = NumPyroCompiledModel(model_fn, float32=model.float32, chain_method=self.chain_method,
                                        name=model.name)
        with compiled.precision():
            try:
                fixes.start_learning(1)
                _run_model(compiled, seed=1)
                fixes.start_learning(2)
                model_trace = _run_model(compiled)
            finally:
                fixes.start_learning(0)
            missing = sorted(n for n in noncentered if f"{n}_decentered" not in model_trace)
            if missing:
                latent = [n for n, s in model_trace.items() if s["type"] == "sample" and not s["is_observed"]]
                raise ModelError(
                    f"Cannot non-centre {', '.join(f'`{n}`' for n in missing)}: the model has no latent site of that "
                    f"name. Its latent sites are: {', '.join(latent) or 'none'}.",
                    site=missing[0],
                )
            compiled.sites = _native_sites(model_trace, fixes, noncentered)
            compiled._layout(model_trace)
        return compiled


def _run_model(compiled: NumPyroCompiledModel, seed: int = 0) -> dict:
    """The compile-time trace; a failure inside the user's model is a model error."""
    try:
        return compiled._trace_once(seed)
    except ResilientError:
        raise
    except Exception as error:  # noqa: BLE001 - the model function raised: report it as the model's
        raise ModelError(
            f"Running the model {compiled.name!r} under NumPyro failed: {type(error).__name__}: {error}"
        ) from error


def _native_sites(model_trace: dict, fixes: _NativeFixes, noncentered: frozenset[str]) -> dict[str, Site]:
    sites: dict[str, Site] = {}
    for name, site in model_trace.items():
        notes = fixes.notes.get(name, _SiteNotes())
        if name in noncentered:
            sites[name] = Site(name, "latent", None, None, notes.rewrites, True, notes.description, notes.inputs)
        elif site["type"] == "deterministic":
            sites[name] = Site(name, "deterministic", None, None)
        elif site["type"] == "sample":
            if _is_unit(site):
                kind, description = "observed", "factor"
            else:
                kind = "observed" if site["is_observed"] else "latent"
                description = notes.description
            sites[name] = Site(name, kind, None, None, notes.rewrites, False, description, notes.inputs)
    return sites
