"""The PyMC backend: shared-API models and native ``pm.Model`` objects behind one contract.

:class:`PyMCAdapter` turns a :class:`resilient.model.Model` (the shared API) or a
:class:`resilient.model.NativeModel` holding a ``pm.Model`` into a :class:`PyMCCompiledModel`,
which implements :class:`resilient.backend.CompiledModel`:

* the unconstrained vector ``x`` is PyMC's value variables (``sigma_log__`` ...) raveled in
  the order of ``model.value_vars``; blocks are named by the free variables (``sigma``);
* the model is PyMC's frozen copy (``freeze_model``), which caches its compiled functions:
  log density and gradient are the very ``logp_dlogp_function`` that ``pm.sample``'s NUTS then
  runs (compiled once, lazily on first use, so building a compiled model is cheap), and a
  retry by the loop recompiles nothing;
* ``run_nuts`` runs ``pm.sample`` with PyMC's NUTS and a per-draw callback that hands
  finished draws to the caller in chunks, and stops it (by ``KeyboardInterrupt``, the way
  PyMC documents) when the caller says so or a deadline passes.

Choices documented here because the contract leaves them to the adapter:

* ``LKJCholesky(n, eta)`` is ``pm.LKJCorr(name, n=n, eta=eta)``: in PyMC 6 ``LKJCorr``
  *is* the distribution of the lower Cholesky factor of an LKJ correlation matrix (same
  density as NumPyro's ``LKJCholesky``), with a ``CholeskyCorrTransform``.
* ``Truncated(base, lower, upper, stable)`` is ``pm.Truncated(name, base.dist(...), ...)``;
  PyMC computes the normaliser with ``logcdf``/``logccdf`` (and a dedicated
  ``TruncatedNormal`` for Normals), so ``stable`` needs nothing more. PyMC also gives an
  infinite bound an ``Interval`` transform that degenerates to a log/identity transform,
  so the motivating model's gradient is finite on this backend even without the rewrite.
* Native models are used as built: ``noncentered`` and ``float32`` are not applied to a
  ``pm.Model`` (``fix`` needs nothing: PyMC already handles infinite bounds and far tails), and
  ``float32`` is not applied to shared-API models either: PyMC runs in float64. What was not
  applied is listed in :attr:`PyMCCompiledModel.ignored_options`.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
import warnings
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
from pymc.model.core import BaseModel, FrozenModel
from pytensor.tensor import special as _special

from resilient.backend import STAT_NAMES, Chunk, NUTSRun, NUTSSettings
from resilient.distributions import Distribution, Truncated
from resilient.errors import SamplerError, UnsupportedModelError
from resilient.model import Model, NativeModel, Site, Trace

__all__ = ["PyMCAdapter", "PyMCCompiledModel", "PyMCSiteHandler", "PYTENSOR_MATH", "to_pymc"]

#: PyMC's NUTS statistic for each of :data:`resilient.backend.STAT_NAMES`.
_STAT_SOURCES = {
    "diverging": "diverging",
    "tree_depth": "depth",
    "n_steps": "tree_size",
    "energy": "energy",
    "lp": "model_logp",
    "acceptance_rate": "mean_tree_accept",
    "step_size": "step_size",
}
_STAT_DTYPES = {"diverging": bool, "tree_depth": np.int64, "n_steps": np.int64}

#: Seconds without a new draw, once a stop is due, before the run is interrupted by a signal.
_STOP_GRACE = 1.0


# --------------------------------------------------------------------------------------------
# The math namespace (jax.numpy-like signatures on pytensor.tensor)
# --------------------------------------------------------------------------------------------


def _logit(p: Any) -> Any:
    return pt.log(p) - pt.log1p(-p)


def _where(condition: Any, x: Any = None, y: Any = None) -> Any:
    if x is None or y is None:
        raise TypeError("where(condition, x, y) needs all three arguments inside a model.")
    return pt.where(condition, x, y)


def _clip(x: Any, min: Any = None, max: Any = None, *, a_min: Any = None, a_max: Any = None) -> Any:
    low = min if min is not None else a_min
    high = max if max is not None else a_max
    if low is not None and high is not None:
        return pt.clip(x, low, high)
    if low is not None:
        return pt.maximum(x, low)
    if high is not None:
        return pt.minimum(x, high)
    return pt.as_tensor_variable(x)


def _reshape(x: Any, shape: Any = None, *, newshape: Any = None) -> Any:
    return pt.reshape(x, shape if shape is not None else newshape)


def _sum(x: Any, axis: Any = None, keepdims: bool = False, **_: Any) -> Any:
    return pt.sum(x, axis=axis, keepdims=keepdims)


def _mean(x: Any, axis: Any = None, keepdims: bool = False, **_: Any) -> Any:
    return pt.mean(x, axis=axis, keepdims=keepdims)


def _prod(x: Any, axis: Any = None, keepdims: bool = False, **_: Any) -> Any:
    return pt.prod(x, axis=axis, keepdims=keepdims)


def _logsumexp(x: Any, axis: Any = None, keepdims: bool = False, **_: Any) -> Any:
    return pt.logsumexp(x, axis=axis, keepdims=keepdims)


def _stack(arrays: Any, axis: int = 0) -> Any:
    return pt.stack(list(arrays), axis=axis)


def _concatenate(arrays: Any, axis: int = 0) -> Any:
    return pt.concatenate(list(arrays), axis=axis)


#: Every name of :data:`resilient.math.FUNCTIONS`, on PyTensor.
PYTENSOR_MATH = SimpleNamespace(
    exp=pt.exp, log=pt.log, log1p=pt.log1p, expm1=pt.expm1, sqrt=pt.sqrt, square=pt.square,
    abs=pt.abs, sum=_sum, mean=_mean, prod=_prod, dot=pt.dot, matmul=pt.matmul,
    sigmoid=pt.sigmoid, logit=_logit, softplus=pt.softplus, tanh=pt.tanh, sin=pt.sin, cos=pt.cos,
    erf=pt.erf, lgamma=pt.gammaln, maximum=pt.maximum, minimum=pt.minimum, where=_where,
    clip=_clip, stack=_stack, concatenate=_concatenate, logsumexp=_logsumexp,
    log_softmax=lambda x, axis=-1: _special.log_softmax(x, axis=axis),
    softmax=lambda x, axis=-1: _special.softmax(x, axis=axis),
    cumsum=lambda x, axis=None: pt.cumsum(x, axis=axis),
    zeros=lambda shape, dtype=None: pt.zeros(shape, dtype=dtype),
    ones=lambda shape, dtype=None: pt.ones(shape, dtype=dtype),
    arange=pt.arange, reshape=_reshape, transpose=lambda x, axes=None: pt.transpose(x, axes),
    outer=lambda a, b: pt.outer(pt.as_tensor_variable(a), pt.as_tensor_variable(b)),
    diag=lambda v, k=0: pt.diag(pt.as_tensor_variable(v), k),
)


# --------------------------------------------------------------------------------------------
# Records -> PyMC distributions
# --------------------------------------------------------------------------------------------


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
def _quiet_fork() -> Iterator[None]:
    """Hide JAX's "os.fork() was called" RuntimeWarning when PyMC forks its chain workers.

    The workers never call JAX, which is what the warning is about; a fork server would avoid it
    but costs each call ~10-15 s of worker start-up (measured on a two-variable model).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        yield


class _WorkersDieWithUs:
    """A multiprocessing context that is ``base`` except that its processes die with the one that
    started them (Linux ``PR_SET_PDEATHSIG``), passed to ``pm.sample`` as ``mp_ctx``.

    PyMC's chain workers otherwise outlive a parent killed by SIGKILL (the OOM killer, a batch
    scheduler): each forked worker holds its siblings' pipe ends, so none sees EOF, and they sleep
    holding their memory until someone kills them by hand. The kernel ties the signal to the
    thread that started the worker: the one blocked in ``pm.sample`` until the workers are done.
    """

    def __init__(self, base: Any) -> None:
        self._base = base
        self.processes: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)

    def Process(self, *, target: Callable, args: tuple = (), **kwargs: Any) -> Any:  # noqa: N802
        # fork and spawn start the worker from this process, so a parent id other than ours means
        # we died before the worker could ask to die with us; under a fork server it is the server.
        parent = os.getpid() if self._base.get_start_method() in ("fork", "spawn") else None
        process = self._base.Process(target=_die_with_parent, args=(parent, target, *args), **kwargs)
        self.processes.append(process)
        return process


def _die_with_parent(parent: int | None, target: Callable, *args: Any) -> Any:
    """Run ``target(*args)`` in a worker that gets SIGKILL when its parent exits (Linux only)."""
    before = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no prctl here: the worker runs as PyMC would run it
        pass
    if os.getppid() != (before if parent is None else parent):
        os._exit(1)  # the parent is already gone
    return target(*args)


def _chain_worker_context() -> Any:
    """The ``mp_ctx`` for ``pm.sample``: PyMC's own choice on Linux (the platform default start
    method; our models compile without JAX), with workers that die with us; ``None`` (PyMC
    decides) elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    return _WorkersDieWithUs(multiprocessing.get_context())


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


def _param(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return np.asarray(value)
    return value


def _base_dist(dist: Distribution) -> Any:
    """The unnamed PyMC distribution (``pm.X.dist``) for a record, without its shape."""
    params = {k: _param(v) for k, v in dist.params.items() if v is not None}
    if dist.family == "LKJCholesky":
        return pm.LKJCorr.dist(n=_constant_int(params["n"], "n"), eta=params["eta"])
    return getattr(pm, dist.family).dist(**params)


def _constant_int(value: Any, name: str) -> int:
    try:
        return int(np.asarray(value).item())
    except (TypeError, ValueError) as error:
        raise UnsupportedModelError(
            f"LKJCholesky: `{name}` must be a plain integer on the PyMC backend, got {value!r}."
        ) from error


def to_pymc(name: str, dist: Distribution | Truncated, observed: Any = None) -> Any:
    """Declare ``name`` in the current ``pm.Model`` from a resilient record; return the variable."""
    kwargs: dict[str, Any] = {}
    if observed is not None:
        kwargs["observed"] = np.asarray(observed) if isinstance(observed, (list, tuple)) else observed
    if dist.shape is not None:
        # `size` is the batch shape in PyMC (event dimensions are appended), as for records.
        kwargs["size"] = tuple(dist.shape)
    if isinstance(dist, Truncated):
        return pm.Truncated(
            name, _base_dist(dist.base), lower=_param(dist.lower), upper=_param(dist.upper), **kwargs
        )
    if dist.family == "LKJCholesky":
        params = dict(dist.params)
        return pm.LKJCorr(name, n=_constant_int(params["n"], "n"), eta=_param(params["eta"]), **kwargs)
    params = {k: _param(v) for k, v in dist.params.items() if v is not None}
    return getattr(pm, dist.family)(name, **params, **kwargs)


class PyMCSiteHandler:
    """The :class:`resilient.model.SiteHandler` that declares sites in the active ``pm.Model``."""

    math = PYTENSOR_MATH

    def sample_site(self, name: str, dist: Distribution | Truncated, observed: Any) -> Any:
        return to_pymc(name, dist, observed)

    def deterministic_site(self, name: str, value: Any) -> Any:
        return pm.Deterministic(name, pt.as_tensor_variable(value))


# --------------------------------------------------------------------------------------------
# Site descriptions for native models
# --------------------------------------------------------------------------------------------


def _format_input(var: Any, named: set) -> str:
    if var in named and getattr(var, "name", None):
        return var.name
    data = getattr(var, "data", None)
    if data is not None:
        array = np.asarray(data)
        if array.ndim == 0:
            value = array.item()
            if isinstance(value, float):
                if np.isinf(value):
                    return "inf" if value > 0 else "-inf"
                return f"{value:g}"
            return str(value)
        return np.array2string(array, precision=4, threshold=6, separator=", ").replace("\n", "")
    try:
        from pymc.printing import _str_for_input_var

        return _str_for_input_var(var, formatting="plain", named_vars=named)
    except Exception:  # noqa: BLE001 - a description must never fail
        return "<expr>"


def _describe_rv(rv: Any, named: set) -> str:
    """``Truncated(Normal(0, sigma), lower=0, upper=inf)``, ``InverseGamma(2, 3)`` ..."""
    node = rv.owner
    op = node.op
    print_name = getattr(op, "_print_name", None)
    family = print_name[0] if print_name else type(op).__name__
    from pytensor.tensor.random.type import RandomType
    from pytensor.tensor.type_other import NoneTypeT

    if type(op).__name__ == "TruncatedRV":
        args = list(node.inputs[2:])  # rng, size, *base params, lower, upper
    else:
        try:
            args = list(op.dist_params(node))
        except Exception:  # noqa: BLE001
            args = [x for x in node.inputs if not isinstance(x.type, (RandomType, NoneTypeT))]
    texts = [_format_input(a, named) for a in args]
    if family.startswith("Truncated") and family != "Truncated" and len(texts) >= 2:
        base = family[len("Truncated"):]
        lower, upper = texts[-2:]
        return f"Truncated({base}({', '.join(texts[:-2])}), lower={lower}, upper={upper})"
    return f"{family}({', '.join(texts)})"


def _parents(var: Any, sites: set) -> tuple[str, ...]:
    """Names of the sites whose values feed ``var`` directly (not through another site)."""
    from pytensor.graph.traversal import ancestors

    start = list(var.owner.inputs) if var.owner is not None else []
    found = []
    for ancestor in ancestors(start, blockers=sites):
        if ancestor in sites and ancestor is not var and ancestor.name not in found:
            found.append(ancestor.name)
    return tuple(found)


def _native_sites(model: Any) -> dict[str, Site]:
    named = set(model.named_vars.values())
    site_vars = set(model.free_RVs) | set(model.observed_RVs) | set(model.deterministics)
    sites: dict[str, Site] = {}
    groups = (
        ("latent", model.free_RVs), ("observed", model.observed_RVs),
        ("deterministic", model.deterministics), ("potential", model.potentials),
    )
    for kind, variables in groups:
        for var in variables:
            if kind in ("latent", "observed"):
                try:
                    description = _describe_rv(var, named)
                except Exception:  # noqa: BLE001 - best effort for native models
                    description = type(var.owner.op).__name__
            else:
                description = "Deterministic" if kind == "deterministic" else "Potential"
            try:
                inputs = _parents(var, site_vars)
            except Exception:  # noqa: BLE001
                inputs = ()
            sites[var.name] = Site(var.name, kind, None, None, (), False, description, inputs)
    return sites


# --------------------------------------------------------------------------------------------
# The adapter and the compiled model
# --------------------------------------------------------------------------------------------


class PyMCAdapter:
    """Compiles shared-API models and native ``pm.Model`` objects for PyMC.

    ``cores``: processes for ``pm.sample`` (``None``: ``os.cpu_count()``), capped at the chains.
    A run with a deadline uses one process per chain whatever ``cores`` says: PyMC runs surplus
    chains only after the first ones finish, which a deadline would leave empty.
    """

    name = "pymc"

    def __init__(self, cores: int | None = None) -> None:
        if cores is not None and int(cores) < 1:
            raise ValueError(f"`cores` must be at least 1, got {cores}.")
        self.cores = None if cores is None else int(cores)

    def compile(self, model: Any) -> "PyMCCompiledModel":
        if isinstance(model, Model):
            handler = PyMCSiteHandler()
            with _no_c_compilation(), pm.Model() as pm_model:
                trace = Trace(model, handler)
                sites = trace.run()
            compiled = PyMCCompiledModel(_frozen(pm_model), dict(sites), cores=self.cores, name=model.name,
                                         order=tuple(pm_model.named_vars))
            compiled.ignored_options = ("float32",) if model.float32 else ()  # PyMC runs in float64
            return compiled
        if isinstance(model, NativeModel):
            if model.backend != "pymc":
                raise UnsupportedModelError(
                    f"The PyMC adapter cannot run a native {model.backend} model; "
                    f"use backend={model.backend!r}, or write the model in the shared API to switch."
                )
            if not isinstance(model.model, BaseModel):
                raise UnsupportedModelError(
                    f"A native PyMC model must be a pm.Model (or a frozen one), got {type(model.model).__name__}."
                )
            ignored = tuple(
                option for option, active in (
                    ("noncentered", bool(model.noncentered)), ("float32", bool(model.float32)),
                ) if active
            )
            compiled = PyMCCompiledModel(
                _frozen(model.model), _native_sites(model.model), cores=self.cores, name=model.name,
                order=tuple(model.model.named_vars),
            )
            compiled.ignored_options = ignored
            return compiled
        if isinstance(model, BaseModel):
            return self.compile(NativeModel("pymc", model))
        raise UnsupportedModelError(
            f"The PyMC adapter compiles resilient.model.Model or NativeModel(backend='pymc'), "
            f"got {type(model).__name__}."
        )


def _frozen(model: Any) -> Any:
    """PyMC's frozen copy of ``model`` (compiled functions cached, graph immutable; the user's
    model is left as it is), or ``model`` itself where PyMC cannot freeze it (symbolic initial
    values): then everything still works, compiled once per use as ``pm.sample`` does."""
    from pymc.model.transform.optimization import freeze_model

    if isinstance(model, FrozenModel):
        return model
    try:
        with _no_c_compilation():
            return freeze_model(model)
    except (TypeError, ValueError, NotImplementedError):
        return model


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


def _preflight_mode() -> Any:
    from pytensor.compile.mode import Mode

    return Mode(linker="py", optimizer="fast_run").excluding("fusion")


_EVAL_ERRORS: tuple[type[BaseException], ...] = (ArithmeticError, np.linalg.LinAlgError)
try:  # PyMC's failed parameter checks, where a graph keeps them as assertions
    from pymc.logprob.utils import ParameterValueError

    _EVAL_ERRORS += (ParameterValueError,)
except ImportError:  # pragma: no cover
    pass


class PyMCCompiledModel:
    """A ``pm.Model`` behind :class:`resilient.backend.CompiledModel` (see the module docstring)."""

    backend = "pymc"

    def __init__(self, model: Any, sites: Mapping[str, Site], *, cores: int | None = None,
                 name: str = "model", order: Sequence[str] = ()) -> None:
        """``order``: variable names as the user declared them (a frozen model may list them
        otherwise); the posterior, the deterministics and the site terms follow it."""
        self.model = model
        self.name = name
        self.sites = dict(sites)
        self.cores = cores
        self.ignored_options: tuple[str, ...] = ()
        discrete = [rv.name for rv in model.free_RVs if rv.type.dtype.startswith(("int", "uint", "bool"))]
        if discrete:
            raise UnsupportedModelError(
                f"The latent variable(s) {', '.join(discrete)} are discrete; NUTS needs continuous "
                "latents. Marginalise them out (sum over their values in the likelihood) or make "
                "them observed."
            )
        self.value_vars = list(model.value_vars)
        rvs = [model.values_to_rvs[v] for v in self.value_vars]
        self.latent_names = tuple(rv.name for rv in rvs)
        self._latents = rvs
        rank = {name: i for i, name in enumerate(order)}

        def declared(variables: Sequence[Any]) -> list[Any]:
            return sorted(variables, key=lambda v: rank.get(v.name, len(rank)))

        self._posterior_latents = declared(rvs)
        self._deterministics = declared(model.deterministics)
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
        """PyMC's ``logp_dlogp_function`` as NUTS asks for it (raveled ``x``): on a frozen model
        ``pm.sample`` gets this compiled function from the model's cache instead of compiling
        its own, so preflight checks exactly what the sampler runs, at no extra compile."""
        return self.model.logp_dlogp_function(ravel_inputs=True)

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
        """Names in a chunk's posterior: the free variables, then the deterministics, each in
        the order the model declared them."""
        return tuple(v.name for v in [*self._posterior_latents, *self._deterministics])

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
        missing = [name for name in self.latent_names if name not in values]
        if missing:
            raise ValueError(
                f"unconstrain needs a value for every latent; missing {', '.join(missing)}."
            )
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
            return np.random.default_rng(random_seed).uniform(-2.0, 2.0, size=self.dimension)
        if strategy not in ("default", "median", "prior"):
            raise ValueError(
                f"Unknown initial-point strategy {strategy!r}; use 'default', 'uniform', 'prior' or 'median'."
            )
        rng = np.random.default_rng(random_seed)
        if strategy == "prior":
            with _no_c_compilation():
                return self._flatten(self._initial_point_fn("prior")(int(rng.integers(2**30))))
        if strategy == "median":
            return self._median.copy()
        for _ in range(10):
            x = self._median + rng.uniform(-1.0, 1.0, size=self.dimension)
            if np.isfinite(self.log_density(x)):
                break
        return x

    @_lazy
    def _median(self) -> np.ndarray:
        """The model's initial point (``support_point`` unless ``initval`` says otherwise)."""
        return self._flatten(self._initial_point_fn("median")(0))

    def observed_data(self) -> dict[str, np.ndarray]:
        data = {}
        for rv in self.model.observed_RVs:
            value = self.model.rvs_to_values[rv]
            if hasattr(value, "get_value"):
                data[rv.name] = np.asarray(value.get_value())
            elif hasattr(value, "data"):
                data[rv.name] = np.asarray(value.data)
            else:
                data[rv.name] = np.asarray(value.eval())
        return data

    # ---- NUTS -------------------------------------------------------------------------------

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
                       nuts: dict[str, Any]) -> dict[str, Any]:
        """``pm.sample`` arguments with the NUTS step built here, as ``pm.sample`` would build it.

        ``pm.sample`` picks step methods by differentiating the log density with respect to each
        latent and raises ``DisconnectedInputError`` for one it does not depend on; ``init_nuts``
        tolerates it (a zero gradient), so a model such as ``x ~ Flat()`` still samples and the
        loop can see the improper posterior wander.
        """
        from pymc.util import get_random_generator

        seeds = [int(r.integers(2**30)) for r in get_random_generator(settings.random_seed).spawn(chains)]
        points, step = pm.init_nuts(
            init=init, chains=chains, model=self.model, random_seed=seeds, progressbar=False, quiet=True,
            tune=int(settings.tune), initvals=initvals, **nuts,
        )
        return {"step": step, "initvals": list(points)}

    def run_nuts(self, settings: NUTSSettings, on_chunk: Callable[[Chunk], bool]) -> NUTSRun:
        """``pm.sample`` with PyMC's NUTS; draws reach ``on_chunk`` every ``chunk_size`` draws of a
        chain (warm-up included, flagged), partial chunks at the end. ``on_chunk`` returning
        ``False`` stops the run (``reason="stopped"``), as does ``settings.deadline``
        (``"deadline"``, checked at every draw) and Ctrl-C (``"interrupted"``); draws finished
        before a deadline or Ctrl-C are delivered, none after ``on_chunk`` returned ``False``."""
        if settings.resume_state is not None:
            raise NotImplementedError(
                "The PyMC backend cannot resume a run: pm.sample neither exposes nor accepts NUTS's "
                "adapted state (step size, mass matrix, chain positions). Start a new run, e.g. "
                "from the last draws as initial points."
            )
        chains = int(settings.chains)
        if settings.deadline is not None:
            # With more chains than processes PyMC runs the chains in batches (chains 2 and 3 only
            # start when 0 and 1 have finished), so a deadline would leave the late chains empty
            # and no draw complete on every chain: run them all at once instead.
            cores = max(1, chains)
        else:
            cores = max(1, min(chains, self.cores or os.cpu_count() or 1))
        initvals = None
        init = "jitter+adapt_diag"
        if settings.initial_points is not None:
            points = np.asarray(settings.initial_points, dtype=np.float64)
            if points.shape != (chains, self.dimension):
                raise ValueError(
                    f"initial_points must have shape (chains, dimension) = ({chains}, {self.dimension}), "
                    f"got {points.shape}."
                )
            # PyMC reads string keys of transformed names (`sigma_log__`) as unconstrained values;
            # `adapt_diag` starts from them as given (`jitter+` would jitter them).
            initvals = [self._point(row) for row in points]
            init = "adapt_diag"
        depth = int(settings.max_tree_depth)
        nuts = {
            "target_accept": float(settings.target_accept),
            "max_treedepth": depth,
            "early_max_treedepth": min(8, depth),
        }
        sample_kwargs: dict[str, Any] = {"initvals": initvals, "init": init, "nuts": nuts}
        collector = _Collector(self, settings, on_chunk)
        workers = _chain_worker_context()
        started = time.monotonic()
        # np.errstate: PyMC's NUTS reads overflow in its mass matrix or energy as a divergence;
        # NumPy's RuntimeWarning about it is noise (and an exception where warnings are errors,
        # as in a test suite, which then kills the chain; forked workers inherit the state).
        with _StopControl(collector, settings.deadline) as control, _quiet_pytensor(), _quiet_fork(), \
                np.errstate(all="ignore"):
            try:
                if self._disconnected:
                    sample_kwargs = self._explicit_nuts(settings, chains, init, initvals, nuts)
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
                    model=self.model,
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


# --------------------------------------------------------------------------------------------
# Sampling helpers: PyMC's failures, the per-draw callback and the stop control
# --------------------------------------------------------------------------------------------


#: PyMC's own failures that a remedy can address, and what they mean, for the sentence users read.
_NUMERICAL = {
    "Bad initial energy": "the energy at the chain's current position was not finite: the log density "
                          "recomputed there, or the kinetic energy under the newly adapted mass matrix, "
                          "overflowed (often a funnel or a chain drifting far out, especially in float32)",
    "Mass matrix contains zeros": "the adapted mass matrix has a zero variance (a latent the density ignores)",
    "Mass matrix contains non-finite": "the adapted mass matrix overflowed",
    "Initial evaluation of model at starting point failed": "the log density is not finite at a starting point",
}


def _sampler_failure(error: BaseException, workers: Any = None) -> SamplerError | None:
    """PyMC's sampler failing mid-run, as a :class:`SamplerError`; ``None`` for any other error.

    A chain worker's error reaches us as ``ParallelSamplingError`` (whatever the worker raised),
    a worker that died without a word as ``EOFError`` or ``ConnectionResetError`` on its pipe
    (``workers``, our ``mp_ctx``, knows its exit code); in-process chains raise PyMC's
    ``SamplingError``, the mass matrix's ``ValueError`` or ``MemoryError`` (any other error
    there may be ours, and keeps its own traceback).
    """
    from pymc.exceptions import SamplingError
    from pymc.sampling.parallel import ParallelSamplingError

    if isinstance(error, (EOFError, ConnectionError)):
        return _worker_death(getattr(workers, "processes", None) or ())
    chain = None
    cause: BaseException = error
    if isinstance(error, ParallelSamplingError):
        chain = getattr(error, "_chain", None)
        cause = error.__cause__ or error
    text = str(cause).strip() or type(cause).__name__
    detail = text.split(": SamplerWarning(")[0].splitlines()[0].rstrip(" .:!")
    hint = next((h for key, h in _NUMERICAL.items() if detail.startswith(key)), None)
    if isinstance(cause, MemoryError):
        kind = "resources"
    elif hint is not None and isinstance(cause, (SamplingError, ValueError)):
        kind = "numerical"
    elif cause is not error:
        kind = "crash"
    else:
        return None
    iteration = re.search(r"\bstep=(\d+)", text)
    where = "" if chain is None else f" chain {chain}"
    where += "" if iteration is None else f" at iteration {iteration.group(1)} (warm-up included)"
    return SamplerError(f"PyMC's NUTS stopped{where} with {type(cause).__name__}: {detail}"
                        + (f": {hint}" if hint else ""), backend="pymc", kind=kind, chain=chain)


def _worker_death(processes: Sequence[Any]) -> SamplerError:
    """Which chains' workers died and how, from the exit codes. PyMC makes one worker per chain,
    in chain order, and terminates the others (SIGTERM) when one fails."""
    for process in processes:
        process.join(timeout=1.0)
    dead = [(chain, p.exitcode) for chain, p in enumerate(processes)
            if p.exitcode not in (None, 0, -signal.SIGTERM)]
    if not dead:
        return SamplerError("a PyMC chain worker exited without reporting an error", backend="pymc", kind="crash")
    hows = []
    for chain, code in dead:
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            hows.append(f"chain {chain}: killed by {name}")
        else:
            hows.append(f"chain {chain}: exit code {code}")
    killed = any(code == -signal.SIGKILL for _, code in dead)
    who = "a PyMC chain worker" if len(dead) == 1 else f"{len(dead)} PyMC chain workers"
    return SamplerError(
        f"{who} died without reporting an error ({'; '.join(hows)})"
        + (": SIGKILL is what the out-of-memory killer sends" if killed else ""),
        backend="pymc", kind="resources" if killed else "crash", chain=dead[0][0])


class _ChainBuffer:
    """One chain's draws not yet handed over: either copied per draw (``values``, ``stats``) or,
    when PyMC records into its NDArray trace, the range ``begin:begin + size`` of that trace."""

    def __init__(self) -> None:
        self.warmup = True
        self.start = 0
        self.values: dict[str, list[np.ndarray]] = {}
        self.stats: dict[str, list[Any]] = {}
        self.size = 0
        self.trace: Any = None
        self.begin = 0


class _Collector:
    """``pm.sample``'s callback: buffers each chain's draws and hands chunks to ``on_chunk``.

    It runs in the main process (PyMC calls it there for parallel chains too, right after
    recording the draw in its NDArray trace). Per draw it only counts: a chunk's constrained
    values, deterministics and NUTS statistics are sliced out of that trace when the chunk is
    handed over, so the callback adds next to nothing to PyMC's own per-draw work. For any
    other trace each draw is copied (values computed here, statistics from ``draw.stats``).
    """

    def __init__(self, compiled: PyMCCompiledModel, settings: NUTSSettings,
                 on_chunk: Callable[[Chunk], bool]) -> None:
        self.compiled = compiled
        self.settings = settings
        self.on_chunk = on_chunk
        self.chunk_size = max(1, int(settings.chunk_size))
        self.buffers = {c: _ChainBuffer() for c in range(int(settings.chains))}
        self.delivered = {c: 0 for c in self.buffers}
        self.warmup_delivered = {c: 0 for c in self.buffers}
        self.reason: str | None = None
        self.control: _StopControl | None = None
        self.first_draw: float | None = None
        self.warmup_ended: dict[int, float] = {}
        self.names = compiled.posterior_names
        self.packing_error: str | None = None

    # PyMC calls callback(trace=..., draw=...)
    def __call__(self, trace: Any = None, draw: Any = None) -> None:
        control = self.control
        if control is not None:
            control.in_callback = True
        try:
            if self.reason is None and control is not None and control.reason is not None:
                self.reason = control.reason
            if self.reason is None:
                self._take(trace, draw)
                deadline = self.settings.deadline
                if self.reason is None and deadline is not None and time.monotonic() > deadline:
                    self.reason = "deadline"
        finally:
            if control is not None:
                control.in_callback = False
                control.progress()
        if self.reason is not None or (control is not None and control.reason is not None):
            if self.reason is None:
                self.reason = control.reason
            raise KeyboardInterrupt

    def _take(self, trace: Any, draw: Any) -> None:
        now = time.monotonic()
        if self.first_draw is None:
            self.first_draw = now
        chain = int(draw.chain)
        warmup = bool(draw.tuning)
        buffer = self.buffers[chain]
        if not warmup and chain not in self.warmup_ended:
            self.warmup_ended[chain] = now
        if buffer.warmup != warmup:
            if buffer.size:
                self._flush(chain)
            if self.reason is not None:
                return
            buffer.warmup, buffer.start = warmup, 0
        if _recorded_in(trace, self.names):
            if not buffer.size:
                buffer.trace, buffer.begin = trace, trace.draw_idx - 1
        else:
            values = self._values(draw)
            for name in self.names:
                buffer.values.setdefault(name, []).append(values[name])
            stats = _nuts_stats(draw.stats)
            for name in STAT_NAMES:
                buffer.stats.setdefault(name, []).append(stats[name])
        buffer.size += 1
        if buffer.size >= self.chunk_size:
            self._flush(chain)

    def _values(self, draw: Any) -> dict[str, np.ndarray]:
        """Constrained values of this draw, computed from its unconstrained point."""
        compiled = self.compiled
        inputs = [np.asarray(draw.point[value]).astype(dtype) for _, value, _, dtype, _ in compiled._layout]
        with np.errstate(all="ignore"):
            outputs = compiled._sampling_constrain_fn(*inputs)
        return {name: np.array(v) for name, v in zip(self.names, outputs)}

    def _flush(self, chain: int) -> None:
        buffer = self.buffers[chain]
        if not buffer.size:
            return
        size = buffer.size
        if buffer.trace is not None:
            span = slice(buffer.begin, buffer.begin + size)
            posterior = {name: np.array(buffer.trace.samples[name][span]) for name in self.names}
            stats = _trace_stats(buffer.trace, span, size)
        else:
            posterior = {name: np.stack(buffer.values[name]) for name in self.names}
            stats = buffer.stats
        chunk = Chunk(
            chains=(chain,),
            start=buffer.start,
            warmup=buffer.warmup,
            posterior={name: values[None] for name, values in posterior.items()},
            sample_stats={
                name: np.asarray(stats[name], dtype=_STAT_DTYPES.get(name, np.float64))[None]
                for name in STAT_NAMES
            },
        )
        buffer.start += size
        buffer.values, buffer.stats, buffer.size, buffer.trace = {}, {}, 0, None
        (self.warmup_delivered if chunk.warmup else self.delivered)[chain] += size
        try:
            keep_going = self.on_chunk(chunk)
        except BaseException:
            self.reason = "error"  # never call on_chunk again
            raise
        if keep_going is False:
            self.reason = "stopped"

    def flush_all(self) -> None:
        """Hand over every chain's partial chunk (unless on_chunk asked to stop or failed)."""
        for chain in self.buffers:
            if self.reason in ("stopped", "error"):
                return
            self._flush(chain)

    def all_delivered(self) -> bool:
        return all(
            self.delivered[c] == self.settings.draws and self.warmup_delivered[c] == self.settings.tune
            for c in self.buffers
        )


def _recorded_in(trace: Any, names: Sequence[str]) -> bool:
    """Whether ``trace`` is PyMC's NDArray trace holding ``names`` and the samplers' statistics."""
    samples = getattr(trace, "samples", None)
    return (
        isinstance(samples, dict)
        and getattr(trace, "draw_idx", 0) >= 1
        and isinstance(getattr(trace, "_stats", None), list)
        and all(name in samples for name in names)
    )


def _trace_stats(trace: Any, span: slice, size: int) -> dict[str, np.ndarray]:
    """STAT_NAMES for the draws ``span`` of an NDArray trace (one dict of arrays per sampler)."""
    found: dict[str, np.ndarray] = {}
    for sampler_stats in trace._stats:
        for name, source in _STAT_SOURCES.items():
            if name not in found and source in sampler_stats:
                found[name] = np.array(sampler_stats[source][span])
    for name in STAT_NAMES:
        if name not in found:
            found[name] = np.full(size, np.nan if name not in _STAT_DTYPES else 0)
    return found


def _nuts_stats(stats: Any) -> dict[str, Any]:
    """STAT_NAMES from PyMC's per-draw statistics (a list with one dict per step method)."""
    found: dict[str, Any] = {}
    for sampler_stats in stats if isinstance(stats, (list, tuple)) else [stats]:
        for name, source in _STAT_SOURCES.items():
            if name not in found and source in sampler_stats:
                found[name] = sampler_stats[source]
    for name in STAT_NAMES:
        found.setdefault(name, np.nan if name not in _STAT_DTYPES else 0)
    return found


class _StopControl:
    """Stops ``pm.sample`` promptly: the callback raises ``KeyboardInterrupt`` at a draw, and,
    when no draw comes for a while after a stop is due (one long NUTS step, compilation), a
    watchdog thread sends SIGINT to the main thread. Ctrl-C is told apart from our own stop.

    Signals work in the main thread only; elsewhere the stop happens at the next draw.
    """

    def __init__(self, collector: _Collector, deadline: float | None) -> None:
        self.collector = collector
        self.deadline = deadline
        self.reason: str | None = None
        self.in_callback = False
        self._armed = False
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._last_progress = time.monotonic()
        self._previous_handler: Any = None
        self._main = threading.current_thread() is threading.main_thread()
        self._watchdog: threading.Thread | None = None

    def __enter__(self) -> "_StopControl":
        self.collector.control = self
        if self._main:
            self._previous_handler = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._on_sigint)
            self._main_ident = threading.get_ident()
            if self.deadline is not None:  # a stop by on_chunk happens at a draw, no watchdog needed
                self._watchdog = threading.Thread(target=self._watch, name="resilient-pymc-watchdog", daemon=True)
        self._armed = True
        if self._watchdog is not None:
            self._watchdog.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.disarm()
        if self._main:
            previous = self._previous_handler
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
        self.collector.control = None

    def progress(self) -> None:
        self._last_progress = time.monotonic()

    def note_interrupt(self) -> None:
        """A KeyboardInterrupt came out of pm.sample: ours if a stop was due, else the user's."""
        if self.reason is None and self.collector.reason is None:
            self.reason = "interrupted"

    def disarm(self) -> None:
        with self._lock:
            self._armed = False
        self._done.set()
        if self._watchdog is not None and self._watchdog.is_alive():
            self._watchdog.join(timeout=2.0)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.reason is None and self.collector.reason is None:
            self.reason = "interrupted"
        if not self._armed or self.in_callback:
            return  # the callback raises when it ends; after the run, there is nothing to stop
        raise KeyboardInterrupt

    def _watch(self) -> None:
        while not self._done.wait(0.1):
            now = time.monotonic()
            if self.reason is None and self.collector.reason is None:
                if self.deadline is None or now <= self.deadline:
                    continue
                self.reason = "deadline"
            if now - self._last_progress < _STOP_GRACE:
                continue
            with self._lock:
                if not self._armed:
                    return
                self._last_progress = now
                signal.pthread_kill(self._main_ident, signal.SIGINT)
