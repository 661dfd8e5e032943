"""Pointwise log likelihood of a NumPyro compiled model's observed sites, computed as ``az.from_numpyro`` does
(``numpyro.infer.log_likelihood`` with ``batch_ndims=2``), jitted once per model and posterior shape."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import numpy as np
from numpyro import handlers
from numpyro.infer import log_likelihood as numpyro_log_likelihood

__all__ = ["log_likelihood"]

_PROGRAM = "log_likelihood"


def likelihood_model(compiled: Any) -> Callable:
    """The model function whose observed sites are scored: the one the adapter runs, less any
    ``handlers.reparam`` Resilient added (a native site it non-centred): the draws hold the user's
    variables, not the ``<name>_decentered`` ones, and the observed sites are the same either way."""
    fn = compiled._model_fn
    while isinstance(fn, handlers.reparam):
        fn = fn.fn
    return fn


def _program(compiled: Any) -> tuple[Callable, bool]:
    """The jitted ``(data, samples) -> log likelihoods`` where the model takes its data as arguments
    (shared with the models ``with_data`` makes), else ``samples -> ...`` on this model's data."""
    traced = compiled._takes_data()
    cache = compiled._programs if traced else compiled.__dict__.setdefault("_loglik_programs", {})
    if _PROGRAM not in cache:
        fn = likelihood_model(compiled)

        def run(data: tuple, samples: Mapping[str, Any]) -> dict[str, Any]:
            return numpyro_log_likelihood(fn, samples, data, batch_ndims=2)

        if traced:
            cache[_PROGRAM] = jax.jit(run)
        else:
            data = compiled._data
            cache[_PROGRAM] = jax.jit(lambda samples: run(data, samples))
    return cache[_PROGRAM], traced


def log_likelihood(compiled: Any, posterior: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{observed site: (chain, draw, *batch_shape)}`` for the draws in ``posterior`` (chain, draw, ...).

    Every observed site of :meth:`observed_data` is scored; ``numpyro.factor`` sites, which are not data
    (and not in observed_data), are left out."""
    observed = list(compiled._observed)
    if not observed:
        return {}
    marginal = [name for name in observed if name in getattr(compiled, "_enum_group", ())]
    if marginal:
        from resilient.errors import ModelError

        raise ModelError(
            f"the observed site{'s' if len(marginal) > 1 else ''} {', '.join(marginal)} depend"
            f"{'' if len(marginal) > 1 else 's'} on the enumerated site{'s' if len(compiled.enumerated) > 1 else ''} "
            f"{', '.join(compiled.enumerated)}, which the draws do not hold; NumPyro's log_likelihood (what "
            "az.from_numpyro(log_likelihood=True) calls) cannot score them either (it stops on the unseeded "
            "discrete site). Sum the enumerated site out per observation in the model (a MixtureSameFamily "
            "likelihood) to get a pointwise log likelihood", site=marginal[0])
    samples = {name: np.asarray(value) for name, value in posterior.items()}
    with compiled.precision():
        program, traced = _program(compiled)
        values = program(compiled._data, samples) if traced else program(samples)
        return {name: np.asarray(values[name]) for name in observed if name in values}
