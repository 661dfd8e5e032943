"""One joint draw from a model's prior predictive with PyMC's own forward sampler (``pm.draw``): what
simulation-based calibration simulates its data sets with (:func:`resilient.sbc`).

Reached through :func:`resilient.backend.simulate_prior`, never imported by core directly.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import numpy as np

__all__ = ["simulate_prior"]

#: the last model built, by (function, data): one simulator per worker at a time, as models are not small.
_MODELS: dict[tuple, Any] = {}


def simulate_prior(function: Any, kwargs: Mapping[str, Any], *, native: bool, random_seed: int
                   ) -> dict[str, np.ndarray]:
    """Every free, deterministic and observed variable of the model, drawn once by ``pm.draw``.
    ``native``: ``function`` builds and returns a ``pm.Model``; else it is a shared-API model, translated."""
    import pymc as pm

    from resilient.batch.spec import data_fingerprint

    key = (id(function), data_fingerprint(kwargs))
    model = _MODELS.get(key)
    if model is None:
        if not native:
            from resilient.adapters.pymc.translate import PyMCSiteHandler
            from resilient.model import Model, Trace

            with pm.Model() as model:
                Trace(Model(function, (), dict(kwargs)), PyMCSiteHandler()).run()
        else:
            model = function(**kwargs)
        _MODELS.clear()
        _MODELS[key] = (function, model)
    else:
        model = model[1]
    variables = list(model.free_RVs) + list(model.deterministics) + list(model.observed_RVs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = pm.draw(variables, random_seed=int(random_seed))
    return {var.name: np.asarray(value) for var, value in zip(variables, values)}
