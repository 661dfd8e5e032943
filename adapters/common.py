"""What both adapters need, written once: the checks and words every backend shares."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from resilient.errors import DiscreteLatentError, UnsupportedModelError

__all__ = ["INITIAL_STRATEGIES", "WrapsCompiledModel", "check_strategy", "uniform_point", "require_native", "require_every_latent",
           "refuse_discrete_latents"]

#: initial-point strategies every adapter serves (see CompiledModel.initial_point).
INITIAL_STRATEGIES = ("default", "uniform", "prior", "median")


class WrapsCompiledModel:
    """The model's side of an engine that samples another adapter's compiled model (``self.inner``): layout,
    per-site terms, constraining, data, pointwise log likelihood and the DataTree's names are the inner model's.
    nutpie and NumPyro's NUTS over a PyMC model put it first among their bases."""

    inner: Any

    def blocks(self) -> dict[str, slice]:
        return self.inner.blocks()

    def site_log_densities(self, x: np.ndarray) -> dict[str, float]:
        return self.inner.site_log_densities(x)

    def site_gradients(self, x: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        return self.inner.site_gradients(x)

    def constrain(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return self.inner.constrain(x)

    def unconstrain(self, values: Mapping[str, Any]) -> np.ndarray:
        return self.inner.unconstrain(values)

    def observed_data(self) -> dict[str, np.ndarray]:
        return self.inner.observed_data()

    def log_likelihood(self, posterior: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.inner.log_likelihood(posterior)

    def datatree_layout(self) -> dict[str, Any]:
        return self.inner.datatree_layout()


def pymc_running_stats(diverging: Any, chains: Sequence[int], warmup: bool,
                       counts: dict[int, int]) -> dict[str, np.ndarray]:
    """PyMC's NUTS statistics that other engines keep no counterpart of, for one chunk (``diverging``: a row per
    chain of ``chains``): ``divergences``, the chain's running count of post-warm-up divergences as pm.sample gives
    it (0 in warm-up; ``counts`` holds each chain's count so far and is updated), and ``largest_eigval`` /
    ``smallest_eigval``, NaN as PyMC 6.4 gives them for every mass matrix adaptation it has."""
    diverging = np.asarray(diverging, bool)
    count = np.zeros(diverging.shape, np.int64)
    if not warmup:
        for row, chain in enumerate(chains):
            count[row] = counts.get(chain, 0) + np.cumsum(diverging[row], dtype=np.int64)
            counts[chain] = counts.get(chain, 0) + int(diverging[row].sum())
    return {"divergences": count, "largest_eigval": np.full(diverging.shape, np.nan),
            "smallest_eigval": np.full(diverging.shape, np.nan)}


def check_strategy(strategy: str) -> None:
    if strategy not in INITIAL_STRATEGIES:
        raise ValueError(
            f"`strategy` must be one of {', '.join(repr(s) for s in INITIAL_STRATEGIES)}, got {strategy!r}."
        )


def uniform_point(seed: int | None, dimension: int) -> np.ndarray:
    """Stan's initial point: uniform(-2, 2) on every unconstrained coordinate."""
    return np.random.default_rng(seed).uniform(-2.0, 2.0, size=dimension)


def require_native(model: Any, backend: str) -> None:
    """A native model may only run on its own backend."""
    if model.backend != backend:
        raise UnsupportedModelError(
            f"The {backend} backend cannot run a native {model.backend} model. Use backend={model.backend!r}, "
            "or write the model in the shared API (resilient.model.sample) to run it on either backend."
        )


def require_every_latent(values: Mapping[str, Any], latent_names: Sequence[str]) -> None:
    """``unconstrain`` needs a constrained value for every latent variable."""
    missing = [name for name in latent_names if name not in values]
    if missing:
        raise ValueError(
            f"`values` must hold every latent variable ({', '.join(latent_names)}); missing: {', '.join(missing)}."
        )


def refuse_discrete_latents(names: Iterable[str]) -> None:
    """NUTS needs continuous latents: one error, the same on every backend, naming the sites."""
    names = list(names)
    if names:
        plural = "s" if len(names) > 1 else ""
        raise DiscreteLatentError(
            f"Site{plural} {', '.join(f'`{n}`' for n in names)} {'are' if plural else 'is a'} discrete latent "
            f"variable{plural}; NUTS needs every latent variable to be continuous. Marginalise "
            f"{'them' if plural else 'it'} out (sum over the values in the likelihood), pass the values as "
            "observed data, or sample on PyMC (backend='pymc' for a shared-API model), whose compound step "
            "samples discrete latents beside NUTS.", site=names[0],
            fix=f"marginalise {', '.join(names)} out of the likelihood, or pass {'their' if plural else 'its'} "
                "values as observed data")
