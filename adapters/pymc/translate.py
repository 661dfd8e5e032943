"""Shared-API records -> PyMC distributions, and the handler that runs a shared-API model on PyMC."""

from __future__ import annotations

from typing import Any
import numpy as np
import pymc as pm
import pytensor.tensor as pt
from resilient.distributions import Distribution, Mixture, Truncated
from resilient.errors import UnsupportedModelError
from resilient.adapters.pymc.math import PYTENSOR_MATH


def _param(value: Any) -> Any:
    """A record's parameter for PyMC. A Python number becomes a 64-bit NumPy scalar: PyTensor
    would make ``3.0`` a float32 constant (its float autocast), and a term of literal parameters
    only (``log 3``, ``lgamma(2)``) would then be computed in float32, ~1e-7 relative off."""
    if isinstance(value, (list, tuple)):
        return np.asarray(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return np.float64(value) if isinstance(value, float) else np.int64(value)


def _base_dist(dist: Distribution) -> Any:
    """The unnamed PyMC distribution (``pm.X.dist``) for a record, without its shape."""
    params = {k: _param(v) for k, v in dist.params.items() if v is not None}
    if dist.family == "LKJCholesky":
        return pm.LKJCorr.dist(n=_constant_int(params["n"], "n"), eta=params["eta"])
    return getattr(pm, dist.family).dist(**params)


def _constant_int(value: Any, name: str) -> int:
    try:
        return int(np.asarray(value).item())
    except (TypeError, ValueError) as error:
        raise UnsupportedModelError(
            f"LKJCholesky: `{name}` must be a plain integer on the PyMC backend, got {value!r}."
        ) from error


def _ordered_initval(dist: Distribution) -> np.ndarray:
    """A strictly increasing starting value for ``ordered=True`` (PyMC's own initial point, the
    family's support point, repeats one value, where the ordered transform is -inf): steps of one
    along the last axis, centred on 0 for a real family, from 1 for a positive one."""
    shape = tuple(dist.shape)
    k = shape[-1]
    steps = np.arange(1.0, k + 1.0) if dist.spec.support == "positive" else np.arange(k) - (k - 1) / 2.0
    return np.broadcast_to(steps, shape).copy()


def _ordered_transform() -> Any:
    from pymc.distributions.transforms import ordered

    # PyMC chains a `transform=` after the family's default one (log for a positive family), so
    # this is Stan's ordered on the real line and positive_ordered on the half-line.
    return ordered


def _mixture_components(record: Mixture) -> list[Any]:
    return [_base_dist(component) for component in record.components]


def _observed_depends_on_latents(observed: Any) -> bool:
    """Whether ``observed`` is a graph of the model's random variables (``obs=y - mu``), which
    PyMC cannot take as observed data."""
    if not isinstance(observed, pt.Variable):
        return False
    from pytensor.graph.traversal import ancestors

    model = pm.modelcontext(None)
    rvs = set(model.basic_RVs) | set(model.deterministics)
    return any(a in rvs for a in ancestors([observed]))


def _unnamed(dist: Distribution | Truncated | Mixture) -> Any:
    """The record as an unnamed PyMC variable (``pm.X.dist``) with its ``shape`` as size."""
    size = {} if dist.shape is None else {"size": tuple(dist.shape)}
    if isinstance(dist, Truncated):
        return pm.Truncated.dist(_base_dist(dist.base), lower=_param(dist.lower), upper=_param(dist.upper), **size)
    if isinstance(dist, Mixture):
        return pm.Mixture.dist(w=_param(dist.w), comp_dists=_mixture_components(dist), **size)
    if dist.family == "LKJCholesky":
        return pm.LKJCorr.dist(n=_constant_int(dist.params["n"], "n"), eta=_param(dist.params["eta"]), **size)
    params = {k: _param(v) for k, v in dist.params.items() if v is not None}
    return getattr(pm, dist.family).dist(**params, **size)


def _observed_expression(name: str, dist: Distribution | Truncated | Mixture, observed: Any) -> Any:
    """``obs=`` a graph of latents (``sample("err", Normal(0, s), obs=y - mu)``): PyMC refuses it as
    observed data, so the term is a ``pm.Potential`` of the distribution's log density at that
    expression, which is what the same model means on NumPyro (no Jacobian: the expression is not
    a change of variables, as there). For ``ordered=True`` the density is the family's, summed."""
    value = pt.as_tensor_variable(observed)
    pm.Potential(name, pt.sum(pm.logp(_unnamed(dist), value)))
    return value


def to_pymc(name: str, dist: Distribution | Truncated | Mixture, observed: Any = None) -> Any:
    """Declare ``name`` in the current ``pm.Model`` from a resilient record; return the variable."""
    kwargs: dict[str, Any] = {}
    if observed is not None:
        if isinstance(observed, (list, tuple)):
            observed = np.asarray(observed)
        if _observed_depends_on_latents(observed):
            return _observed_expression(name, dist, observed)
        kwargs["observed"] = observed
    if dist.shape is not None:
        # `size` is the batch shape in PyMC (event dimensions are appended), as for records.
        kwargs["size"] = tuple(dist.shape)
    if isinstance(dist, Truncated):
        return pm.Truncated(
            name, _base_dist(dist.base), lower=_param(dist.lower), upper=_param(dist.upper), **kwargs
        )
    if isinstance(dist, Mixture):
        return pm.Mixture(name, w=_param(dist.w), comp_dists=_mixture_components(dist), **kwargs)
    if dist.family == "LKJCholesky":
        params = dict(dist.params)
        return pm.LKJCorr(name, n=_constant_int(params["n"], "n"), eta=_param(params["eta"]), **kwargs)
    if dist.ordered and observed is None:
        kwargs.update(transform=_ordered_transform(), initval=_ordered_initval(dist))
    params = {k: _param(v) for k, v in dist.params.items() if v is not None}
    return getattr(pm, dist.family)(name, **params, **kwargs)


class PyMCSiteHandler:
    """The :class:`resilient.model.SiteHandler` that declares sites in the active ``pm.Model``."""

    math = PYTENSOR_MATH

    def sample_site(self, name: str, dist: Distribution | Truncated, observed: Any) -> Any:
        return to_pymc(name, dist, observed)

    def deterministic_site(self, name: str, value: Any) -> Any:
        return pm.Deterministic(name, pt.as_tensor_variable(value))

    def factor_site(self, name: str, log_density: Any) -> None:
        pm.Potential(name, pt.sum(pt.as_tensor_variable(log_density)))
