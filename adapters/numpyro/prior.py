"""One joint draw from a model's prior predictive with NumPyro's own forward sampler (effect handlers):
what simulation-based calibration simulates its data sets with (:func:`resilient.sbc`).

Reached through :func:`resilient.backend.simulate_prior`, never imported by core directly.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from resilient.adapters.numpyro.math import JAX_MATH
from resilient.adapters.numpyro.translate import to_numpyro

__all__ = ["simulate_prior"]


def simulate_prior(function: Any, kwargs: Mapping[str, Any], *, native: bool, random_seed: int
                   ) -> dict[str, np.ndarray]:
    """Every unobserved site (latent, deterministic, and the sites whose data arguments are None) of
    ``function(**kwargs)``, drawn once by NumPyro's ``seed`` and ``trace`` handlers in float64.
    ``native``: ``function`` is a NumPyro model function; else a shared-API one, run through NumPyro."""
    import jax
    import numpyro
    from numpyro import handlers

    if not native:
        from resilient.model import Model, Trace

        model = Model(function, (), dict(kwargs))

        class Handler:
            math = JAX_MATH

            def sample_site(self, name: str, record: Any, observed: Any) -> Any:
                return numpyro.sample(name, to_numpyro(record), obs=observed)

            def deterministic_site(self, name: str, value: Any) -> Any:
                return numpyro.deterministic(name, value)

            def factor_site(self, name: str, log_density: Any) -> None:
                numpyro.factor(name, log_density)

        def numpyro_model() -> None:
            Trace(model, Handler()).run()
    else:
        def numpyro_model() -> None:
            function(**kwargs)

    with jax.enable_x64(True):
        trace = handlers.trace(handlers.seed(numpyro_model, rng_seed=int(random_seed))).get_trace()
    return {name: np.asarray(site["value"]) for name, site in trace.items()
            if (site["type"] == "sample" and not site["is_observed"]) or site["type"] == "deterministic"}
