"""A PyMC model sampled by NumPyro's NUTS: the PyMC adapter's compiled model, PyMC's JAX translation of its log
density (``pymc.sampling.jax.get_jaxified_graph``, what ``pm.sample(nuts_sampler="numpyro")`` runs) and the
NumPyro adapter's chunked NUTS driver."""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import replace
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from resilient.backend import Chunk, NUTSRun, NUTSSettings

from resilient.adapters.common import WrapsCompiledModel, pymc_running_stats
from resilient.adapters.numpyro.compiled import NumPyroCompiledModel

#: this engine's name in the registry (its sampler states carry it; NumPyro's driver writes "numpyro").
ENGINE = "pymc_numpyro"
_DRIVER = "numpyro"
#: PyMC's NUTS statistics this engine adds to the seven ``pm.sample(nuts_sampler="numpyro")`` gives, so a result
#: reads as a PyMC model's whichever engine ``auto`` took (as the nutpie engine adds them to nutpie's):
#: ``reached_max_treedepth`` (the tree's depth at ``max_tree_depth``), ``divergences`` (PyMC's running count of the
#: chain's post-warm-up divergences, 0 in warm-up), ``step_size_bar`` (after warm-up the step size NUTS runs, which
#: NumPyro sets to its dual averaging's mean as PyMC's ``step_size_bar`` is; NaN in warm-up, whose running mean
#: NumPyro keeps in its state only), ``largest_eigval``/``smallest_eigval`` (NaN, as PyMC gives them).
PYMC_COMPUTED = ("reached_max_treedepth", "divergences", "step_size_bar", "largest_eigval", "smallest_eigval")
#: PyMC's NUTS statistics this engine leaves out: NumPyro's NUTS keeps no energy error, no index of the draw in
#: its trajectory and no per-draw clocks.
PYMC_UNAVAILABLE = ("energy_error", "max_energy_error", "index_in_trajectory", "perf_counter_diff",
                    "perf_counter_start", "process_time_diff")


class PyMCNumPyroCompiledModel(WrapsCompiledModel, NumPyroCompiledModel):
    """:class:`resilient.backend.CompiledModel` for NumPyro's NUTS over a PyMC model.

    ``inner`` (a :class:`~resilient.adapters.pymc.compiled.PyMCCompiledModel`) lays out ``x``, gives the per-site
    terms, initial points, constrained values, data and the DataTree's names; the log density and gradient are the
    jitted JAX translation of ``inner.model.logp()`` that NUTS runs; :meth:`run_nuts` is the NumPyro adapter's
    driver (chunks, deadline, ``HMCState`` as the sampler state) over that function. Attributes not defined here
    are ``inner``'s."""

    backend = ENGINE

    def __init__(self, inner: Any, *, chain_method: str | None = None) -> None:
        discrete = getattr(inner, "discrete_latents", ())
        if discrete:
            from resilient.errors import DiscreteLatentError

            names = ", ".join(f"`{n}`" for n in discrete)
            raise DiscreteLatentError(
                f"NumPyro's NUTS samples continuous latent variables only, and {names} is discrete. engine='pymc' "
                "runs PyMC's compound step (NUTS for the continuous latents, PyMC's default step for the discrete "
                "ones), as pm.sample does.", site=discrete[0], fix="engine='pymc'")
        super().__init__(None, float32=False, chain_method=chain_method, name=inner.name, arguments=None)
        self.inner = inner
        self.sites = inner.sites
        self.latent_names = tuple(inner.latent_names)
        self.dimension = int(inner.dimension)
        self.hidden = frozenset(inner.hidden)
        self._blocks = dict(inner.blocks())
        self._traced = False  # PyMC's JAX translation holds the data (pm.Data too) as constants
        self.discrete_latents: tuple[str, ...] = ()
        self.ignored_options = tuple(getattr(inner, "ignored_options", ()))
        self._jax_lock = threading.Lock()
        self._jax: tuple[Callable, Callable, tuple[str, ...]] | None = None
        self.translate_seconds: float | None = None
        #: whose gradient NUTS runs: "pytensor" (PyTensor's, translated) or "jax" (JAX's autodiff), once translated
        self.gradient: str | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    #: the one way this engine runs (nutpie's reasons say which of its ways it took)
    unusual = False

    @property
    def describe(self) -> str:
        return "NumPyro's NUTS over PyMC's JAX translation of the log density"

    @property
    def posterior_names(self) -> tuple[str, ...]:
        return tuple(self.inner.posterior_names)

    # -- PyMC's JAX translation ----------------------------------------------------------------

    @property
    def jax_functions(self) -> tuple[Callable, Callable, tuple[str, ...]]:
        """``(logp, values, names)``: the JAX functions PyMC's ``get_jaxified_graph`` makes of the model's log
        density (Jacobians included) and of its free variables and deterministics (``names``), each a function
        of the value variables in ``inner``'s order; made once, with x64 on and the process's flag restored.
        ``logp``'s derivative is PyTensor's symbolic gradient, the one PyMC's NUTS runs, where JAX can trace it, else
        JAX's autodiff (:func:`_with_gradient`; :attr:`gradient` says which)."""
        with self._jax_lock:
            if self._jax is None:
                import time

                started = time.perf_counter()
                inner = self.inner
                with _x64_restored():
                    get_jaxified_graph = _pymc_jax().get_jaxified_graph
                    logp, self.gradient = _with_gradient(get_jaxified_graph, inner.value_vars, inner.model.logp(),
                                                         [(shape, dtype) for _, _, shape, dtype, _ in inner._layout])
                    outputs = inner._constrain_outputs()
                    values = get_jaxified_graph(inputs=inner.value_vars, outputs=outputs) if outputs else (
                        lambda *args: [])
                self._jax = (logp, values, tuple(inner.posterior_names))
                self.translate_seconds = time.perf_counter() - started
            return self._jax

    def prepare(self) -> None:
        """Translate the model now (``engine="auto"`` asks before it settles on this engine): raises where PyMC's
        JAX translation cannot take one of the model's operations."""
        self.jax_functions  # noqa: B018

    def check_start(self) -> None:
        """Raise where the translated log density or gradient is not finite at PyMC's initial point (``engine="auto"``
        asks, so a model this engine would run worse than PyMC's own function goes elsewhere; preflight then checks
        the function of the engine auto takes instead)."""
        x = np.asarray(self.inner.initial_point("median"), float)
        value, gradient = self.log_density_and_gradient(x)
        if not (np.isfinite(value) and np.all(np.isfinite(gradient))):
            bad = "log density" if not np.isfinite(value) else "gradient"
            raise ValueError(f"its {bad} is not finite at PyMC's initial point")

    def _inputs(self, x: Any) -> list[Any]:
        """The value variables' arrays from the flat vector (jax-traceable), in ``inner``'s layout."""
        import jax.numpy as jnp

        return [jnp.reshape(x[block], shape).astype(dtype) for _, _, shape, dtype, block in self.inner._layout]

    # The NumPyro driver's pure functions of x (it calls them with the data tuple, empty here).
    def _potential(self, data: tuple, x: Any) -> Any:
        logp = self.jax_functions[0]
        return -logp(*self._inputs(x))[0]

    def _constrain(self, data: tuple, x: Any) -> dict[str, Any]:
        _, values, names = self.jax_functions
        return dict(zip(names, values(*self._inputs(x))))

    def _takes_data(self) -> bool:
        return False

    def _chunk(self, runner: Any, state: Any, n: int, start: int, warmup: bool, chains: int,
               target: np.ndarray) -> tuple[Any, Chunk]:
        """The NumPyro driver's chunk, its posterior in the PyMC model's order (free variables, then deterministics,
        as declared: the order pm.sample's posterior has; jax hands a dict back sorted by name)."""
        state, chunk = super()._chunk(runner, state, n, start, warmup, chains, target)
        chunk.posterior = {name: chunk.posterior[name] for name in self.jax_functions[2] if name in chunk.posterior}
        return state, chunk

    # -- CompiledModel: the log density is the JAX function; the rest is the PyMC model's ------------------

    def log_density_and_gradient(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """The jitted JAX log density and gradient NUTS runs (NaN and infinities passed through)."""
        self.jax_functions  # noqa: B018  (made outside the x64 context: it restores the flag)
        return super().log_density_and_gradient(x)

    def initial_point(self, strategy: str = "default", random_seed: int | None = None) -> np.ndarray:
        """The inner model's starts; ``default`` redrawn while the JAX log density (not PyMC's, which would be
        compiled for this alone) is not finite."""
        if strategy == "default":
            return self.inner.jittered_point(np.random.default_rng(random_seed), self.log_density)
        return self.inner.initial_point(strategy, random_seed)

    def with_data(self, args: tuple, kwargs: Mapping[str, Any]) -> Any:
        raise NotImplementedError("NumPyro's NUTS over a PyMC model holds the data as constants of PyMC's JAX "
                                  "translation: compile each data set.")

    # -- NUTS: the NumPyro driver, its sampler states under this engine's name ----------------------------------

    def run_nuts(self, settings: NUTSSettings, on_chunk: Callable[[Chunk], bool]) -> NUTSRun:
        """NumPyro's NUTS in chunks (:meth:`NumPyroCompiledModel._run_nuts`); with ``settings.warm_state``, a
        warm start checked by :func:`resilient.warm_start.run_warm`, which falls back to the full warm-up."""
        self.jax_functions  # noqa: B018  (translated before any deadline counts down the first chunk)
        if settings.warm_state is not None:
            from resilient.warm_start import run_warm

            return run_warm(self, ENGINE, settings, on_chunk, self._run_nuts)
        return self._run_nuts(settings, on_chunk)

    def _run_nuts(self, settings: NUTSSettings, on_chunk: Callable[[Chunk], bool], warm: Any = None,
                  window: int = 0, reestimate: bool = False) -> NUTSRun:
        resumed = settings.resume_state
        if resumed is not None and hasattr(resumed, "native"):
            if resumed.engine != ENGINE or not resumed.native:
                raise ValueError(f"`resume_state` must be a {ENGINE} run's state, got one of {resumed.engine}.")
            settings = replace(settings, resume_state=replace(resumed, engine=_DRIVER))

        divergences: dict[int, int] = {}

        def renamed(chunk: Chunk) -> bool:
            if chunk.state is not None and getattr(chunk.state, "engine", None) == _DRIVER:
                chunk.state = replace(chunk.state, engine=ENGINE)
            chunk.sample_stats.update(_pymc_stats(chunk, settings.max_tree_depth, divergences))
            return on_chunk(chunk)

        return super()._run_nuts(settings, renamed, warm, window, reestimate)


def _pymc_stats(chunk: Chunk, max_tree_depth: int, divergences: dict[int, int]) -> dict[str, np.ndarray]:
    """:data:`PYMC_COMPUTED` for ``chunk``; ``divergences`` holds each chain's post-warm-up count so far."""
    stats = chunk.sample_stats
    step = np.asarray(stats["step_size"], np.float64)
    return {"reached_max_treedepth": np.asarray(stats["tree_depth"]) >= int(max_tree_depth),
            "step_size_bar": np.full(step.shape, np.nan) if chunk.warmup else step,
            **pymc_running_stats(stats["diverging"], chunk.chains, chunk.warmup, divergences)}


def _with_gradient(get_jaxified_graph: Callable, inputs: list[Any], logp: Any,
                   shapes: list[tuple[tuple[int, ...], str]]) -> tuple[Callable, str]:
    """The JAX log density of ``inputs`` and which gradient it has: ``"pytensor"``, PyTensor's symbolic gradient
    translated with it (:func:`_pytensor_gradient`), where JAX can trace that graph at the inputs' ``shapes``;
    else ``"jax"``, JAX's autodiff of the translated log density (a gradient graph with sizes computed from values,
    as ZeroSumNormal's and GaussianRandomWalk's have, cannot be jitted)."""
    import jax

    try:
        function = _pytensor_gradient(get_jaxified_graph, inputs, logp)
        jax.eval_shape(jax.value_and_grad(lambda *values: function(*values)[0], argnums=tuple(range(len(inputs)))),
                       *[jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in shapes])
        return function, "pytensor"
    except Exception:  # noqa: BLE001 - any failure to build or trace it: the translation's own autodiff
        return get_jaxified_graph(inputs=inputs, outputs=[logp]), "jax"


def _pytensor_gradient(get_jaxified_graph: Callable, inputs: list[Any], logp: Any) -> Callable:
    """The JAX log density of ``inputs`` whose derivative (``jax.custom_jvp``, so ``jax.grad`` and NumPyro's NUTS
    use it) is PyTensor's symbolic gradient, translated with it. JAX's own autodiff of the translation differentiates
    both branches of a ``switch`` and multiplies the one not taken by zero: PyMC's numerically guarded log CDFs
    (a Truncated Normal's tail, P4) then give a NaN gradient where the log density and PyTensor's gradient are
    finite."""
    import jax
    import jax.numpy as jnp
    import pytensor

    gradients = pytensor.grad(logp, inputs, disconnected_inputs="ignore")
    both = get_jaxified_graph(inputs=inputs, outputs=[logp, *gradients])

    @jax.custom_jvp
    def value(*values: Any) -> Any:
        return both(*values)[0]

    @value.defjvp
    def _jvp(primals: tuple, tangents: tuple) -> tuple[Any, Any]:
        out = both(*primals)
        return out[0], sum(jnp.sum(g * t) for g, t in zip(out[1:], tangents))

    return lambda *values: [value(*values)]


def _pymc_jax() -> Any:
    """``pymc.sampling.jax`` (its import registers PyTensor's Assert and parameter checks as pass-throughs in JAX),
    imported without the ``XLA_FLAGS`` it sets for the process (100 host devices) and without the x64 flag
    PyTensor's JAX linker sets globally on import."""
    import sys

    if "pymc.sampling.jax" in sys.modules:
        return sys.modules["pymc.sampling.jax"]
    flags = os.environ.get("XLA_FLAGS")
    try:
        import pymc.sampling.jax as module
    finally:
        if flags is None:
            os.environ.pop("XLA_FLAGS", None)
        else:
            os.environ["XLA_FLAGS"] = flags
    return module


@contextlib.contextmanager
def _x64_restored() -> Iterator[None]:
    """x64 on for what runs inside (PyMC's constants stay float64), the process's global flag as it was after."""
    import jax

    before = bool(jax.config.jax_enable_x64)
    try:
        with jax.enable_x64(True):
            yield
    finally:
        jax.config.update("jax_enable_x64", before)
