"""The compiled model: PyMC's frozen model and its compiled log density, gradient, site terms and transforms."""

from __future__ import annotations

from resilient.adapters.common import check_strategy, refuse_discrete_latents, require_every_latent, uniform_point

import contextlib
import os
import threading
from dataclasses import replace
import time
import warnings
from typing import Any, Callable, Iterator, Mapping, Sequence
import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
from resilient.backend import Chunk, NUTSRun, NUTSSettings
from resilient.model import Site
from resilient.adapters.pymc.control import _StopControl, _chain_worker_context, _quiet_fork
from resilient.adapters.pymc.runner import _Collector, _Run, _sampler_failure, hook_init_nuts


@contextlib.contextmanager
def _quiet_pytensor() -> Iterator[None]:
    """Hide PyTensor's one-time "could not link to a BLAS installation" UserWarning.

    It is raised the first time a C-linker function holding a BLAS op is compiled in a process
    (PyMC's initial-point functions use FAST_COMPILE, hence C thunks); the sampler's functions
    use PyTensor's default (Numba) linker, which does not need it.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS installation")
        yield


@contextlib.contextmanager
def _no_c_compilation() -> Iterator[None]:
    """Compile and run the preflight functions without a C compiler.

    Even with the Python linker, PyTensor compiles C when it folds constants through an op
    with an inner function, and on a cold cache (a fresh machine, CI) that is tens of seconds
    of gcc; ``cxx=""`` makes those inner functions Python too. Only for our own functions:
    ``pm.sample`` runs as PyMC configures it.
    """
    with _quiet_pytensor(), pytensor.config.change_flags(cxx=""):
        yield


def _lazy(method: Callable[[Any], Any]) -> property:
    """A property computed on first use and cached on the instance."""
    attribute = "_cached_" + method.__name__

    def getter(self: Any) -> Any:
        value = self.__dict__.get(attribute)
        if value is None:
            with _no_c_compilation():
                value = method(self)
            self.__dict__[attribute] = value
        return value

    getter.__name__ = method.__name__
    getter.__doc__ = method.__doc__
    return property(getter)


def default_cores() -> int:
    """``pm.sample``'s default ``cores``: ``min(4, PyMC's CPU count)``, which is half the logical CPUs (PyMC takes
    the other half for hyperthreads). On a 2-CPU machine that is one: the chains run one after another in the
    calling process, which under load beat two worker processes (kidiq, load 3: 8.6-9.1 s against 11.1-12.4 s)."""
    try:
        from pymc.sampling.parallel import _cpu_count

        return max(1, min(4, int(_cpu_count())))
    except Exception:  # noqa: BLE001 - a PyMC without the private helper: its documented rule
        return max(1, min(4, (os.cpu_count() or 2) // 2))


def _preflight_mode() -> Any:
    from pytensor.compile.mode import Mode

    return Mode(linker="py", optimizer="fast_run").excluding("fusion")


#: one :meth:`PyMCCompiledModel.reusing_value_grad` block at a time (it sets an attribute of a model)
_REUSE_LOCK = threading.RLock()

_EVAL_ERRORS: tuple[type[BaseException], ...] = (ArithmeticError, np.linalg.LinAlgError)


try:  # PyMC's failed parameter checks, where a graph keeps them as assertions
    from pymc.logprob.utils import ParameterValueError

    _EVAL_ERRORS += (ParameterValueError,)
except ImportError:  # pragma: no cover
    pass


def discrete_free_rvs(model: Any) -> list[Any]:
    """A model's free variables of integer or boolean type: the ones NUTS cannot sample."""
    return [rv for rv in model.free_RVs if rv.type.dtype.startswith(("int", "uint", "bool"))]


class PyMCCompiledModel:
    """A ``pm.Model`` behind :class:`resilient.backend.CompiledModel` (see the module docstring)."""

    backend = "pymc"

    def __init__(self, model: Any, sites: Mapping[str, Site], *, cores: int | None = None,
                 name: str = "model", order: Sequence[str] = (), sampling_model: Any = None) -> None:
        """``order``: variable names as the user declared them (a frozen model may list them
        otherwise); the posterior, the deterministics and the site terms follow it.
        ``sampling_model``: the model ``pm.sample`` runs when it is not ``model``: a model with
        discrete latents, which ``model`` holds observed at their initial values (see
        :func:`~resilient.adapters.pymc.adapter.discrete_split`); PyMC samples it with its compound step."""
        self.model = model
        self.sampling_model = model if sampling_model is None else sampling_model
        self.discrete_latents: tuple[str, ...] = tuple(rv.name for rv in discrete_free_rvs(self.sampling_model))
        self.name = name
        self.sites = dict(sites)
        self.cores = cores
        self.ignored_options: tuple[str, ...] = ()
        #: latents Resilient added (``<name>_decentered`` of a native site it non-centred): sampled, kept
        #: out of the posterior the user gets (their variable is there, as a Deterministic).
        self.hidden: frozenset[str] = frozenset()
        refuse_discrete_latents(rv.name for rv in discrete_free_rvs(model))
        self.value_vars = list(model.value_vars)
        rvs = [model.values_to_rvs[v] for v in self.value_vars]
        self.latent_names = tuple(rv.name for rv in rvs)
        self._latents = rvs
        rank = {name: i for i, name in enumerate(order)}

        def declared(variables: Sequence[Any]) -> list[Any]:
            return sorted(variables, key=lambda v: rank.get(v.name, len(rank)))

        self._posterior_latents = declared(rvs)
        self._deterministics = declared(model.deterministics)
        self._sampled_names = tuple(v.name for v in [*declared(self.sampling_model.free_RVs),
                                                      *declared(self.sampling_model.deterministics)])
        shapes = self._value_shapes()
        self._layout: list[tuple[str, str, tuple[int, ...], str, slice]] = []
        offset = 0
        for rv, value in zip(rvs, self.value_vars):
            shape = shapes[value.name]
            size = int(np.prod(shape, dtype=np.int64))
            self._layout.append((rv.name, value.name, shape, value.type.dtype, slice(offset, offset + size)))
            offset += size
        self.dimension = offset
        self._term_vars = declared([*model.free_RVs, *model.observed_RVs, *model.potentials])
        self._term_names = tuple(v.name for v in self._term_vars)

    # ---- layout -----------------------------------------------------------------------------

    def _value_shapes(self) -> dict[str, tuple[int, ...]]:
        static = {}
        for value in self.value_vars:
            shape = value.type.shape
            if shape is None or any(s is None for s in shape):
                break
            static[value.name] = tuple(int(s) for s in shape)
        else:
            return static
        with _no_c_compilation():
            return {k: tuple(int(s) for s in v) for k, v in self.model.eval_rv_shapes().items()}

    def blocks(self) -> dict[str, slice]:
        return {latent: block for latent, _, _, _, block in self._layout}

    def _vector(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.dimension,):
            raise ValueError(f"x must have shape ({self.dimension},), got {x.shape}.")
        return x

    def _inputs(self, x: np.ndarray) -> list[np.ndarray]:
        x = self._vector(x)
        return [x[block].reshape(shape).astype(dtype) for _, _, shape, dtype, block in self._layout]

    def _point(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """PyMC's point dict (value-variable names) for ``x``."""
        return {value: array for (_, value, *_), array in zip(self._layout, self._inputs(x))}

    @_lazy
    def _direct_values(self) -> tuple[bool, ...]:
        """Per latent, whether PyMC takes its unconstrained value as is (``initvals`` keyed by the
        value variable's name): ``pm.sample`` turns such a value back through
        ``transform.backward(value, *rv.owner.inputs)`` (``pymc/initial_point.py``), which only
        works for a transform that takes a NumPy array (not ``ZeroSumTransform``, not
        ``CholeskyCovPack``) and whose parameters depend on no other latent (not the interval
        of ``b ~ Uniform(0, 1 - a)``). Where it does not, :meth:`_initvals` gives the constrained
        value keyed by the variable's own name, which PyMC transforms forward itself."""
        from pytensor.graph.traversal import ancestors

        free = set(self.model.free_RVs)
        probe = self._inputs(np.zeros(self.dimension))  # what fails does so structurally, at any value
        direct = []
        for rv, value in zip(self._latents, probe):
            transform = self.model.rvs_to_transforms.get(rv)
            if transform is None:
                direct.append(True)
                continue
            try:
                back = transform.backward(value, *rv.owner.inputs)
            except Exception:  # noqa: BLE001 - a transform that cannot take NumPy values
                direct.append(False)
                continue
            depends = hasattr(back, "owner") and any(a in free for a in ancestors([back]))
            direct.append(not depends)
        return tuple(direct)

    def _initvals(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """``x`` as ``pm.sample``'s ``initvals`` for one chain, in a form PyMC accepts for every
        transform (see :attr:`_direct_values`): unconstrained values keyed by the value variable's
        name where PyMC reads them as is (exact), constrained values keyed by the variable's name
        (our own :meth:`constrain` at ``x``) where it could not turn them back."""
        inputs = self._inputs(x)
        direct = self._direct_values
        constrained = None if all(direct) else self.constrain(x)
        initvals: dict[str, np.ndarray] = {}
        for (latent, value, _, dtype, _), array, as_is in zip(self._layout, inputs, direct):
            if as_is:
                initvals[value] = array
            else:
                initvals[latent] = np.asarray(constrained[latent], dtype=dtype)
        return initvals

    def _flatten(self, point: Mapping[str, Any]) -> np.ndarray:
        """``x`` for a point dict keyed by value-variable names."""
        if not self._layout:
            return np.zeros(0)
        return np.concatenate(
            [np.asarray(point[value], dtype=np.float64).reshape(-1) for _, value, *_ in self._layout]
        )

    def _compile(self, outputs: list[Any], mode: Any = "preflight") -> Any:
        """Compile ``outputs`` of the value variables. ``mode="preflight"``: PyTensor's FAST_RUN
        rewrites (the stabilising ones the sampler gets) with the Python linker and no elementwise
        fusion, so nothing is JIT- or C-compiled: about a second for an ordinary model, cold or
        warm, where Numba or C take 10 s or more on a cold cache; an evaluation costs milliseconds,
        which is fine for preflight. ``mode=None``: PyMC's default (what ``pm.sample`` uses)."""
        if mode == "preflight":
            mode = _preflight_mode()
        return self.model.compile_fn(
            outputs, inputs=self.value_vars, point_fn=False, on_unused_input="ignore", mode=mode
        )

    # ---- log density ------------------------------------------------------------------------

    def _evaluate(self, function: Any, x: np.ndarray) -> list[np.ndarray] | None:
        """``function`` at ``x``; ``None`` where PyTensor raised for a numerical reason. NumPy's
        floating-point warnings are silenced: NaN and inf are results here, not errors."""
        inputs = self._inputs(x)
        with np.errstate(all="ignore"), _no_c_compilation():
            try:
                return list(function(*inputs))
            except _EVAL_ERRORS:
                return None

    @_lazy
    def _value_grad_fn(self) -> Any:
        """PyMC's ``logp_dlogp_function`` as NUTS asks for it (raveled ``x``), compiled once per compiled
        model: preflight, ``engine="auto"``'s gradient timing and ``pm.sample``'s NUTS step (a copy, through
        :meth:`nuts_value_grad`) all run this one, so preflight checks exactly what the sampler runs. PyMC's
        method of the model's class: never :meth:`reusing_value_grad`'s stand-in."""
        return type(self.model).logp_dlogp_function(self.model, ravel_inputs=True)

    def nuts_value_grad(self) -> Any | None:
        """A copy of :attr:`_value_grad_fn` (compiled now if it was not yet) for ``pm.sample``'s NUTS step, so
        that ``init_nuts`` does not compile the same log density and gradient again; ``None`` where PyMC must
        build its own: a model with values NUTS does not move (extra values), or a default linker other than
        Numba's (``_lazy`` compiles without a C compiler, which only the Numba linker does not use). A copy
        (``ValueGradFunction.copy``: linked again, not compiled) owns its shared variables and ``trust_input``."""
        from pytensor.compile.mode import get_default_mode
        from pytensor.link.numba.linker import NumbaLinker

        if not self.value_vars or not isinstance(get_default_mode().linker, NumbaLinker):
            return None
        function = self._value_grad_fn
        if function._extra_vars or not isinstance(function._pytensor_function.maker.linker, NumbaLinker):
            return None
        copy = function.copy()
        copy.set_extra_values({})
        return copy

    @contextlib.contextmanager
    def reusing_value_grad(self, model: Any, compile_kwargs: Mapping[str, Any] | None = None) -> Iterator[None]:
        """Within this block, ``model.logp_dlogp_function(ravel_inputs=True)`` (``init_nuts``'s call) gives
        :meth:`nuts_value_grad`'s copy where ``model`` is this compiled model's and PyMC's compile options are
        its defaults; any other call goes to PyMC. The model's attribute is restored after the block; one
        block at a time in a process (a lock), so threads never see each other's."""
        if model is not self.model or compile_kwargs:
            yield
            return
        original = model.logp_dlogp_function

        def logp_dlogp_function(*args: Any, **kwargs: Any) -> Any:
            if not args and kwargs == {"ravel_inputs": True}:
                reused = self.nuts_value_grad()
                if reused is not None:
                    return reused
            return original(*args, **kwargs)

        with _REUSE_LOCK:
            model.__dict__["logp_dlogp_function"] = logp_dlogp_function
            try:
                yield
            finally:
                model.__dict__.pop("logp_dlogp_function", None)

    def processes(self, chains: int, cores: int | None = None) -> int:
        """How many chains ``pm.sample`` runs at once: ``cores`` (the call's, else the adapter's) where given, else
        pm.sample's own default, :func:`default_cores`, so a drop-in call runs as ``pm.sample`` would."""
        return max(1, min(int(chains), int(cores or self.cores or default_cores())))

    def log_density(self, x: np.ndarray) -> float:
        return self.log_density_and_gradient(x)[0]

    def log_density_and_gradient(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        x = self._vector(x)
        if not self.value_vars:
            values = self._evaluate(self._logp_only_fn, x)
            return (float("nan") if values is None else float(values[0])), np.zeros(0)
        with np.errstate(all="ignore"):  # compiled once by _lazy; evaluating needs no flag changes
            try:
                logp, gradient = self._value_grad_fn(x.astype(self._layout[0][3]))
            except _EVAL_ERRORS:
                return float("nan"), np.full(self.dimension, np.nan)
        return float(logp), np.asarray(gradient, dtype=np.float64).reshape(-1)

    @_lazy
    def _logp_only_fn(self) -> Any:
        """The log density of a model without latents (no gradient to take)."""
        return self._compile([self.model.logp(jacobian=True, sum=True)])

    # ---- per site ---------------------------------------------------------------------------

    def _terms(self) -> list[Any]:
        if not self._term_vars:
            return []
        terms = self.model.logp(vars=self._term_vars, jacobian=True, sum=False)
        return [pt.sum(term) for term in terms]

    @_lazy
    def _site_terms_fn(self) -> Any:
        return self._compile(self._terms())

    @_lazy
    def _site_gradients_fn(self) -> Any:
        outputs = []
        for term in self._terms():
            outputs.extend(pytensor.grad(term, self.value_vars, disconnected_inputs="ignore"))
        return self._compile(outputs)

    def site_log_densities(self, x: np.ndarray) -> dict[str, float]:
        """Each free, observed and potential (``pm.Potential``) term, a free variable's with its
        transform's Jacobian: they sum to :meth:`log_density`."""
        if not self._term_vars:
            return {}
        values = self._evaluate(self._site_terms_fn, x)
        if values is None:
            return {name: float("nan") for name in self._term_names}
        return {name: float(v) for name, v in zip(self._term_names, values)}

    def site_gradients(self, x: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """``{site: {latent: d term / d x[block]}}`` for the sites of :meth:`site_log_densities`;
        each gradient is flat, like its block of ``x`` (zeros where the term does not depend on it)."""
        if not self._term_vars or not self.value_vars:
            return {name: {} for name in self._term_names}
        values = self._evaluate(self._site_gradients_fn, x)
        if values is None:
            values = [np.full(block.stop - block.start, np.nan) for _ in self._term_names
                      for *_, block in self._layout]
        result: dict[str, dict[str, np.ndarray]] = {}
        n = len(self._layout)
        for i, name in enumerate(self._term_names):
            result[name] = {
                latent: np.asarray(values[i * n + j], dtype=np.float64).reshape(-1)
                for j, (latent, *_) in enumerate(self._layout)
            }
        return result

    # ---- values -----------------------------------------------------------------------------

    def _constrain_outputs(self) -> list[Any]:
        return self.model.replace_rvs_by_values([*self._posterior_latents, *self._deterministics])

    @_lazy
    def _constrain_fn(self) -> Any:
        outputs = self._constrain_outputs()
        return self._compile(outputs) if outputs else (lambda *args: [])

    @_lazy
    def _sampling_constrain_fn(self) -> Any:
        """As ``_constrain_fn`` in PyMC's default mode, for draws whose trace lacks the values."""
        outputs = self._constrain_outputs()
        return self._compile(outputs, mode=None) if outputs else (lambda *args: [])

    @property
    def posterior_names(self) -> tuple[str, ...]:
        """Names :meth:`constrain` gives: the free variables, then the deterministics, each in
        the order the model declared them."""
        return tuple(v.name for v in [*self._posterior_latents, *self._deterministics])

    @property
    def sampled_names(self) -> tuple[str, ...]:
        """Names in a chunk's posterior: :attr:`posterior_names`, and the discrete latents of a
        model sampled with PyMC's compound step."""
        return self._sampled_names

    def constrain(self, x: np.ndarray) -> dict[str, np.ndarray]:
        values = self._evaluate(self._constrain_fn, x)
        if values is None:  # PyTensor raised for a numerical reason: NaN, as elsewhere
            return {name: np.array(np.nan) for name in self.posterior_names}
        return {name: np.array(v) for name, v in zip(self.posterior_names, values)}

    @_lazy
    def _unconstrain_fn(self) -> Any:
        """Constrained latent values -> each value variable, through PyMC's transforms (whose
        parameters may depend on other latents, e.g. a bound that is a site)."""
        model = self.model
        placeholders = [rv.type(name=rv.name) for rv in self._latents]
        outputs = []
        for rv, placeholder in zip(self._latents, placeholders):
            transform = model.rvs_to_transforms.get(rv)
            outputs.append(placeholder if transform is None else transform.forward(placeholder, *rv.owner.inputs))
        replace = dict(zip(self._latents, placeholders))
        replace.update({obs: model.rvs_to_values[obs] for obs in model.observed_RVs})
        from pytensor.graph.replace import clone_replace

        outputs = clone_replace(outputs, replace=replace)
        return model.compile_fn(outputs, inputs=placeholders, point_fn=False, on_unused_input="ignore",
                                mode=_preflight_mode())

    def unconstrain(self, values: Mapping[str, Any]) -> np.ndarray:
        """``x`` for constrained values of every latent (the inverse of :meth:`constrain`)."""
        require_every_latent(values, self.latent_names)
        if not self._latents:
            return np.zeros(0)
        inputs = [np.asarray(values[rv.name], dtype=rv.type.dtype) for rv in self._latents]
        with np.errstate(all="ignore"), _no_c_compilation():
            outputs = self._unconstrain_fn(*inputs)
        return np.concatenate([
            np.asarray(out, dtype=np.float64).reshape(-1) for out in outputs
        ])

    # ---- initial points ---------------------------------------------------------------------

    def _initial_point_fn(self, key: str) -> Callable[[Any], dict[str, np.ndarray]]:
        cache = self.__dict__.setdefault("_initial_point_fns", {})
        if key not in cache:
            from pymc.initial_point import make_initial_point_fn

            with _no_c_compilation():
                if key == "prior":
                    cache[key] = make_initial_point_fn(
                        model=self.model, overrides={rv: "prior" for rv in self.model.free_RVs},
                        return_transformed=True,
                    )
                else:
                    cache[key] = make_initial_point_fn(model=self.model, return_transformed=True)
        return cache[key]

    def initial_point(self, strategy: str = "default", random_seed: int | None = None) -> np.ndarray:
        """``default``: PyMC's ``jitter+adapt_diag`` start (the model's initial point plus
        uniform(-1, 1) jitter on the unconstrained space, redrawn up to 10 times while the log
        density is not finite, as PyMC does); ``median``: the initial point without jitter;
        ``uniform``: Stan's uniform(-2, 2); ``prior``: a joint prior draw, transformed."""
        if strategy == "uniform":
            return uniform_point(random_seed, self.dimension)
        check_strategy(strategy)
        rng = np.random.default_rng(random_seed)
        if strategy == "prior":
            seed = int(rng.integers(2**30))
            if self._ordered_latents:
                return self._sorted_prior_point(seed)
            with _no_c_compilation():
                return self._flatten(self._initial_point_fn("prior")(seed))
        if strategy == "median":
            return self._median.copy()
        return self.jittered_point(rng, self.log_density)

    def jittered_point(self, rng: np.random.Generator, log_density: Callable[[np.ndarray], float]) -> np.ndarray:
        """PyMC's ``jitter+adapt_diag`` start, redrawn while ``log_density`` (the engine's: an engine over another
        compilation of this model checks with its own, so PyMC's function is not compiled for nothing) is not
        finite."""
        for _ in range(10):
            x = self._median + rng.uniform(-1.0, 1.0, size=self.dimension)
            if np.isfinite(log_density(x)):
                break
        return x

    @_lazy
    def _ordered_latents(self) -> tuple[str, ...]:
        """Latents on PyMC's ordered transform (alone or chained after log)."""
        from pymc.distributions.transforms import Ordered
        from pymc.logprob.transforms import ChainedTransform

        names = []
        for rv in self._latents:
            transform = self.model.rvs_to_transforms.get(rv)
            parts = transform.transform_list if isinstance(transform, ChainedTransform) else [transform]
            if any(isinstance(part, Ordered) for part in parts):
                names.append(rv.name)
        return tuple(names)

    @_lazy
    def _prior_draw_fn(self) -> Any:
        """The latents' joint prior draw, constrained (as ``pm.draw`` compiles it, once)."""
        from pymc.pytensorf import compile as compile_pymc

        return compile_pymc([], list(self._latents), mode=_preflight_mode())

    def _sorted_prior_point(self, seed: int) -> np.ndarray:
        """A prior draw with each ordered latent sorted along its last axis. A prior draw of an
        ``ordered=True`` vector is the family's, unsorted, where the ordered transform is NaN (and
        PyMC's own prior initial point transforms it before anything could sort it)."""
        from pymc.pytensorf import find_rng_nodes, reseed_rngs

        function = self._prior_draw_fn
        reseed_rngs(find_rng_nodes(function.maker.fgraph.inputs), seed)
        with _no_c_compilation(), np.errstate(all="ignore"):
            draws = function()
        values = {rv.name: np.asarray(v) for rv, v in zip(self._latents, draws)}
        for name in self._ordered_latents:
            values[name] = np.sort(values[name], axis=-1)
        return self.unconstrain(values)

    @_lazy
    def _median(self) -> np.ndarray:
        """The model's initial point (``support_point`` unless ``initval`` says otherwise)."""
        return self._flatten(self._initial_point_fn("median")(0))

    def observed_data(self) -> dict[str, np.ndarray]:
        """The data of the model as sampled (a discrete latent held observed for preflight is not data)."""
        data = {}
        model = self.sampling_model
        for rv in model.observed_RVs:
            value = model.rvs_to_values[rv]
            if hasattr(value, "get_value"):
                data[rv.name] = np.asarray(value.get_value())
            elif hasattr(value, "data"):
                data[rv.name] = np.asarray(value.data)
            else:
                data[rv.name] = np.asarray(value.eval())
        return data

    def log_likelihood(self, posterior: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Pointwise log likelihood of each observed variable at the draws (see :mod:`.loglik`)."""
        from resilient.adapters.pymc.loglik import log_likelihood

        return log_likelihood(self, posterior)

    def datatree_layout(self) -> dict[str, Any]:
        """What ``pm.sample``'s own converter names: the model's ``coords``, each variable's
        ``dims`` (``named_vars_to_dims``: posterior, observed and ``pm.Data`` variables) and the
        values of ``pm.Data`` as ``constant_data`` (PyMC's ``find_constants``: an observed value
        that is a ``pm.Data`` counts only where the rest of the model uses it too). Read from the
        frozen copy, so ``constant_data`` holds the data the draws were made with even after the
        user's ``pm.set_data``. A shared-API model has none of these: ``{}``."""
        from pymc.backends.arviz import coords_and_dims_for_inferencedata, find_constants

        coords, dims = coords_and_dims_for_inferencedata(self.sampling_model)
        layout: dict[str, Any] = {}
        if coords:
            layout["coords"] = coords
        if dims:
            layout["dims"] = {name: list(names) for name, names in dims.items()}
        constants = {name: np.asarray(value) for name, value in find_constants(self.sampling_model).items()}
        if constants:
            layout["constant_data"] = constants
        return layout

    # ---- NUTS -------------------------------------------------------------------------------

    @property
    def disconnected_latents(self) -> tuple[str, ...]:
        """Latents the log density does not depend on (an improper posterior): PyMC's NUTS samples them with a zero
        gradient (the loop then names the posterior improper); nutpie cannot compile such a model."""
        return self._disconnected

    @_lazy
    def _disconnected(self) -> tuple[str, ...]:
        """Latents the log density does not depend on (a lone ``Flat``: an improper posterior)."""
        from pytensor.gradient import DisconnectedType

        if not self.value_vars:
            return ()
        grads = pytensor.grad(self.model.logp(), self.value_vars, disconnected_inputs="ignore",
                              return_disconnected="disconnected")
        return tuple(rv.name for rv, g in zip(self._latents, grads) if isinstance(g.type, DisconnectedType))

    def _explicit_nuts(self, settings: NUTSSettings, chains: int, init: str, initvals: Any,
                       nuts: dict[str, Any], run: _Run | None = None) -> dict[str, Any]:
        """``pm.sample`` arguments with the NUTS step built here, as ``pm.sample`` would build it.

        ``pm.sample`` picks step methods by differentiating the log density with respect to each
        latent and raises ``DisconnectedInputError`` for one it does not depend on; ``init_nuts``
        tolerates it (a zero gradient), so a model such as ``x ~ Flat()`` still samples and the
        loop can see the improper posterior wander.
        """
        from pymc.util import get_random_generator

        seeds = [int(r.integers(2**30)) for r in get_random_generator(settings.random_seed).spawn(chains)]
        with self.reusing_value_grad(self.model):
            points, step = pm.init_nuts(
                init=init, chains=chains, model=self.model, random_seed=seeds, progressbar=False, quiet=True,
                tune=int(settings.tune), initvals=initvals, **nuts,
            )
        return {"step": run.adopt(step) if run is not None else step,
                "initvals": [self._initvals(self._flatten(point)) for point in points]}

    def _compound_nuts(self, nuts: dict[str, Any], mass_matrix: str = "diag", seed: Any = None,
                       tune: int = 1000) -> list[Any]:
        """A NUTS step over the continuous latents, for ``pm.sample`` to add the discrete latents' steps to.

        With discrete latents ``pm.sample`` assigns every step itself: it differentiates the log density with
        respect to each continuous latent, and raises ``DisconnectedInputError`` for one it does not depend on
        (a lone ``Flat``; found by the fuzzer, seed 2), and it ignores ``init``, so NUTS adapts a diagonal mass
        matrix whatever was asked. Built here, NUTS tolerates the first and adapts the mass matrix asked:
        dense for ``"full"`` and from the gradients for ``"diag_grad"``, as ``init="jitter+adapt_full"`` and
        ``"jitter+adapt_diag_grad"`` would (the loop's dense-mass remedy would otherwise change nothing it says
        it changed)."""
        from pymc.step_methods.hmc import quadpotential
        from pymc.vartypes import discrete_types

        model = self.sampling_model
        continuous = [v for v in model.value_vars if v.dtype not in discrete_types]
        kwargs = dict(nuts)
        if mass_matrix in ("diag_grad", "full"):
            point = model.initial_point(random_seed=seed)
            mean = np.concatenate([np.ravel(point[v.name]) for v in continuous]).astype(float)
        if mass_matrix == "diag_grad":
            kwargs["potential"] = quadpotential.QuadPotentialDiagAdaptExp(
                mean.size, mean, alpha=0.02, use_grads=True, stop_adaptation=tune - 50 if tune > 250 else None)
        elif mass_matrix == "full":
            with warnings.catch_warnings():  # PyMC's "QuadPotentialFullAdapt is an experimental feature", as the loop
                warnings.filterwarnings("ignore", message=r".* is an experimental feature", category=UserWarning)
                kwargs["potential"] = quadpotential.QuadPotentialFullAdapt(mean.size, mean, np.eye(mean.size), 10)
        with model:
            return [pm.NUTS(vars=continuous, **kwargs)]

    def run_nuts(self, settings: NUTSSettings, on_chunk: Callable[[Chunk], bool]) -> NUTSRun:
        """:meth:`_run_nuts`; with ``settings.warm_state``, a warm start checked by
        :func:`resilient.warm_start.run_warm`, which falls back to the full warm-up."""
        if settings.warm_state is not None:
            from resilient.warm_start import run_warm

            return run_warm(self, "pymc", settings, on_chunk, self._run_nuts)
        return self._run_nuts(settings, on_chunk)

    def _run_nuts(self, settings: NUTSSettings, on_chunk: Callable[[Chunk], bool], warm: Any = None,
                  window: int = 0, reestimate: bool = False) -> NUTSRun:
        """``pm.sample`` with PyMC's NUTS; draws reach ``on_chunk`` every ``chunk_size`` draws of a
        chain (warm-up included, flagged), partial chunks at the end. ``on_chunk`` returning
        ``False`` stops the run (``reason="stopped"``), as does ``settings.deadline``
        (``"deadline"``, checked at every draw) and Ctrl-C (``"interrupted"``); draws finished
        before a deadline or Ctrl-C are delivered, none after ``on_chunk`` returned ``False``.

        ``warm`` (a :class:`~resilient.sampler_state.SamplerState`) and ``window``: a warm start: each chain starts
        at ``settings.initial_points`` (the saved positions) with the saved mass matrix, fixed, and its saved step
        size, from which dual averaging adapts for ``window`` iterations instead of ``settings.tune``. A state that
        may be of other data (``reestimate``) is refused: PyMC's NUTS would keep its mass matrix fixed."""
        resumed = settings.resume_state
        if warm is not None:
            from resilient.warm_start import WarmStartRefused

            if warm.inverse_mass_matrix is None:
                raise WarmStartRefused("the saved state has no mass matrix")
            if self.discrete_latents:
                raise WarmStartRefused("PyMC's compound step (NUTS with another method for discrete latents) keeps "
                                       "no adaptation to start from")
            if reestimate:
                raise WarmStartRefused("the state may be of other data, and PyMC's NUTS would keep its mass matrix "
                                       "fixed at that data's (a warm start on PyMC's NUTS reuses a state of the "
                                       "same compiled model's last call only)")
            settings = replace(settings, tune=int(window))
        if resumed is not None:
            # A saved run goes on: each chain from its saved position, with its step size and mass matrix
            # set on the NUTS step (StateNUTS), and no warm-up.
            if getattr(resumed, "engine", None) != "pymc" or resumed.inverse_mass_matrix is None:
                raise ValueError("`resume_state` must be the SamplerState of a run of PyMC's NUTS, with its mass "
                                 f"matrix; got {type(resumed).__name__} of {getattr(resumed, 'engine', None)!r}.")
            if self.discrete_latents:
                raise NotImplementedError("PyMC's compound step (NUTS with another method for discrete latents) "
                                          "keeps no sampler state to resume from; start a new run.")
            settings = replace(settings, tune=0, initial_points=np.asarray(resumed.positions, np.float64))
        chains = int(settings.chains)
        if settings.deadline is not None:
            # With more chains than processes PyMC runs the chains in batches (chains 2 and 3 only
            # start when 0 and 1 have finished), so a deadline would leave the late chains empty
            # and no draw complete on every chain: run them all at once instead.
            cores = max(1, chains)
        else:
            cores = self.processes(chains, settings.cores)
        initvals = None
        adaptation = {"diag": "adapt_diag", "full": "adapt_full", "diag_grad": "jitter+adapt_diag_grad"}
        if settings.mass_matrix not in adaptation:
            raise ValueError(f"PyMC's NUTS adapts a mass matrix of kind {', '.join(adaptation)}, not "
                             f"{settings.mass_matrix!r}.")
        init = {"adapt_diag": "jitter+adapt_diag", "adapt_full": "jitter+adapt_full"}.get(
            adaptation[settings.mass_matrix], adaptation[settings.mass_matrix])
        if settings.initial_points is not None:
            points = np.asarray(settings.initial_points, dtype=np.float64)
            if points.shape != (chains, self.dimension):
                raise ValueError(
                    f"initial_points must have shape (chains, dimension) = ({chains}, {self.dimension}), "
                    f"got {points.shape}."
                )
            # PyMC reads string keys of transformed names (`sigma_log__`) as unconstrained values
            # where it can turn them back, constrained values by the variable's name elsewhere
            # (`_initvals`); `adapt_diag` starts from them as given (`jitter+` would jitter them).
            initvals = [self._initvals(row) for row in points]
            init = adaptation[settings.mass_matrix]  # PyMC has no diag_grad without jitter
        depth = int(settings.max_tree_depth)
        nuts = {
            "target_accept": float(settings.target_accept),
            "max_treedepth": depth,
            "early_max_treedepth": min(8, depth),
        }
        sample_kwargs: dict[str, Any] = {"initvals": initvals, "init": init, "nuts": nuts}
        collector = _Collector(self, settings, on_chunk)
        collector.run = _Run(self, resumed if resumed is not None else warm, warm=warm is not None)
        workers = _chain_worker_context()
        started = time.monotonic()
        # np.errstate: PyMC's NUTS reads overflow in its mass matrix or energy as a divergence;
        # NumPy's RuntimeWarning about it is noise (and an exception where warnings are errors,
        # as in a test suite, which then kills the chain; forked workers inherit the state).
        with _StopControl(collector, settings.deadline) as control, _quiet_pytensor(), _quiet_fork(), \
                np.errstate(all="ignore"), hook_init_nuts(collector.run):
            try:
                if self._disconnected and not self.discrete_latents:
                    sample_kwargs = self._explicit_nuts(settings, chains, init, initvals, nuts, collector.run)
                elif self._disconnected or (self.discrete_latents and settings.mass_matrix != "diag"):
                    sample_kwargs["step"] = self._compound_nuts(sample_kwargs.pop("nuts"), settings.mass_matrix,
                                                                settings.random_seed, int(settings.tune))
                pm.sample(
                    draws=int(settings.draws),
                    tune=int(settings.tune),
                    chains=chains,
                    cores=cores,
                    random_seed=settings.random_seed,
                    progressbar=bool(settings.progressbar),
                    quiet=not settings.progressbar,
                    compute_convergence_checks=False,
                    discard_tuned_samples=True,
                    callback=collector,
                    model=self.sampling_model,
                    mp_ctx=workers,
                    **sample_kwargs,
                )
            except BaseException as error:
                stop_due = collector.reason != "error" and (collector.reason or control.reason) is not None
                if isinstance(error, KeyboardInterrupt):
                    control.note_interrupt()  # our stop, or the user's Ctrl-C
                elif isinstance(error, (ValueError, EOFError, ConnectionError)) and stop_due:
                    # After a stop PyMC still packs the partial traces, and raises "Not enough
                    # samples to build a trace." when no chain got past warm-up; a terminal's
                    # Ctrl-C also reaches the workers, which may exit before PyMC reads their
                    # pipes. The draws have reached on_chunk already.
                    collector.packing_error = f"{type(error).__name__}: {error}"
                else:
                    # PyMC failed mid-run, or on_chunk raised: hand over the draws already
                    # finished (unless on_chunk asked to stop or failed), then re-raise.
                    if collector.reason not in ("stopped", "error"):
                        control.disarm()
                        collector.flush_all()
                    failure = None if collector.reason == "error" else _sampler_failure(error, workers)
                    if failure is not None:
                        raise failure from error
                    raise
            finally:
                control.disarm()
        finished = time.monotonic()
        reason = collector.reason or control.reason
        if reason != "stopped":
            collector.flush_all()
        complete = collector.all_delivered()
        first = collector.first_draw or finished
        if settings.tune <= 0:
            warmup_end = first
        elif len(collector.warmup_ended) == chains:
            warmup_end = max(collector.warmup_ended.values())
        else:  # stopped while a chain was still warming up
            warmup_end = finished
        if self._disconnected:
            extra_note = {"disconnected": self._disconnected}
        else:
            extra_note = {}
        return NUTSRun(
            completed=complete,
            reason="" if complete else (reason or "interrupted"),
            warmup_seconds=max(0.0, min(warmup_end, finished) - first),
            sampling_seconds=max(0.0, finished - min(warmup_end, finished)),
            extra={
                "cores": cores,
                "init": init,
                "setup_seconds": max(0.0, first - started),
                "draws_delivered": dict(collector.delivered),
                "warmup_draws_delivered": dict(collector.warmup_delivered),
                **({"pymc_error_after_stop": collector.packing_error} if collector.packing_error else {}),
                **extra_note,
            },
        )
