"""The compiled model: log density, gradient, per-site terms, transforms and initial points on jax."""

from __future__ import annotations

from resilient.adapters.common import check_strategy, refuse_discrete_latents, require_every_latent, uniform_point

import contextlib
import secrets
import time
from dataclasses import replace
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
from resilient.errors import DiscreteLatentError, ModelError
from resilient.model import Site
from resilient.adapters.numpyro.native import _is_real, _is_unit, _unwrap
from resilient.adapters.numpyro.runner import (CHAIN_METHODS, _NoProgress, _Runner, _jax_failure, _progress,
                                              _resume_iteration, forget_mass_matrix_draws, hmc_state, state_record,
                                              warm_hmc_state)




_STRATEGIES = {
    "default": lambda: init_to_uniform(radius=2),
    "uniform": lambda: init_to_uniform(radius=2),
    "prior": lambda: init_to_sample,
    "median": lambda: init_to_median(num_samples=15),
}


class NumPyroCompiledModel:
    """A model compiled for NumPyro; see :class:`resilient.backend.CompiledModel`."""

    backend = "numpyro"

    def __init__(self, model_fn: Callable, *, float32: bool, chain_method: str | None, name: str,
                 arguments: "DataArguments | None" = None, native: bool = False) -> None:
        #: the model as a function of one argument: the data arrays of ``arguments`` (a tuple)
        self._model_fn = model_fn
        self._arguments = arguments
        self._data: tuple = arguments.values if arguments is not None else ()
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
        #: a native NumPyro function (its discrete sites may ask NumPyro to enumerate them), not a shared-API model
        self.native = native
        #: discrete sites marginalised by enumeration, as NumPyro's NUTS does (``infer={"enumerate": "parallel"}``):
        #: not latents (not in the unconstrained vector, not in the draws); see :meth:`_layout`
        self.enumerated: tuple[str, ...] = ()
        #: the first dimension left of the plates, where NumPyro's ``enum`` handler puts enumerated values
        self._first_enum_dim = -1
        #: the sites whose log density terms depend on an enumerated value (their terms are one marginal)
        self._enum_group: frozenset[str] = frozenset()
        self._bound: dict[str, Callable] = {}
        self._dims: dict[str, list[str]] = {}  # site -> dimension names, as az.from_numpyro infers them
        #: latents Resilient added (``<name>_decentered`` of a native site it non-centred): sampled, but kept out
        #: of the draws, so the posterior has the variables the user's model has, as az.from_numpyro gives them
        self.hidden: frozenset[str] = frozenset()
        self._runners: dict[tuple, _Runner] = {}
        #: jitted programs by name; shared with the models :meth:`with_data` makes
        self._programs: dict[str, Callable] = {}
        #: True: the programs take the data arrays as arguments; False: the data are constants in them
        #: (decided on first use by :meth:`_takes_data`)
        self._traced: bool | None = None
        self._structure: tuple = ()
        #: what else fixes the program beyond the arguments and the structure (native: the learned literals)
        self._fixed_by: Any = None
        self._site_records: Callable[[], Mapping[str, Site]] = lambda: self.sites
        #: ``(args, kwargs) -> a model compiled on them``, set by the adapter: what :meth:`with_data` builds on
        self._rebuild: Callable[[tuple, dict], "NumPyroCompiledModel"] | None = None

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
        return handlers.trace(substituted).get_trace(self._data)

    def _layout(self, model_trace: dict) -> None:
        start = 0
        names = []
        enumerated, refused = [], []
        for name, site in model_trace.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            if site["fn"].support.is_discrete:
                (enumerated if self.native and _enumerable(site) else refused).append(name)
                continue
            shape = tuple(jnp.shape(site["value"]))
            unconstrained = tuple(biject_to(site["fn"].support).inverse_shape(shape))
            size = int(np.prod(unconstrained, dtype=int))
            names.append(name)
            self._latent_shapes[name] = shape
            self._unconstrained_shapes[name] = unconstrained
            self._blocks[name] = slice(start, start + size)
            start += size
        if refused:
            if self.native:
                _refuse_unenumerated(refused, model_trace)
            refuse_discrete_latents(refused)
        self.latent_names = tuple(names)
        self.dimension = start
        if enumerated:
            self._enumeration(model_trace, tuple(enumerated))
        self._observed = {
            name: np.asarray(site["value"])
            for name, site in model_trace.items()
            if site["type"] == "sample" and site["is_observed"] and not _is_unit(site)
        }
        self._structure = _structure(model_trace, self._site_records())

    def _enumeration(self, model_trace: dict, enumerated: tuple[str, ...]) -> None:
        """Set up the enumeration of ``enumerated`` as NumPyro's ``initialize_model`` does
        (``_prepare_model_for_potential``): its plate check, and the first free dimension left of the
        deepest plate (``_guess_max_plate_nesting``); then which sites' terms depend on an enumerated value
        (from one enumerated trace: their factors carry an enumerated dimension), for :meth:`_site_terms`."""
        from numpyro.infer.util import _guess_max_plate_nesting
        from numpyro.util import _validate_model

        try:
            _validate_model(model_trace, plate_warning="error")
        except ValueError as error:  # NumPyro's words name the site; its NUTS stops on the same check
            raise ModelError(f"NumPyro cannot enumerate {', '.join(f'`{n}`' for n in enumerated)} in the model "
                             f"{self.name!r}: {error}", site=enumerated[0]) from error
        self.enumerated = enumerated
        self._first_enum_dim = -_guess_max_plate_nesting(model_trace) - 1
        for name in enumerated:
            if name in self.sites:
                self.sites[name] = replace(self.sites[name], kind="enumerated", noncenterable=False)
        packed = self._enumerated_trace(self._data, handlers.substitute(
            handlers.seed(self._model_fn, rng_seed=0),
            data={n: model_trace[n]["value"] for n in self.latent_names}))
        marked = set(enumerated)
        group = set(enumerated)
        for name, site in packed.items():
            if site["type"] != "sample":
                continue
            dims = {d.replace("_PREV_", "") for d in (site.get("infer") or {}).get("dim_to_name", {}).values()}
            if dims & marked or any(d.startswith("_time") for d in dims):
                group.add(name)
        self._enum_group = frozenset(group)

    def _enum_model(self, fn: Callable | None = None) -> Callable:
        """``fn`` (the model) as NumPyro's NUTS runs a model with enumerated sites: ``enum(config_enumerate(fn))``."""
        from numpyro.contrib.funsor import config_enumerate, enum

        return enum(config_enumerate(self._model_fn if fn is None else fn), self._first_enum_dim)

    def _enumerated_trace(self, data: tuple, fn: Callable) -> dict:
        """The trace NumPyro's enumerated log density reads (``_enum_log_density``): ``fn`` under ``enum``,
        plates as enumeration plates, each site's ``infer["dim_to_name"]`` naming its dimensions."""
        from numpyro.contrib.funsor import plate_to_enum_plate, trace as packed_trace

        with plate_to_enum_plate():
            return packed_trace(self._enum_model(fn)).get_trace(data)

    def _seeded(self) -> Callable:
        """The model with its own PRNG key where it has enumerated sites: replaying it with the latents
        substituted (to constrain or unconstrain them) samples those sites once, as NumPyro's ``postprocess_fn``
        does (``seed(model.fn, 0)``); their values are not kept."""
        return handlers.seed(self._model_fn, rng_seed=0) if self.enumerated else self._model_fn

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

    def _potential(self, data: tuple, x: Any) -> Any:
        if self.enumerated:  # NumPyro's potential with its enum handler: the enumerated sites summed out
            return potential_energy(self._enum_model(), (data,), {}, self.unravel(x), enum=True)
        return potential_energy(self._model_fn, (data,), {}, self.unravel(x))

    def _log_density(self, data: tuple, x: Any) -> Any:
        return -self._potential(data, x)

    def _site_terms(self, data: tuple, x: Any) -> dict[str, Any]:
        params = self.unravel(x)
        log_jacobians: dict[str, Any] = {}
        substitute_fn = _unconstraining(params, log_jacobians)
        if self.enumerated:
            return self._enumerated_site_terms(data, params, substitute_fn, log_jacobians)
        model_trace = handlers.trace(handlers.substitute(self._model_fn, substitute_fn=substitute_fn)).get_trace(data)
        terms = {}
        for name, site in model_trace.items():
            if site["type"] != "sample":
                continue
            terms[name] = _site_log_prob(site) + log_jacobians.get(name, 0.0)
        return terms

    def _enumerated_site_terms(self, data: tuple, params: Mapping[str, Any], substitute_fn: Callable,
                               log_jacobians: dict[str, Any]) -> dict[str, Any]:
        """Per-site terms of a model with enumerated sites: a site whose term does not depend on an
        enumerated value has its own; the enumerated sites and every site that depends on them have one
        term together, under the first enumerated site's name: their marginal, NumPyro's enumerated log
        density (:func:`numpyro.contrib.funsor.log_density`) of the model with the other sites blocked.
        The terms still add up to the log density."""
        from numpyro.contrib.funsor import log_density as enum_log_density

        group = self._enum_group
        packed = self._enumerated_trace(data, handlers.substitute(self._model_fn, substitute_fn=substitute_fn))
        terms = {}
        for name, site in packed.items():
            if site["type"] == "sample" and name not in group:
                terms[name] = _site_log_prob(site) + log_jacobians.get(name, 0.0)
        blocked = handlers.block(handlers.substitute(self._model_fn, substitute_fn=substitute_fn),
                                 hide_fn=lambda site: site["name"] not in group)
        marginal, _ = enum_log_density(self._enum_model(blocked), (data,), {}, {})
        terms[self.enumerated[0]] = marginal + sum(log_jacobians.get(n, 0.0) for n in sorted(group))
        return terms

    def _constrain(self, data: tuple, x: Any) -> dict[str, Any]:
        return constrain_fn(self._seeded(), (data,), {}, self.unravel(x), return_deterministic=True)

    def _initial(self, strategy: str, data: tuple, key: Any) -> Any:
        seeded = handlers.seed(self._model_fn, rng_seed=key)
        substituted = handlers.substitute(seeded, substitute_fn=_STRATEGIES[strategy]())
        model_trace = handlers.trace(substituted).get_trace(data)
        parts = []
        for name in self.latent_names:
            site = model_trace[name]
            value = site["value"]
            unconstrained = value if _is_real(site["fn"].support) else biject_to(site["fn"].support).inv(value)
            parts.append(jnp.reshape(unconstrained, (-1,)))
        if not parts:
            return jnp.zeros((0,))
        return jnp.concatenate(parts).astype(jnp.result_type(float))

    def _unconstrain(self, data: tuple, values: Mapping[str, Any]) -> Any:
        model_trace = handlers.trace(handlers.substitute(self._seeded(), data=dict(values))).get_trace(data)
        parts = []
        for name in self.latent_names:
            site = model_trace[name]
            value = site["value"]
            unconstrained = value if _is_real(site["fn"].support) else biject_to(site["fn"].support).inv(value)
            parts.append(jnp.reshape(unconstrained, (-1,)))
        return jnp.concatenate(parts) if parts else jnp.zeros((0,))

    def _function(self, name: str) -> Callable:
        """The jitted program ``name`` as a function of its one argument, on this model's data."""
        if name not in self._bound:
            traced = self._takes_data()
            program = self._programs.get(name) if traced else None
            if program is None:
                program = self._program(name, traced)
                if traced:
                    self._programs[name] = program
            self._bound[name] = partial(program, self._data) if traced else program
        return self._bound[name]

    def _program(self, name: str, traced: bool) -> Callable:
        """``jax.jit`` of the pure function ``name`` of ``(data, argument)``; with ``traced`` False the
        data are closed over (constants in the program) and it takes the argument alone."""
        if name == "value_and_grad":
            function = jax.value_and_grad(self._log_density, argnums=1)
        elif name == "site_terms":
            function = self._site_terms
        elif name == "site_gradients":
            # One reverse pass per site, not a Jacobian of all terms: there a zero cotangent
            # times another site's NaN partial would spread that NaN to every row.
            def gradients(data, x):
                names = tuple(self._site_terms(data, x))
                return {site: jax.grad(lambda y, site=site: self._site_terms(data, y)[site])(x) for site in names}

            function = gradients
        elif name == "constrain":
            function = self._constrain
        elif name.startswith("initial:"):
            function = partial(self._initial, name.split(":", 1)[1])
        elif name == "unconstrain":
            function = self._unconstrain
        else:  # pragma: no cover - internal names only
            raise KeyError(name)
        if traced:
            return jax.jit(function)
        data = self._data
        return jax.jit(lambda argument: function(data, argument))

    # -- data as arguments --------------------------------------------------------------------

    def _takes_data(self) -> bool:
        """Whether the programs take the data arrays as arguments (so :meth:`with_data` can reuse them),
        decided once. They can where a trace with the arrays abstract (shapes and dtypes only) runs and
        gives the model the same structure as the compile-time trace with their values: the same
        distributions, supports, shapes and rewrites. A model that uses its data's values in Python
        (``int(n.max())``, ``if y.min() > 0``) or whose rewrites depend on them (a truncation bound given as
        data: is it infinite?) keeps its data as constants, as every model did before."""
        if self._traced is None:
            self._traced = not self._data or self._abstract_structure() == self._structure
        return self._traced

    def _abstract_structure(self) -> tuple | None:
        found: list[tuple] = []

        def run(data: tuple) -> Any:
            seeded = handlers.seed(self._model_fn, rng_seed=0)
            substituted = handlers.substitute(seeded, substitute_fn=init_to_uniform(radius=2))
            found.append(_structure(handlers.trace(substituted).get_trace(data), self._site_records()))
            return jnp.zeros(())

        try:
            with self.precision():
                jax.eval_shape(run, self._data)
        except Exception:  # noqa: BLE001 - any failure with abstract data: keep the data as constants
            return None
        return found[0] if found else None

    def with_data(self, args: tuple, kwargs: Mapping[str, Any]) -> "NumPyroCompiledModel":
        """This model on another data set (the model function's ``args`` and ``kwargs``), reusing the jitted
        programs (log density, gradient, per-site terms, initial points, the NUTS chunks): compile once,
        sample many. The new data set is traced in Python (no XLA compile; sites, layout and rewrites are its
        own) and must give the same program: the same structure, the same non-array arguments, and arrays of
        the same shapes and dtypes (jax would compile new shapes again, and the latents' layout can depend on
        them).

        Raises ``NotImplementedError`` where this model's programs hold its data as constants (see
        :meth:`_takes_data`) and ``ValueError`` naming the difference where the new data set needs another
        program: compile that data set instead (``sample_many`` does)."""
        if self._rebuild is None or self._arguments is None:
            raise NotImplementedError(f"The model {self.name!r} was compiled without a way to take new data.")
        if not self._takes_data():
            raise NotImplementedError(
                f"The model {self.name!r} uses its data's values while it is traced (as Python numbers, in control "
                "flow or in a rewrite's decision), so its compiled programs hold them as constants: compile each "
                "data set."
            )
        other = self._rebuild(tuple(args), dict(kwargs))
        reason = self._difference(other)
        if reason is not None:
            raise ValueError(f"The new data set needs another compiled program for {self.name!r}: {reason}.")
        other._traced = True
        other._programs = self._programs
        other._runners = self._runners
        return other

    def _difference(self, other: "NumPyroCompiledModel") -> str | None:
        """Why ``other`` (the same model on other data) cannot run this model's programs, or None."""
        reason = self._arguments.difference(other._arguments) if other._arguments is not None else "no arguments"
        if reason is not None:
            return reason
        if (self.float32, self._chain_method, self.hidden) != (other.float32, other._chain_method, other.hidden):
            return "the precision, chain method or non-centred sites differ"
        if (self.latent_names, self._unconstrained_shapes) != (other.latent_names, other._unconstrained_shapes):
            return "the latent variables or their shapes differ"
        if self._structure != other._structure:
            return "the sites' distributions, supports, shapes or rewrites differ"
        if self._fixed_by != other._fixed_by:
            return "a constant the rewrites use (a truncation bound) differs"
        return None


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

    def log_likelihood(self, posterior: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Pointwise log likelihood of each observed site at the draws (see :mod:`.loglik`)."""
        from resilient.adapters.numpyro.loglik import log_likelihood

        return log_likelihood(self, posterior)

    # -- NUTS ---------------------------------------------------------------------------------

    def chain_method(self, chains: int) -> str:
        """``parallel`` (pmap, one device per chain) where there are enough devices, else ``vectorized``."""
        method = self._chain_method
        if method is None or method == "parallel":
            return "parallel" if jax.local_device_count() >= chains else "vectorized"
        return method

    def _runner(self, settings: NUTSSettings, method: str, resume_from: int | None = None) -> _Runner:
        length = max(1, min(settings.chunk_size, max(settings.tune, settings.draws)))
        dense = settings.mass_matrix == "full"
        if settings.mass_matrix not in ("diag", "full"):
            raise ValueError(f"NumPyro's NUTS adapts a mass matrix of kind 'diag' or 'full', not {settings.mass_matrix!r}.")
        key = (settings.chains, method, settings.tune, settings.max_tree_depth, length, dense)
        if key in self._runners:
            return self._runners[key]
        if resume_from is not None and resume_from >= settings.tune:
            # Past warm-up every runner whose warm-up ended by then takes the same steps: reuse one.
            for (chains, other_method, tune, *rest), runner in self._runners.items():
                if (chains, other_method, *rest) == (key[0], key[1], *key[3:]) and tune <= resume_from:
                    return runner
        tune = settings.tune

        traced = self._takes_data()

        def kernel_from(rng_key, z, target, data):
            """A NUTS kernel for ``target`` (traced) and its first state. NumPyro builds the
            sampling step, with the target inside its warm-up adaptation, in ``init``; the
            chunk function calls it in its own trace and uses only that step (XLA drops the
            rest), so a new target reuses the compiled code (and new data, where they are arguments)."""
            kernel = NUTS(potential_fn=partial(self._potential, data), target_accept_prob=target,
                          max_tree_depth=settings.max_tree_depth, dense_mass=dense)
            return kernel, kernel.init(rng_key, tune, init_params=z, model_args=(), model_kwargs={})

        def init_one(rng_key, z, target, data):
            return kernel_from(rng_key, z, target, data)[1]

        def chunk_one(state, n, target, data):
            kernel, _ = kernel_from(state.rng_key, state.z, target, data)

            def step(current):
                return kernel.sample(current, (), {})

            def body(carry, k):
                new = lax.cond(k < n, step, lambda s: s, carry)
                stats = (new.potential_energy, new.energy, new.num_steps, new.accept_prob,
                         new.diverging, new.adapt_state.step_size)
                return new, (new.z, stats)

            state, (zs, stats) = lax.scan(body, state, jnp.arange(length))
            posterior = jax.vmap(partial(self._constrain, data))(zs)
            return state, posterior, stats

        if not traced:
            data = self._data
            init_one = partial(lambda _init, k, z, t: _init(k, z, t, data), init_one)
            chunk_one = partial(lambda _chunk, s, n, t: _chunk(s, n, t, data), chunk_one)
        shared = (None,) if traced else ()
        if method == "parallel":
            devices = jax.local_devices()[: settings.chains]
            init = jax.pmap(init_one, in_axes=(0, 0, None, *shared), devices=devices)
            chunk = jax.pmap(chunk_one, in_axes=(0, None, None, *shared), devices=devices)
        else:
            init = jax.jit(jax.vmap(init_one, in_axes=(0, 0, None, *shared)))
            chunk = jax.jit(jax.vmap(chunk_one, in_axes=(0, None, None, *shared)))
        runner = _Runner(init, chunk, length, traced)
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
        """NUTS in chunks (see :meth:`_run_nuts`); with ``settings.warm_state``, a warm start checked by
        :func:`resilient.warm_start.run_warm`, which falls back to the full warm-up."""
        if settings.warm_state is not None:
            from resilient.warm_start import run_warm

            return run_warm(self, "numpyro", settings, on_chunk, self._run_nuts)
        return self._run_nuts(settings, on_chunk)

    def _run_nuts(self, settings: NUTSSettings, on_chunk: Callable[[Chunk], bool], warm: Any = None,
                  window: int = 0, reestimate: bool = False) -> NUTSRun:
        """``warm`` (a :class:`~resilient.sampler_state.SamplerState`) and ``window``: a warm start, whose chains
        start at ``settings.initial_points`` with the saved step sizes and inverse mass matrices and warm up for
        the last ``window`` iterations of the ``settings.tune`` schedule only (:func:`warm_hmc_state`): the
        program compiled for ``settings`` runs it, so a warm call compiles nothing new. ``reestimate``: the window
        estimates the mass matrix again from its iterations after the first
        :data:`~resilient.warm_start.OPENING`."""
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
                resumed = settings.resume_state
                if resumed is not None and hasattr(resumed, "native"):  # a SamplerState: its HMCState, exactly
                    if resumed.engine != "numpyro" or not resumed.native:
                        raise ValueError(f"`resume_state` must be a NumPyro run's state, got one of {resumed.engine}.")
                    seed = int(resumed.random_state.get("seed", seed))
                    resumed = jax.tree_util.tree_map(jnp.asarray, hmc_state(dict(resumed.native)))
                if resumed is not None:
                    resume_from = _resume_iteration(resumed, chains, self.dimension)
                runner = self._runner(settings, method, resume_from)
                target = np.asarray(settings.target_accept, self.dtype)  # an argument: no recompile per target
                if resumed is not None:
                    state = resumed
                    warmup_start = min(resume_from, settings.tune)
                    extra["resumed_from_iteration"] = resume_from
                else:
                    with _jax_failure("while starting the chains"):
                        state, warmup_start = self._initial_state(runner, settings, seed, target), 0
                    if warm is not None:
                        state = warm_hmc_state(state, warm, settings, window, self.dtype, reestimate)
                        warmup_start = int(settings.tune) - int(window)
                opening_end = None
                if warm is not None and reestimate:
                    from resilient.warm_start import OPENING

                    opening_end = warmup_start + OPENING
                warmup_seconds += time.monotonic() - started
                progress = _progress(settings, settings.tune - warmup_start + settings.draws)
                phases = ((True, warmup_start, settings.tune), (False, 0, settings.draws))
                for warmup, start, stop in phases:
                    position = start
                    while position < stop:
                        if settings.deadline is not None and time.monotonic() > settings.deadline:
                            return NUTSRun(False, "deadline", warmup_seconds, sampling_seconds, extra)
                        n = min(runner.length, stop - position)
                        if warmup and opening_end is not None and position < opening_end:
                            n = min(n, opening_end - position)
                        tic = time.monotonic()
                        phase = "warm-up" if warmup else "sampling"
                        with _jax_failure(f"in {phase} iterations {position}-{position + n - 1}"):
                            state, chunk = self._chunk(runner, state, n, position, warmup, chains, target)
                        # a warm start's window is the schedule's last `window` iterations: counted from 0
                        skipped = int(settings.tune) - int(window) if warm is not None else 0
                        chunk.start -= skipped if warmup else 0
                        chunk.state = state_record(self, chunk.state, settings, seed,
                                                   (position + n if warmup else settings.tune) - skipped,
                                                   0 if warmup else position + n)
                        elapsed = time.monotonic() - tic
                        if warmup:
                            warmup_seconds += elapsed
                        else:
                            sampling_seconds += elapsed
                        position += n
                        if warmup and position == opening_end:
                            state = forget_mass_matrix_draws(state)
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
        state = jax.device_get(runner.start(keys, jnp.asarray(points.astype(self.dtype)), target, self._data))
        if searched:  # like NumPyro: retry chains whose start has a non-finite density or gradient
            for attempt in range(1, 20):
                valid = np.isfinite(state.potential_energy) & np.all(np.isfinite(state.z_grad), axis=-1)
                if valid.all():
                    break
                retry = np.random.SeedSequence([seed, attempt]).generate_state(chains)
                for chain in np.flatnonzero(~valid):
                    points[chain] = self.initial_point("default", int(retry[chain]))
                state = jax.device_get(runner.start(keys, jnp.asarray(points.astype(self.dtype)), target, self._data))
        return state

    def _chunk(self, runner: _Runner, state: Any, n: int, start: int, warmup: bool,
               chains: int, target: np.ndarray) -> tuple[Any, Chunk]:
        new_state, posterior, stats = jax.device_get(runner.step(state, np.int32(n), target, self._data))
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


def _unconstraining(params: Mapping[str, Any], log_jacobians: dict[str, Any]) -> Callable[[dict], Any]:
    """A ``substitute_fn`` putting the constrained value of each latent of ``params`` (unconstrained values by
    name) at its site, as NumPyro's potential does, and writing each site's log Jacobian to ``log_jacobians``."""

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

    return substitute_fn


def _site_log_prob(site: dict) -> Any:
    """A sample site's log density, scaled and summed."""
    log_prob = site["fn"].log_prob(site["value"])
    if site.get("scale") is not None:
        log_prob = site["scale"] * log_prob
    return jnp.sum(log_prob)


def _enumerable(site: dict) -> bool:
    """A discrete site NumPyro's NUTS marginalises: marked ``infer={"enumerate": "parallel"}`` (by hand or by
    ``config_enumerate``) and of a distribution with enumerate support (a finite set of values)."""
    return (site.get("infer") or {}).get("enumerate") == "parallel" and bool(site["fn"].has_enumerate_support)


def _refuse_unenumerated(names: list[str], model_trace: dict) -> None:
    """A native NumPyro model's discrete sites that NumPyro cannot enumerate as written: the error names each
    and says the fix (NumPyro's NUTS enumerates an unmarked finite site with a FutureWarning that the mark
    will be required; Resilient requires it now)."""
    reasons = []
    for name in names:
        site = model_trace[name]
        kind = (site.get("infer") or {}).get("enumerate")
        family = type(_unwrap(site["fn"])[0]).__name__
        family = family[: -len("Probs")] if family.endswith("Probs") else family
        family = family[: -len("Logits")] if family.endswith("Logits") else family
        if not site["fn"].has_enumerate_support:
            reasons.append(f"`{name}` ({family}) has infinitely many values, so it cannot be enumerated: marginalise "
                           "it out by hand (sum over its values in the likelihood), pass its values as observed "
                           "data, or write the model in PyMC, whose compound step samples discrete latents")
        elif kind is not None:
            reasons.append(f"`{name}` is marked infer={{'enumerate': {kind!r}}}; NumPyro's NUTS enumerates "
                           "'parallel' only: mark it infer={'enumerate': 'parallel'}")
        else:
            reasons.append(f"`{name}` ({family}) is not marked for enumeration: annotate it with "
                           "infer={'enumerate': 'parallel'} (or wrap the model in "
                           "numpyro.contrib.funsor.config_enumerate) so NumPyro marginalises it")
    plural = len(names) > 1
    raise DiscreteLatentError(
        f"Discrete latent site{'s' if plural else ''} {', '.join(f'`{n}`' for n in names)}: NUTS samples continuous "
        f"variables only. " + "; ".join(reasons) + ".", site=names[0],
        fix="; ".join(f"{name}: infer={{'enumerate': 'parallel'}}" if model_trace[name]["fn"].has_enumerate_support
                      else f"{name}: marginalise it out" for name in names))


def _is_data_array(value: Any) -> bool:
    """A numeric NumPy or jax array of one or more dimensions: data a program can take as an argument.
    Numbers and 0-d arrays stay constants: they set shapes (``N``) and scales the rewrites read."""
    if not isinstance(value, (np.ndarray, jax.Array)) or isinstance(value, jax.core.Tracer):
        return False
    return np.dtype(value.dtype).kind in "biuf" and np.ndim(value) >= 1


def _same(a: Any, b: Any) -> bool:
    """Equal constants: same type and value (arrays: dtype, shape and values; NaN equals NaN)."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, (np.ndarray, np.generic, jax.Array, float, complex)):
        x, y = np.asarray(a), np.asarray(b)
        return x.dtype == y.dtype and x.shape == y.shape and bool(
            np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - no equality (an array-like object): not known to be the same
        return False


class DataArguments:
    """A model function's arguments split in two: its data arrays (:func:`_is_data_array`), which the jitted
    programs take as arguments, and the rest (numbers, strings, ``None``, 0-d arrays, other objects),
    which stay constants of the programs."""

    def __init__(self, args: tuple, kwargs: Mapping[str, Any]) -> None:
        leaves, self.treedef = jax.tree_util.tree_flatten((tuple(args), dict(kwargs)))
        self.positions = tuple(i for i, leaf in enumerate(leaves) if _is_data_array(leaf))
        self.values = tuple(leaves[i] for i in self.positions)
        self.constants = tuple(leaf for i, leaf in enumerate(leaves) if i not in self.positions)

    def join(self, values: tuple) -> tuple[tuple, dict]:
        """``(args, kwargs)`` with ``values`` (concrete or traced) in the data arrays' places."""
        arrays, constants = iter(values), iter(self.constants)
        positions = set(self.positions)
        count = len(self.positions) + len(self.constants)
        leaves = [next(arrays) if i in positions else next(constants) for i in range(count)]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def difference(self, other: "DataArguments") -> str | None:
        """What differs between two data sets for a program compiled on one of them, or None."""
        if self.treedef != other.treedef or self.positions != other.positions:
            return "the arguments differ in their structure (names, nesting, None, which are arrays)"
        for mine, theirs in zip(self.constants, other.constants):
            if not _same(mine, theirs):
                return f"a non-array argument is {theirs!r}, not {mine!r}"
        for mine, theirs in zip(self.values, other.values):
            if (np.shape(mine), np.dtype(mine.dtype)) != (np.shape(theirs), np.dtype(theirs.dtype)):
                return (f"a data array has shape {np.shape(theirs)} and dtype {np.dtype(theirs.dtype)}, "
                        f"not {np.shape(mine)} and {np.dtype(mine.dtype)}")
        return None


def _distribution_structure(d: Any) -> tuple:
    """A distribution's type, support, shapes and which truncation bounds it has, wrappers unwrapped."""
    inner, _ = _unwrap(d)
    support = d.support
    parts = [type(d).__name__, type(inner).__name__, type(support).__name__,
             type(getattr(support, "base_constraint", None)).__name__,
             tuple(d.batch_shape), tuple(d.event_shape),
             tuple(getattr(inner, bound, "-") is None for bound in ("low", "high"))]
    base = getattr(inner, "base_dist", None)
    if base is not None:
        parts.append(_distribution_structure(base))
    for component in getattr(inner, "component_distributions", None) or ():
        parts.append(_distribution_structure(component))
    return tuple(parts)


def _structure(model_trace: Mapping[str, dict], sites: Mapping[str, Site]) -> tuple:
    """What the program of a model depends on besides its data values: per site its kind, distribution
    structure and value shape, and per resilient site the rewrites applied."""
    parts: list[tuple] = []
    for name, site in model_trace.items():
        value = site.get("value")
        shape = tuple(jnp.shape(value)) if value is not None and not callable(value) else None
        if site["type"] == "sample":
            parts.append((name, "sample", bool(site["is_observed"]), _distribution_structure(site["fn"]), shape))
        elif site["type"] == "plate":
            parts.append((name, "plate", tuple(a if isinstance(a, (int, type(None))) else "?" for a in site["args"])))
        else:
            parts.append((name, site["type"], shape))
    for name, record in sites.items():
        parts.append((name, record.kind, record.noncentered, tuple(r.rule for r in record.rewrites),
                      type(record.used).__name__))
    return tuple(parts)
