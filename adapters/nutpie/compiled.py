"""A PyMC compiled model sampled by nutpie: the PyMC adapter's model, nutpie's log density and sampler."""

from __future__ import annotations

import threading
import warnings
from typing import Any, Callable

import numpy as np

from resilient.backend import Chunk, NUTSRun, NUTSSettings


class NutpieCompiledModel:
    """:class:`resilient.backend.CompiledModel` for nutpie, wrapping a ``PyMCCompiledModel`` (``pymc``).

    Attributes and methods not defined here are the PyMC compiled model's. ``x`` is laid out as the
    PyMC adapter lays it out; nutpie orders the same value variables its own way, and :attr:`order`
    maps one onto the other.
    """

    backend = "nutpie"

    def __init__(self, pymc: Any, *, cores: int | None = None) -> None:
        discrete = getattr(pymc, "discrete_latents", ())
        if discrete:
            from resilient.errors import DiscreteLatentError

            names = ", ".join(f"`{n}`" for n in discrete)
            raise DiscreteLatentError(
                f"nutpie samples continuous latent variables only, and {names} is discrete. engine='pymc' runs "
                "PyMC's compound step (NUTS for the continuous latents, PyMC's default step for the discrete ones), "
                "as pm.sample does.", site=discrete[0], fix="engine='pymc'")
        self.pymc = pymc
        self.cores = cores
        self._lock = threading.Lock()
        self._compiled: Any = None
        self._order: np.ndarray | None = None
        self.compile_seconds: float | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "pymc":
            raise AttributeError(name)
        return getattr(self.pymc, name)

    # The contract's members, delegated by name (a Protocol check does not look through __getattr__).
    dimension = property(lambda self: self.pymc.dimension)
    latent_names = property(lambda self: self.pymc.latent_names)
    sites = property(lambda self: self.pymc.sites)
    posterior_names = property(lambda self: self.pymc.posterior_names)

    def blocks(self) -> dict[str, slice]:
        return self.pymc.blocks()

    def site_log_densities(self, x: np.ndarray) -> dict[str, float]:
        return self.pymc.site_log_densities(x)

    def site_gradients(self, x: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        return self.pymc.site_gradients(x)

    def constrain(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return self.pymc.constrain(x)

    def unconstrain(self, values: Any) -> np.ndarray:
        return self.pymc.unconstrain(values)

    def observed_data(self) -> dict[str, np.ndarray]:
        return self.pymc.observed_data()

    def log_likelihood(self, posterior: Any) -> dict[str, np.ndarray]:
        return self.pymc.log_likelihood(posterior)

    def datatree_layout(self) -> dict[str, Any]:
        return self.pymc.datatree_layout()

    @property
    def nutpie_model(self) -> Any:
        """``nutpie.compile_pymc_model`` of the PyMC model (compiled by Numba on first use, about 3 s)."""
        with self._lock:
            if self._compiled is None:
                import time

                import nutpie

                started = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._compiled = nutpie.compile_pymc_model(self.pymc.model)
                self.compile_seconds = time.perf_counter() - started
                from resilient.engine import note_nutpie_compile

                note_nutpie_compile()
            return self._compiled

    @property
    def order(self) -> np.ndarray:
        """Indices into our ``x`` in nutpie's order: ``x_nutpie = x[order]``."""
        if self._order is None:
            names, slices = self.nutpie_model.shape_info[0], self.nutpie_model.shape_info[1]
            ours = {value: block for _, value, _, _, block in self.pymc._layout}
            index = []
            for name, block in zip(names, slices):
                if name not in ours:
                    continue
                span = ours[name]
                if span.stop - span.start != block.stop - block.start:
                    raise RuntimeError(f"nutpie and PyMC disagree on the size of {name}: {block} against {span}")
                index.extend(range(span.start, span.stop))
            if sorted(index) != list(range(self.dimension)):
                raise RuntimeError(f"nutpie's unconstrained vector does not cover the model's: {names}")
            self._order = np.asarray(index, dtype=np.int64)
        return self._order

    def _nutpie_point(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if x.shape != (self.dimension,):
            raise ValueError(f"x must have {self.dimension} values, got {x.shape}.")
        return np.ascontiguousarray(x[self.order])

    def log_density_and_gradient(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """nutpie's own compiled log density and gradient (the function its sampler calls)."""
        point = self._nutpie_point(x)
        gradient = np.full(self.dimension, np.nan)
        try:
            with np.errstate(all="ignore"):
                value, grad = self.nutpie_model.logp_func(point)
        except (ArithmeticError, ValueError, RuntimeError, FloatingPointError):
            return float("nan"), gradient
        gradient[self.order] = np.asarray(grad, dtype=np.float64)
        return float(value), gradient

    def initial_point(self, strategy: str = "default", random_seed: int | None = None) -> np.ndarray:
        """``default``: nutpie's own start (PyMC's initial point, jittered as nutpie jitters it);
        the other strategies as the PyMC adapter makes them."""
        if strategy != "default":
            return self.pymc.initial_point(strategy, random_seed)
        point = np.asarray(self.nutpie_model.initial_point_func(0 if random_seed is None else int(random_seed)),
                           dtype=np.float64)
        x = np.empty(self.dimension)
        x[self.order] = point[: self.dimension]
        return x

    def log_density(self, x: np.ndarray) -> float:
        return self.log_density_and_gradient(x)[0]

    def run_nuts(self, settings: NUTSSettings, on_chunk: Callable[[Chunk], bool]) -> NUTSRun:
        from resilient.adapters.nutpie.runner import run_nutpie

        return run_nutpie(self, settings, on_chunk)
