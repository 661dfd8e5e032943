"""Shared-API records -> PyMC distributions, and the handler that runs a shared-API model on PyMC."""

from __future__ import annotations

from typing import Any
import numpy as np
import pymc as pm
import pytensor.tensor as pt
from resilient.distributions import Distribution, Truncated
from resilient.errors import UnsupportedModelError
from resilient.adapters.pymc.math import PYTENSOR_MATH


def _param(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return np.asarray(value)
    return value


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


def to_pymc(name: str, dist: Distribution | Truncated, observed: Any = None) -> Any:
    """Declare ``name`` in the current ``pm.Model`` from a resilient record; return the variable."""
    kwargs: dict[str, Any] = {}
    if observed is not None:
        kwargs["observed"] = np.asarray(observed) if isinstance(observed, (list, tuple)) else observed
    if dist.shape is not None:
        # `size` is the batch shape in PyMC (event dimensions are appended), as for records.
        kwargs["size"] = tuple(dist.shape)
    if isinstance(dist, Truncated):
        return pm.Truncated(
            name, _base_dist(dist.base), lower=_param(dist.lower), upper=_param(dist.upper), **kwargs
        )
    if dist.family == "LKJCholesky":
        params = dict(dist.params)
        return pm.LKJCorr(name, n=_constant_int(params["n"], "n"), eta=_param(params["eta"]), **kwargs)
    params = {k: _param(v) for k, v in dist.params.items() if v is not None}
    return getattr(pm, dist.family)(name, **params, **kwargs)


class PyMCSiteHandler:
    """The :class:`resilient.model.SiteHandler` that declares sites in the active ``pm.Model``."""

    math = PYTENSOR_MATH

    def sample_site(self, name: str, dist: Distribution | Truncated, observed: Any) -> Any:
        return to_pymc(name, dist, observed)

    def deterministic_site(self, name: str, value: Any) -> Any:
        return pm.Deterministic(name, pt.as_tensor_variable(value))
