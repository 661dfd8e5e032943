"""A compiled model sampled by nutpie: the PyMC or NumPyro adapter's model, nutpie's sampler.

Three ways nutpie gets the log density, one contract:

* a PyMC model compiled by ``nutpie.compile_pymc_model`` with Numba (the default: no Python per step);
* the same with its JAX backend (``compile_backend="jax"``, as ``pm.sample(backend="jax")`` asks):
  nutpie calls the jitted function through Python for every gradient;
* a NumPyro model through nutpie's function interface (``nutpie.compiled_pyfunc.from_pyfunc``): the
  NumPyro adapter's own jitted log density and gradient, called through Python for every gradient.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import warnings
from typing import Any, Callable, Iterator

import numpy as np

from resilient.adapters.common import WrapsCompiledModel
from resilient.backend import Chunk, NUTSRun, NUTSSettings

#: what ``compile_backend`` may be for each modelling backend (the first is the default).
COMPILE_BACKENDS = {"pymc": ("numba", "jax"), "numpyro": ("jax",)}


class NutpieCompiledModel(WrapsCompiledModel):
    """:class:`resilient.backend.CompiledModel` for nutpie, wrapping the PyMC or NumPyro adapter's
    compiled model (``inner``).

    Attributes and methods not defined here are ``inner``'s. ``x`` is laid out as ``inner`` lays it
    out; nutpie may order the same values its own way, and :attr:`order` maps one onto the other.
    """

    backend = "nutpie"

    def __init__(self, inner: Any, *, cores: int | None = None, compile_backend: str | None = None,
                 gradient_backend: str | None = None) -> None:
        discrete = getattr(inner, "discrete_latents", ())
        if discrete:
            from resilient.errors import DiscreteLatentError

            names = ", ".join(f"`{n}`" for n in discrete)
            raise DiscreteLatentError(
                f"nutpie samples continuous latent variables only, and {names} is discrete. engine='pymc' runs "
                "PyMC's compound step (NUTS for the continuous latents, PyMC's default step for the discrete ones), "
                "as pm.sample does.", site=discrete[0], fix="engine='pymc'")
        self.inner = inner
        self.source = inner.backend
        allowed = COMPILE_BACKENDS[self.source]
        self.compile_backend = allowed[0] if compile_backend is None else str(compile_backend).lower()
        if self.compile_backend not in allowed:
            from resilient.errors import ResilientError

            raise ResilientError(
                f"nutpie compiles {'a PyMC' if self.source == 'pymc' else 'a NumPyro'} model's log density with "
                f"{' or '.join(repr(b) for b in allowed)}, not {compile_backend!r}.")
        if gradient_backend not in (None, "pytensor", "jax") or (gradient_backend == "jax" and
                                                                  self.compile_backend != "jax"):
            from resilient.errors import ResilientError

            raise ResilientError(f"gradient_backend={gradient_backend!r}: nutpie takes 'pytensor', or 'jax' with "
                                 "the JAX backend (backend='jax').")
        self.gradient_backend = gradient_backend
        self.cores = cores
        self._lock = threading.Lock()
        self._compiled: Any = None
        self._order: np.ndarray | None = None
        self._logp: Callable | None = None
        self._probe: dict[str, np.ndarray] | None = None  # constrained values at a start (NumPyro: names, shapes)
        self.compile_seconds: float | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def unusual(self) -> bool:
        """Not nutpie's default way (a PyMC model on Numba): the engine's reason then says which way."""
        return (self.source, self.compile_backend) != ("pymc", "numba")

    @property
    def describe(self) -> str:
        """Which of the three ways, in words (for reasons and records)."""
        if self.source == "numpyro":
            return "nutpie over NumPyro's jitted log density (function interface)"
        if self.compile_backend == "jax":
            return f"nutpie, JAX backend (gradient by {self.gradient_backend or 'pytensor'})"
        return "nutpie, Numba backend"

    # The contract's members, delegated by name (a Protocol check does not look through __getattr__).
    dimension = property(lambda self: self.inner.dimension)
    latent_names = property(lambda self: self.inner.latent_names)
    sites = property(lambda self: self.inner.sites)

    @property
    def posterior_names(self) -> tuple[str, ...]:
        """What a draw holds: the PyMC model's names, or the keys of the NumPyro model's ``constrain`` (read once)."""
        names = getattr(self.inner, "posterior_names", None)
        if names is not None:
            return tuple(names)
        if self._probe is None:
            self._probe = self.inner.constrain(self.inner.initial_point("default", 0))
        return tuple(self._probe)

    @property
    def nutpie_model(self) -> Any:
        """nutpie's compiled model (made on first use: Numba takes about 3 s the first time in a process)."""
        with self._lock:
            if self._compiled is None:
                import time

                started = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        self._compiled = self._compile()
                    except AttributeError as error:  # not to be read as a missing attribute by __getattr__
                        raise RuntimeError(f"compiling the model for nutpie failed: {error}") from error
                    except Exception as error:
                        if type(error).__name__ != "DisconnectedInputError":
                            raise
                        from resilient.errors import ResilientError

                        names = ", ".join(getattr(self.inner, "disconnected_latents", ()) or ()) or "a latent"
                        raise ResilientError(
                            f"nutpie cannot sample this model: its log density does not depend on {names} (an "
                            "improper posterior, e.g. a lone Flat). Give it a proper prior or a likelihood, or "
                            "sample with engine='pymc', which runs it and names the posterior improper.") from error
                self.compile_seconds = time.perf_counter() - started
                if self.compile_backend == "numba":
                    from resilient.engine import HISTORY

                    HISTORY.note_compile("nutpie")  # its later compilations in this process are cheaper
            return self._compiled

    def _compile(self) -> Any:
        import nutpie

        if self.source == "numpyro":
            return self._from_numpyro()
        if self.compile_backend == "numba":
            return nutpie.compile_pymc_model(self.inner.model)
        with _jax_x64_restored():  # PyTensor's JAX linker turns x64 on for the whole process when imported
            compiled = nutpie.compile_pymc_model(self.inner.model, backend="jax",
                                                 gradient_backend=self.gradient_backend or "pytensor")
        make_logp, make_expand = compiled._make_logp_func, compiled._make_expand_func
        return dataclasses.replace(
            compiled, _make_logp_func=lambda: _in_x64(make_logp()),
            _make_expand_func=lambda seed1, seed2, chain: _in_x64(make_expand(seed1, seed2, chain)))

    def _from_numpyro(self) -> Any:
        """nutpie's function interface over the NumPyro adapter's jitted log density and ``constrain``."""
        from nutpie.compiled_pyfunc import from_pyfunc

        inner = self.inner
        names = [name for name in self.posterior_names if name not in inner.hidden]
        shapes = [tuple(np.shape(self._probe[name])) for name in names]

        def logp(x: np.ndarray) -> tuple[float, np.ndarray]:
            value, gradient = inner.log_density_and_gradient(x)
            return value, np.ascontiguousarray(gradient, dtype=np.float64)

        def expand(x: np.ndarray) -> dict[str, np.ndarray]:
            values = inner.constrain(x)
            return {name: np.ascontiguousarray(values[name], dtype=np.float64).reshape(shape)
                    for name, shape in zip(names, shapes)}

        return from_pyfunc(
            ndim=self.dimension, make_logp_fn=lambda: logp, make_expand_fn=lambda seed1, seed2, chain: expand,
            expanded_dtypes=[np.dtype("float64")] * len(names), expanded_shapes=shapes, expanded_names=names,
            make_initial_point_fn=lambda seed: np.asarray(inner.initial_point("default", int(seed) % 2**31), float))

    def _is_pyfunc(self) -> bool:
        return not hasattr(self.nutpie_model, "logp_func")

    @property
    def order(self) -> np.ndarray:
        """Indices into our ``x`` in nutpie's order: ``x_nutpie = x[order]``."""
        if self._order is None:
            if self.source == "numpyro":
                self._order = np.arange(self.dimension)
            elif self._is_pyfunc():
                self._order = self._order_by_probe()
            else:
                self._order = self._order_by_shape_info()
        return self._order

    def _order_by_shape_info(self) -> np.ndarray:
        names, slices = self.nutpie_model.shape_info[0], self.nutpie_model.shape_info[1]
        ours = {value: block for _, value, _, _, block in self.inner._layout}
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
        return np.asarray(index, dtype=np.int64)

    def _order_by_probe(self) -> np.ndarray:
        """The JAX backend keeps no layout: expand ``0, 1, ..., n - 1`` and read where each value variable's
        entries came from (a value variable's expansion is its slice of the vector)."""
        compiled = self.nutpie_model
        expanded = compiled._make_expand_func(0, 0, 0)(np.arange(self.dimension, dtype=np.float64),
                                                       **compiled._shared_data)
        index = np.empty(self.dimension, dtype=np.int64)
        for _, value, _, _, span in self.inner._layout:
            positions = np.rint(np.asarray(expanded[value], dtype=np.float64).reshape(-1)).astype(np.int64)
            if positions.size != span.stop - span.start:
                raise RuntimeError(f"nutpie and PyMC disagree on the size of {value}")
            index[positions] = np.arange(span.start, span.stop)
        if sorted(index.tolist()) != list(range(self.dimension)):
            raise RuntimeError("nutpie's unconstrained vector does not cover the model's")
        return index

    def with_starts(self, starts: Callable[[Any], np.ndarray]) -> Any:
        """nutpie's compiled model with ``starts`` as its initial-point function (in nutpie's layout)."""
        field = "_make_initial_points" if self._is_pyfunc() else "initial_point_func"
        return dataclasses.replace(self.nutpie_model, **{field: starts})

    def _nutpie_point(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if x.shape != (self.dimension,):
            raise ValueError(f"x must have {self.dimension} values, got {x.shape}.")
        return np.ascontiguousarray(x[self.order])

    def _logp_function(self) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
        if self._logp is None:
            compiled = self.nutpie_model
            if self._is_pyfunc():
                function, shared = compiled._make_logp_func(), compiled._shared_data
                self._logp = lambda point: function(point, **shared)
            else:
                self._logp = compiled.logp_func
        return self._logp

    def log_density_and_gradient(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """nutpie's own log density and gradient (the function its sampler calls)."""
        point = self._nutpie_point(x)
        gradient = np.full(self.dimension, np.nan)
        try:
            with np.errstate(all="ignore"):
                value, grad = self._logp_function()(point)
        except (ArithmeticError, ValueError, RuntimeError, FloatingPointError):
            return float("nan"), gradient
        gradient[self.order] = np.asarray(grad, dtype=np.float64)
        return float(value), gradient

    def initial_point(self, strategy: str = "default", random_seed: int | None = None) -> np.ndarray:
        """``default``: nutpie's own start (for PyMC models, PyMC's initial point jittered as nutpie jitters
        it); the other strategies as the inner model makes them."""
        if strategy != "default" or self.source == "numpyro":
            return self.inner.initial_point(strategy, random_seed)
        compiled = self.nutpie_model
        make = compiled._make_initial_points if self._is_pyfunc() else compiled.initial_point_func
        point = np.asarray(make(0 if random_seed is None else int(random_seed)), dtype=np.float64)
        x = np.empty(self.dimension)
        x[self.order] = point[: self.dimension]
        return x

    def log_density(self, x: np.ndarray) -> float:
        return self.log_density_and_gradient(x)[0]

    def run_nuts(self, settings: NUTSSettings, on_chunk: Callable[[Chunk], bool]) -> NUTSRun:
        from resilient.adapters.nutpie.runner import run_nutpie

        return run_nutpie(self, settings, on_chunk)


@contextlib.contextmanager
def _jax_x64_restored() -> Iterator[None]:
    import jax

    before = bool(jax.config.jax_enable_x64)
    try:
        with jax.enable_x64(True):  # the data nutpie copies to JAX arrays at compile time stay float64
            yield
    finally:
        jax.config.update("jax_enable_x64", before)


def _in_x64(function: Callable) -> Callable:
    """``function`` run with JAX in 64 bits for this thread only (the user's global setting untouched)."""
    import jax

    def call(*args: Any, **kwargs: Any) -> Any:
        with jax.enable_x64(True):
            return function(*args, **kwargs)

    return call
