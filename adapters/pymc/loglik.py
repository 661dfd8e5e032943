"""Pointwise log likelihood of a PyMC compiled model's observed variables, computed as
``pm.compute_log_likelihood`` does (the same function of the untransformed model, evaluated draw by draw),
compiled once per model."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["log_likelihood"]


def _function(compiled: Any) -> tuple[Any, list[tuple[str, str, str]], list[str]]:
    """``pm.compute_log_likelihood``'s elementwise function of the frozen model, with per free variable
    (posterior name, value-variable name, dtype) and the observed names; built on first use."""
    cached = compiled.__dict__.get("_loglik_function")
    if cached is None:
        from pymc.model.transform.conditioning import remove_value_transforms

        from resilient.adapters.pymc.compiled import _quiet_pytensor

        umodel = remove_value_transforms(getattr(compiled, "sampling_model", compiled.model))
        observed = list(umodel.observed_RVs)
        with _quiet_pytensor():
            function = umodel.compile_fn(inputs=umodel.value_vars, outs=umodel.logp(vars=observed, sum=False),
                                         on_unused_input="ignore")
        inputs = [(rv.name, umodel.rvs_to_values[rv].name, umodel.rvs_to_values[rv].type.dtype)
                  for rv in umodel.free_RVs]
        cached = (function, inputs, [rv.name for rv in observed])
        compiled.__dict__["_loglik_function"] = cached
    return cached


def log_likelihood(compiled: Any, posterior: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{observed variable: (chain, draw, *observed_shape)}`` for the draws in ``posterior`` (chain, draw, ...)."""
    function, inputs, names = _function(compiled)
    if not names or not posterior:
        return {}
    missing = [name for name, _, _ in inputs if name not in posterior]
    if missing:
        raise KeyError(f"The posterior has no draws of {missing}, which the log likelihood needs.")
    arrays = {value: np.asarray(posterior[name], dtype=dtype) for name, value, dtype in inputs}
    chains, draws = np.shape(next(iter(posterior.values())))[:2]
    out: dict[str, np.ndarray] = {}
    for chain in range(chains):
        for draw in range(draws):
            values = function({value: array[chain, draw] for value, array in arrays.items()})
            for name, value in zip(names, values):
                if name not in out:
                    out[name] = np.empty((chains, draws, *np.shape(value)), dtype=np.asarray(value).dtype)
                out[name][chain, draw] = value
    return out
