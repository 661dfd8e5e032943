"""The compiled model: log density, gradient, per-site terms, transforms and initial points on jax."""

from __future__ import annotations

from resilient.adapters.common import check_strategy, refuse_discrete_latents, require_every_latent, uniform_point

import contextlib
import secrets
import time
from functools import partial
from typing import Any, Callable, Iterator, Mapping
import numpy as np
import jax
import jax.numpy as jnp
from jax import lax
from numpyro import handlers
from numpyro.distributions.distribution import validation_enabled
from numpyro.distributions.transforms import biject_to
from numpyro.distributions.util import sum_rightmost
from numpyro.infer import NUTS
from numpyro.infer.initialization import init_to_median, init_to_sample, init_to_uniform
from numpyro.infer.util import constrain_fn, potential_energy
from resilient.backend import STAT_NAMES, Chunk, NUTSRun, NUTSSettings
from resilient.model import Site
from resilient.adapters.numpyro.native import _is_real, _is_unit
from resilient.adapters.numpyro.runner import CHAIN_METHODS, _NoProgress, _Runner, _jax_failure, _progress, _resume_iteration




_STRATEGIES = {
    "default": lambda: init_to_uniform(radius=2),
    "uniform": lambda: init_to_uniform(radius=2),
    "prior": lambda: init_to_sample,
    "median": lambda: init_to_median(num_samples=15),
}


class NumPyroCompiledModel:
    """A model compiled for NumPyro; see :class:`resilient.backend.CompiledModel`."""

    backend = "numpyro"

    def __init__(self, model_fn: Callable, *, float32: bool, chain_method: str | None, name: str) -> None:
        self._model_fn = model_fn
        self.float32 = float32
        self.name = name
        self._chain_method = chain_method
        self.sites: dict[str, Site] = {}
        self._observed: dict[str, np.ndarray] = {}
        self._latent_shapes: dict[str, tuple[int, ...]] = {}
        self._unconstrained_shapes: dict[str, tuple[int, ...]] = {}
        self._blocks: dict[str, slice] = {}
        self.latent_names: tuple[str, ...] = ()
        self.dimension = 0
        self._jitted: dict[str, Callable] = {}
        self._dims: dict[str, list[str]] = {}  # site -> dimension names, as az.from_numpyro infers them
        #: latents Resilient added (``<name>_decentered`` of a native site it non-centred): sampled, but kept out
        #: of the draws, so the posterior has the variables the user's model has, as az.from_numpyro gives them
        self.hidden: frozenset[str] = frozenset()
        self._runners: dict[tuple, _Runner] = {}

    # -- set-up -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def precision(self) -> Iterator[None]:
        """The context every jax call of this model runs in: its precision, and NumPyro's argument
        validation off (it would raise on a NaN parameter in an eager trace, and a model that is NaN
        somewhere must still compile so that preflight can say where)."""
        with jax.enable_x64(not self.float32), validation_enabled(False):
            yield

    @property
    def dtype(self) -> Any:
        return np.float32 if self.float32 else np.float64

    def _trace_once(self, seed: int = 0) -> dict:
        """A concrete trace at a seeded uniform(-2, 2) point: shapes and sites, no validity search."""
        seeded = handlers.seed(self._model_fn, rng_seed=seed)
        substituted = handlers.substitute(seeded, substitute_fn=init_to_uniform(radius=2))
        return handlers.trace(substituted).get_trace()

    def _layout(self, model_trace: dict) -> None:
        start = 0
        names = []
        for name, site in model_trace.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            if site["fn"].support.is_discrete:
                refuse_discrete_latents([name])
            shape = tuple(jnp.shape(site["value"]))
            unconstrained = tuple(biject_to(site["fn"].support).inverse_shape(shape))
            size = int(np.prod(unconstrained, dtype=int))
            names.append(name)
            self._latent_shapes[name] = shape
            self._unconstrained_shapes[name] = unconstrained
            self._blocks[name] = slice(start, start + size)
            start += size
        self.latent_names = tuple(names)
        self.dimension = start
        self._observed = {
            name: np.asarray(site["value"])
            for name, site in model_trace.items()
            if site["type"] == "sample" and site["is_observed"] and not _is_unit(site)
        }

    def _name_dims(self, model_trace: dict) -> None:
        """Dimension names as ``az.from_numpyro`` infers them (``arviz_base.io_numpyro.infer_dims``): each
        sample or deterministic site's plates, outermost first (sorted by the plate's ``dim``), then the
        names in ``infer={"event_dims": [...]}``. Plates carry no coordinates there, so none here."""
        dims = {}
        for name, site in model_trace.items():
            if site["type"] not in ("sample", "deterministic"):
                continue
            batch = [frame.name for frame in sorted(site.get("cond_indep_stack", ()), key=lambda f: f.dim)]
            names = batch + list((site.get("infer") or {}).get("event_dims", []))
            if names and len(names) <= jnp.ndim(site["value"]):
                dims[name] = names
        self._dims = dims

    def datatree_layout(self) -> dict[str, Any]:
        """Dims named after plates, as ``az.from_numpyro`` names them (see :meth:`_name_dims`)."""
        return {"dims": {name: list(names) for name, names in self._dims.items()}} if self._dims else {}

    # -- flattening ---------------------------------------------------------------------------

    def blocks(self) -> dict[str, slice]:
        return dict(self._blocks)

    def unravel(self, x: Any) -> dict[str, Any]:
        """Unconstrained values by latent name from the flat vector (jax-traceable)."""
        return {
            name: jnp.reshape(x[self._blocks[name]], self._unconstrained_shapes[name])
            for name in self.latent_names
        }

    def _input(self, x: Any) -> np.ndarray:
        """``x`` checked and cast to the model's dtype; a NumPy array, which a jitted function
        takes without the dispatch ``jnp.asarray`` costs (most of an evaluation on small models)."""
        array = np.asarray(x, dtype=float).reshape(-1)
        if array.shape != (self.dimension,):
            raise ValueError(
                f"`x` must be a vector of length {self.dimension} (the model's unconstrained dimension), "
                f"got shape {np.shape(x)}."
            )
        return array.astype(self.dtype)

    # -- pure functions of x (jax-traceable) ---------------------------------------------------

    def _potential(self, x: Any) -> Any:
        return potential_energy(self._model_fn, (), {}, self.unravel(x))

    def _log_density(self, x: Any) -> Any:
        return -self._potential(x)

    def _site_terms(self, x: Any) -> dict[str, Any]:
        params = self.unravel(x)
        log_jacobians: dict[str, Any] = {}

        def substitute_fn(site: dict) -> Any:
            name = site["name"]
            if site["type"] != "sample" or name not in params:
                return None
            p = params[name]
            support = site["fn"].support
            if _is_real(support):
                return p
            transform = biject_to(support)
            value = transform(p)
            log_det = transform.log_abs_det_jacobian(p, value)
            log_det = sum_rightmost(log_det, jnp.ndim(log_det) - jnp.ndim(value) + len(site["fn"].event_shape))
            if site.get("scale") is not None:
                log_det = site["scale"] * log_det
            log_jacobians[name] = jnp.sum(log_det)
            return value

        model_trace = handlers.trace(handlers.substitute(self._model_fn, substitute_fn=substitute_fn)).get_trace()
        terms = {}
        for name, site in model_trace.items():
            if site["type"] != "sample":
                continue
            log_prob = site["fn"].log_prob(site["value"])
            if site.get("scale") is not None:
                log_prob = site["scale"] * log_prob
            terms[name] = jnp.sum(log_prob) + log_jacobians.get(name, 0.0)
        return terms

    def _constrain(self, x: Any) -> dict[str, Any]:
        return constrain_fn(self._model_fn, (), {}, self.unravel(x), return_deterministic=True)

    def _initial(self, strategy: str, key: Any) -> Any:
        seeded = handlers.seed(self._model_fn, rng_seed=key)
        substituted = handlers.substitute(seeded, substitute_fn=_STRATEGIES[strategy]())
        model_trace = handlers.trace(substituted).get_trace()
        parts = []
        for name in self.latent_names:
            site = model_trace[name]
            value = site["value"]
            unconstrained = value if _is_real(site["fn"].support) else biject_to(site["fn"].support).inv(value)
            parts.append(jnp.reshape(unconstrained, (-1,)))
        if not parts:
            return jnp.zeros((0,))
        return jnp.concatenate(parts).astype(jnp.result_type(float))

    def _unconstrain(self, values: Mapping[str, Any]) -> Any:
        model_trace = handlers.trace(handlers.substitute(self._model_fn, data=dict(values))).get_trace()
        parts = []
        for name in self.latent_names:
            site = model_trace[name]
            value = site["value"]
            unconstrained = value if _is_real(site["fn"].support) else biject_to(site["fn"].support).inv(value)
            parts.append(jnp.reshape(unconstrained, (-1,)))
        return jnp.concatenate(parts) if parts else jnp.zeros((0,))

    def _function(self, name: str) -> Callable:
        if name not in self._jitted:
            if name == "value_and_grad":
                function = jax.value_and_grad(self._log_density)
            elif name == "site_terms":
                function = self._site_terms
            elif name == "site_gradients":
                # One reverse pass per site, not a Jacobian of all terms: there a zero cotangent
                # times another site's NaN partial would spread that NaN to every row.
                def gradients(x):
                    names = tuple(self._site_terms(x))
                    return {site: jax.grad(lambda y, site=site: self._site_terms(y)[site])(x) for site in names}

                function = gradients
            elif name == "constrain":
                function = self._constrain
            elif name.startswith("initial:"):
                function = partial(self._initial, name.split(":", 1)[1])
            elif name == "unconstrain":
                function = self._unconstrain
            else:  # pragma: no cover - internal names only
                raise KeyError(name)
            self._jitted[name] = jax.jit(function)
        return self._jitted[name]

    # -- CompiledModel ------------------------------------------------------------------------

    def log_density(self, x: np.ndarray) -> float:
        """The value half of :meth:`log_density_and_gradient`: one jitted function for both saves
        a compilation (0.1-0.3 s) on every model, for a gradient that costs microseconds here."""
        return self.log_density_and_gradient(x)[0]

    def log_density_and_gradient(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        with self.precision():
            value, gradient = self._function("value_and_grad")(self._input(x))
            return float(value), np.asarray(gradient, dtype=np.float64)

    def site_log_densities(self, x: np.ndarray) -> dict[str, float]:
        with self.precision():
            terms = self._function("site_terms")(self._input(x))
            return {name: float(value) for name, value in terms.items()}

    def site_gradients(self, x: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        with self.precision():
            gradients = self._function("site_gradients")(self._input(x))
            return {
                site: {latent: np.asarray(gradient[block], dtype=np.float64) for latent, block in self._blocks.items()}
                for site, gradient in gradients.items()
            }

    def constrain(self, x: np.ndarray) -> dict[str, np.ndarray]:
        with self.precision():
            values = self._function("constrain")(self._input(x))
            return {name: np.asarray(value) for name, value in values.items()}

    def unconstrain(self, values: Mapping[str, Any]) -> np.ndarray:
        require_every_latent(values, self.latent_names)
        latent = {}
        for name in self.latent_names:
            array = np.asarray(values[name], dtype=float)
            try:
                latent[name] = np.broadcast_to(array, self._latent_shapes[name]).astype(self.dtype)
            except ValueError as error:
                raise ValueError(
                    f"`values[{name!r}]` must have shape {self._latent_shapes[name]}, got {array.shape}."
                ) from error
        with self.precision():
            return np.asarray(self._function("unconstrain")(latent), dtype=np.float64)

    def initial_point(self, strategy: str = "default", random_seed: int | None = None) -> np.ndarray:
        check_strategy(strategy)
        seed = secrets.randbits(31) if random_seed is None else int(random_seed)
        if strategy in ("default", "uniform"):  # init_to_uniform(radius=2), drawn without a model trace
            return uniform_point(seed, self.dimension)
        with self.precision():  # prior draws run many small random kernels: one compilation is cheaper
            point = self._function(f"initial:{strategy}")(jax.random.PRNGKey(seed % 2**32))
            return np.asarray(point, dtype=np.float64)

    def observed_data(self) -> dict[str, np.ndarray]:
        return {name: value.copy() for name, value in self._observed.items()}

    # -- NUTS ---------------------------------------------------------------------------------

    def chain_method(self, chains: int) -> str:
        """``parallel`` (pmap, one device per chain) where there are enough devices, else ``vectorized``."""
        method = self._chain_method
        if method is None or method == "parallel":
            return "parallel" if jax.local_device_count() >= chains else "vectorized"
        return method

    def _runner(self, settings: NUTSSettings, method: str, resume_from: int | None = None) -> _Runner:
        length = max(1, min(settings.chunk_size, max(settings.tune, settings.draws)))
        key = (settings.chains, method, settings.tune, settings.max_tree_depth, length)
        if key in self._runners:
            return self._runners[key]
        if resume_from is not None and resume_from >= settings.tune:
            # Past warm-up every runner whose warm-up ended by then takes the same steps: reuse one.
            for (chains, other_method, tune, *rest), runner in self._runners.items():
                if (chains, other_method, *rest) == (key[0], key[1], *key[3:]) and tune <= resume_from:
                    return runner
        tune = settings.tune

        def kernel_from(rng_key, z, target):
            """A NUTS kernel for ``target`` (traced) and its first state. NumPyro builds the
            sampling step, with the target inside its warm-up adaptation, in ``init``; the
            chunk function calls it in its own trace and uses only that step (XLA drops the
            rest), so a new target reuses the compiled code."""
            kernel = NUTS(potential_fn=self._potential, target_accept_prob=target,
                          max_tree_depth=settings.max_tree_depth)
            return kernel, kernel.init(rng_key, tune, init_params=z, model_args=(), model_kwargs={})

        def init_one(rng_key, z, target):
            return kernel_from(rng_key, z, target)[1]

        def chunk_one(state, n, target):
            kernel, _ = kernel_from(state.rng_key, state.z, target)

            def step(current):
                return kernel.sample(current, (), {})

            def body(carry, k):
                new = lax.cond(k < n, step, lambda s: s, carry)
                stats = (new.potential_energy, new.energy, new.num_steps, new.accept_prob,
                         new.diverging, new.adapt_state.step_size)
                return new, (new.z, stats)

            state, (zs, stats) = lax.scan(body, state, jnp.arange(length))
            posterior = jax.vmap(self._constrain)(zs)
            return state, posterior, stats

        if method == "parallel":
            devices = jax.local_devices()[: settings.chains]
            init = jax.pmap(init_one, in_axes=(0, 0, None), devices=devices)
            chunk = jax.pmap(chunk_one, in_axes=(0, None, None), devices=devices)
        else:
            init = jax.jit(jax.vmap(init_one, in_axes=(0, 0, None)))
            chunk = jax.jit(jax.vmap(chunk_one, in_axes=(0, None, None)))
        runner = _Runner(init, chunk, length)
        self._runners[key] = runner
        return runner

    def _starting_points(self, settings: NUTSSettings, seed: int) -> tuple[np.ndarray, bool]:
        if settings.initial_points is not None:
            points = np.asarray(settings.initial_points, dtype=np.float64)
            if points.shape != (settings.chains, self.dimension):
                raise ValueError(
                    f"`initial_points` must have shape (chains, dimension) = ({settings.chains}, {self.dimension}), "
                    f"got {points.shape}."
                )
            return points, False
        seeds = np.random.SeedSequence(seed).generate_state(settings.chains)
        return np.stack([self.initial_point("default", int(s)) for s in seeds]), True

    def run_nuts(self, settings: NUTSSettings, on_chunk: Callable[[Chunk], bool]) -> NUTSRun:
        method = self.chain_method(settings.chains)
        if method not in CHAIN_METHODS:
            raise ValueError(
                f"`chain_method` must be one of {', '.join(repr(m) for m in CHAIN_METHODS)}, got {method!r}."
            )
        seed = secrets.randbits(31) if settings.random_seed is None else int(settings.random_seed)
        chains = settings.chains
        extra: dict[str, Any] = {"chain_method": method, "random_seed": seed}
        warmup_seconds = sampling_seconds = 0.0
        started = time.monotonic()
        progress: Any = _NoProgress()
        try:
            with self.precision():
                resume_from = None
                if settings.resume_state is not None:
                    resume_from = _resume_iteration(settings.resume_state, chains, self.dimension)
                runner = self._runner(settings, method, resume_from)
                target = np.asarray(settings.target_accept, self.dtype)  # an argument: no recompile per target
                if settings.resume_state is not None:
                    state = settings.resume_state
                    warmup_start = min(resume_from, settings.tune)
                    extra["resumed_from_iteration"] = resume_from
                else:
                    with _jax_failure("while starting the chains"):
                        state, warmup_start = self._initial_state(runner, settings, seed, target), 0
                warmup_seconds += time.monotonic() - started
                progress = _progress(settings, settings.tune - warmup_start + settings.draws)
                phases = ((True, warmup_start, settings.tune), (False, 0, settings.draws))
                for warmup, start, stop in phases:
                    position = start
                    while position < stop:
                        if settings.deadline is not None and time.monotonic() > settings.deadline:
                            return NUTSRun(False, "deadline", warmup_seconds, sampling_seconds, extra)
                        n = min(runner.length, stop - position)
                        tic = time.monotonic()
                        phase = "warm-up" if warmup else "sampling"
                        with _jax_failure(f"in {phase} iterations {position}-{position + n - 1}"):
                            state, chunk = self._chunk(runner, state, n, position, warmup, chains, target)
                        elapsed = time.monotonic() - tic
                        if warmup:
                            warmup_seconds += elapsed
                        else:
                            sampling_seconds += elapsed
                        position += n
                        progress.update(n)
                        if on_chunk(chunk) is False:
                            return NUTSRun(False, "stopped", warmup_seconds, sampling_seconds, extra)
                return NUTSRun(True, "", warmup_seconds, sampling_seconds, extra)
        except KeyboardInterrupt:
            return NUTSRun(False, "interrupted", warmup_seconds, sampling_seconds, extra)
        finally:
            progress.close()

    def _initial_state(self, runner: _Runner, settings: NUTSSettings, seed: int, target: np.ndarray) -> Any:
        chains = settings.chains
        points, searched = self._starting_points(settings, seed)
        keys = jax.random.split(jax.random.PRNGKey(seed % 2**32), chains)
        state = jax.device_get(runner.init(keys, jnp.asarray(points.astype(self.dtype)), target))
        if searched:  # like NumPyro: retry chains whose start has a non-finite density or gradient
            for attempt in range(1, 20):
                valid = np.isfinite(state.potential_energy) & np.all(np.isfinite(state.z_grad), axis=-1)
                if valid.all():
                    break
                retry = np.random.SeedSequence([seed, attempt]).generate_state(chains)
                for chain in np.flatnonzero(~valid):
                    points[chain] = self.initial_point("default", int(retry[chain]))
                state = jax.device_get(runner.init(keys, jnp.asarray(points.astype(self.dtype)), target))
        return state

    def _chunk(self, runner: _Runner, state: Any, n: int, start: int, warmup: bool,
               chains: int, target: np.ndarray) -> tuple[Any, Chunk]:
        new_state, posterior, stats = jax.device_get(runner.chunk(state, np.int32(n), target))
        potential, energy, num_steps, accept_prob, diverging, step_size = (s[:, :n] for s in stats)
        num_steps = np.asarray(num_steps, dtype=np.int64)
        tree_depth = np.where(num_steps > 0, np.floor(np.log2(np.maximum(num_steps, 1))).astype(np.int64) + 1, 0)
        sample_stats = {
            "diverging": np.asarray(diverging, dtype=bool),
            "tree_depth": tree_depth,
            "n_steps": num_steps,
            "energy": np.asarray(energy),
            "lp": -np.asarray(potential),
            "acceptance_rate": np.asarray(accept_prob),
            "step_size": np.asarray(step_size),
        }
        assert tuple(sample_stats) == STAT_NAMES
        chunk = Chunk(
            chains=tuple(range(chains)),
            start=start,
            warmup=warmup,
            posterior={name: np.asarray(value)[:, :n] for name, value in posterior.items() if name not in self.hidden},
            sample_stats=sample_stats,
            state=new_state,
        )
        return new_state, chunk
