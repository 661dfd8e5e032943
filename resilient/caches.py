"""Compilation caches that outlive the process (issue #24): a second Python process sampling the same model
skips the compilations the first one paid for, where the backend can keep them.

* JAX (NumPyro's NUTS): XLA's persistent compilation cache, switched on in
  ``<cache root>/jax`` the first time Resilient compiles a NumPyro model, unless the user has set JAX's own
  ``jax_compilation_cache_dir`` (theirs is kept) or turned it off.
* PyTensor (PyMC's NUTS): PyTensor caches what its default Numba linker compiles (``<compiledir>/numba``) and
  its C modules in its ``compiledir`` (``~/.pytensor``) itself, on by default; Resilient leaves it as it is.
* Numba (nutpie's default backend): nutpie compiles the log density through PyTensor's Numba linker (cached in
  the ``compiledir`` as above); its own wrappers are functions made at run time, which Numba's on-disk cache
  (``cache=True``) cannot keep, so they are compiled again in each process; there is no cache to switch on.

The cache root is ``$RESILIENT_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/resilient`` (``~/.cache/resilient``).
``RESILIENT_CACHE=off`` (or ``0``, ``false``, ``no``) keeps Resilient from switching any cache on.

Within a process, :func:`kept_sampler` keeps the last :data:`KEPT_SAMPLERS` compiled samplers, so
``resilient.sample(model, ...)`` called again on the same model object with equal data (a loop over seeds)
reuses what the first call compiled, as ``resilient.compile(model).sample(...)`` does. Equal data: the same
values of every argument (hashed); for a model function, the same values of what it reads besides its arguments
(the globals its code names, its closure and defaults, helper functions of its module: :func:`_function_state`;
anything of unknown contents there and the function is compiled afresh); and for a ``pm.Model`` the same
variables and the same values in its ``pm.Data`` containers and coordinates; anything it cannot hash is compiled
afresh. A ``pm.Model`` built again
(a notebook cell re-run, a Bambi model fitted again) reuses the sampler of one built alike: the same variables,
dims, data and coordinates, and a graph PyTensor's ``equal_computations`` finds equal on
``pymc.model.fgraph.fgraph_from_model`` (ops compared by their properties, constants by value, a transform made
anew in each build, such as a bounded variable's interval, by what it is made of); a model that
``fgraph_from_model`` cannot convert (custom initial values) is compiled afresh. A model function defined again
(a cell re-run) with the same name and code, reading the same values, reuses the first one's sampler likewise.
``clear_kept()`` forgets them;
``RESILIENT_CACHE=off`` keeps none.
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

__all__ = ["cache_root", "caches_enabled", "enable_jax_cache", "kept_sampler", "clear_kept", "contents_digest",
           "KEPT_SAMPLERS"]

_OFF = {"off", "0", "false", "no"}
#: compilations shorter than this are not written (JAX's default is 1 s; NumPyro's NUTS kernel for a small
#: model compiles in well under a second on a quiet machine and is still worth keeping).
MIN_COMPILE_SECONDS = 0.2

_jax_done = False


def caches_enabled() -> bool:
    """False when ``RESILIENT_CACHE`` says off."""
    return os.environ.get("RESILIENT_CACHE", "on").strip().lower() not in _OFF


def cache_root() -> Path:
    """Where Resilient keeps its caches (see the module's docstring)."""
    explicit = os.environ.get("RESILIENT_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "resilient"


def enable_jax_cache() -> str | None:
    """Switch JAX's persistent compilation cache on in ``<cache root>/jax`` (once per process), unless it is off
    (``RESILIENT_CACHE``) or the user set their own directory. Returns the directory in use, or None."""
    global _jax_done
    import jax

    if _jax_done or not caches_enabled():
        return jax.config.jax_compilation_cache_dir
    _jax_done = True
    if jax.config.jax_compilation_cache_dir:  # the user's own choice wins
        return jax.config.jax_compilation_cache_dir
    directory = cache_root() / "jax"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: run without the cache rather than fail
        return None
    jax.config.update("jax_compilation_cache_dir", str(directory))
    if jax.config.jax_persistent_cache_min_compile_time_secs == 1.0:  # JAX's default; a user's own value is kept
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return str(directory)


#: compiled samplers kept in a process (each holds its compiled models: a few MB to a few hundred on big models)
KEPT_SAMPLERS = 8

_kept: OrderedDict[tuple, tuple[Any, Any]] = OrderedDict()  # key -> (weak reference to the user's model, sampler)
_kept_lock = threading.Lock()


class _Unhashable(Exception):
    pass


def _digest(value: Any, hasher: Any) -> None:
    """Feed ``value`` (arrays, numbers, strings, and containers of them) into ``hasher``; anything else is
    :class:`_Unhashable` (an object whose contents cannot be compared safely)."""
    import numpy as np

    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        hasher.update(f"{type(value).__name__}:{value!r};".encode())
    elif isinstance(value, (list, tuple)):
        hasher.update(f"{type(value).__name__}[{len(value)}](".encode())
        for item in value:
            _digest(item, hasher)
        hasher.update(b")")
    elif isinstance(value, dict):
        hasher.update(f"dict[{len(value)}](".encode())
        for name in sorted(value, key=repr):
            _digest(name, hasher)
            _digest(value[name], hasher)
        hasher.update(b")")
    elif isinstance(value, np.generic) or hasattr(value, "__array__") and not callable(value):
        try:
            array = np.asarray(value)
        except Exception as error:  # noqa: BLE001 - e.g. a traced or lazy array
            raise _Unhashable from error
        if array.dtype == object:
            raise _Unhashable
        hasher.update(f"{array.dtype.str}{array.shape};".encode())
        hasher.update(np.ascontiguousarray(array).tobytes())
    else:
        raise _Unhashable


def _function_state(function: Any, hasher: Any, home: str | None = None, depth: int = 0,
                    seen: set | None = None) -> None:
    """What a model function reads besides its arguments, fed into ``hasher``: the values of the globals its code
    names (a module-level ``LOC = 10.0`` changed between two calls), its closure and its defaults; helper
    functions of the same module likewise (their code too), anything else callable by identity. A traced model
    bakes those values in, so a kept sampler of the same function object would sample the old model. What
    cannot be hashed (an object of unknown contents) is :class:`_Unhashable`: compiled afresh, as raw NumPyro
    traces afresh on each run."""
    import functools
    import types

    seen = set() if seen is None else seen
    if isinstance(function, functools.partial):
        home = home or getattr(function.func, "__module__", None)
        hasher.update(b"partial(")
        if isinstance(function.func, types.FunctionType):
            _function_state(function.func, hasher, home, depth, seen)
        else:
            _global_value(function.func, hasher, home, depth, seen)
        for value in (*function.args, *sorted(function.keywords.items())):
            _global_value(value, hasher, home, depth, seen)
        hasher.update(b")")
        return
    if not isinstance(function, types.FunctionType):
        raise _Unhashable
    if id(function) in seen:
        return
    seen.add(id(function))
    home = function.__module__ if home is None else home
    code = function.__code__
    _code_digest(code, hasher)
    namespace = function.__globals__
    for name in sorted(_global_names(code)):
        if name in namespace:
            hasher.update(f"global {name}=".encode())
            _global_value(namespace[name], hasher, home, depth, seen)
    for cell in function.__closure__ or ():
        try:
            contents = cell.cell_contents
        except ValueError:  # a cell not yet filled
            hasher.update(b"empty cell;")
            continue
        _global_value(contents, hasher, home, depth, seen)
    for defaults in (function.__defaults__, function.__kwdefaults__):
        _global_value(defaults, hasher, home, depth, seen)


def _global_names(code: Any) -> set[str]:
    """The global (and attribute) names a code object and the code nested in it use."""
    import types

    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _global_names(constant)
    return names


def _code_digest(code: Any, hasher: Any) -> None:
    import types

    hasher.update(code.co_code)
    hasher.update(repr(code.co_names).encode())
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            _code_digest(constant, hasher)
        else:
            hasher.update(f"{type(constant).__name__}:{constant!r};".encode())


def _global_value(value: Any, hasher: Any, home: str | None, depth: int, seen: set) -> None:
    import functools
    import types

    if isinstance(value, types.ModuleType):
        hasher.update(f"module {value.__name__};".encode())
    elif isinstance(value, (types.FunctionType, functools.partial)) and depth < 4 and (
            getattr(value, "__module__", None) == home or isinstance(value, functools.partial)):
        hasher.update(b"function(")
        _function_state(value, hasher, home, depth + 1, seen)
        hasher.update(b")")
    elif callable(value):  # a library function, a class, a distribution's constructor: the same object
        hasher.update(f"callable {getattr(value, '__module__', '')}.{getattr(value, '__qualname__', '')}"
                      f"#{id(value)};".encode())
    elif isinstance(value, (list, tuple)):  # a table of link functions, say: each item as a global of its own
        hasher.update(f"{type(value).__name__}[{len(value)}](".encode())
        for item in value:
            _global_value(item, hasher, home, depth, seen)
        hasher.update(b")")
    elif isinstance(value, dict):
        hasher.update(f"dict[{len(value)}](".encode())
        for name in sorted(value, key=repr):
            _digest(name, hasher)
            _global_value(value[name], hasher, home, depth, seen)
        hasher.update(b")")
    else:
        _digest(value, hasher)


def _pymc_contents(model: Any, hasher: Any) -> None:
    """A ``pm.Model``'s variables, the values in its data containers and in any other shared variable its graph
    reads (a ``pytensor.shared`` changed with ``set_value``: nutpie's and the JAX translation's compiled models
    hold the value they were compiled with), and its coordinates."""
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph.traversal import ancestors
    from pytensor.tensor.random.type import RandomType

    _digest(list(model.named_vars), hasher)
    for variable in getattr(model, "data_vars", ()):
        if hasattr(variable, "get_value"):
            _digest((variable.name, variable.get_value(borrow=True)), hasher)
    data = set(getattr(model, "data_vars", ()))
    outputs = [*model.free_RVs, *model.observed_RVs, *model.potentials, *model.deterministics]
    for variable in ancestors(outputs):
        if isinstance(variable, SharedVariable) and variable not in data and not isinstance(variable.type,
                                                                                              RandomType):
            _digest((str(variable.name), variable.get_value(borrow=True)), hasher)
    _digest({name: None if values is None else list(values) for name, values in model.coords.items()}, hasher)
    _digest((getattr(model, "name", ""), bool(getattr(model, "check_bounds", True)),
             {name: tuple(dims) if dims else None for name, dims in getattr(model, "named_vars_to_dims", {}).items()}),
            hasher)


def _built_alike(a: Any, b: Any) -> bool:
    """Two ``pm.Model`` objects whose hashed contents are equal (:func:`_pymc_contents`: names, dims, data,
    coordinates, ``check_bounds``) built alike (a cell re-run): equal graphs by ``equal_computations`` on their
    ``fgraph_from_model`` forms (each variable's op carries its name, dims and transform), the model's inputs
    paired in order, and equal values in every data container. Whatever cannot be compared is not alike."""
    import warnings

    import numpy as np
    from pymc.model.fgraph import fgraph_from_model
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph.basic import equal_computations
    from pytensor.tensor.random.type import RandomType

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph_a, _ = fgraph_from_model(a, inlined_views=True)
            graph_b, _ = fgraph_from_model(b, inlined_views=True)
        if len(graph_a.inputs) != len(graph_b.inputs):
            return False
        for x, y in zip(graph_a.inputs, graph_b.inputs):
            if isinstance(x, SharedVariable) != isinstance(y, SharedVariable) or x.type != y.type:
                return False
            if isinstance(x, SharedVariable) and not isinstance(x.type, RandomType):
                old, new = np.asarray(x.get_value(borrow=True)), np.asarray(y.get_value(borrow=True))
                if old.dtype != new.dtype or old.shape != new.shape or not np.array_equal(old, new, equal_nan=True):
                    return False
        _share_alike_transforms(graph_a, graph_b)
        return bool(equal_computations(list(graph_a.outputs), list(graph_b.outputs), list(graph_a.inputs),
                                       list(graph_b.inputs)))
    except Exception:  # noqa: BLE001 - a model fgraph_from_model cannot convert is compiled afresh
        return False


def _share_alike_transforms(graph_a: Any, graph_b: Any) -> None:
    """Give ``graph_b``'s model-variable ops ``graph_a``'s transform object wherever the two are alike
    (:func:`_alike`). A transform made at model-building time (``pm.Truncated``'s interval, any default
    interval transform of a bounded distribution) is a new object in each build and has no ``__eq__``, so
    ``equal_computations`` would call two models built alike different. Both graphs are throwaway copies."""
    found = [node.op.transform for node in graph_a.apply_nodes if getattr(node.op, "transform", None) is not None]
    for node in graph_b.apply_nodes:
        transform = getattr(node.op, "transform", None)
        if transform is None or any(transform is t or transform == t for t in found):
            continue
        same = next((t for t in found if _alike(t, transform)), None)
        if same is not None:
            props = {name: getattr(node.op, name) for name in node.op.__props__}
            node.op = type(node.op)(**{**props, "transform": same})


def _alike(a: Any, b: Any, depth: int = 0) -> bool:
    """Whether two objects built alike behave alike, judged conservatively: equal numbers, strings, None and
    arrays; containers of alike items; functions of the same code and globals with alike defaults and
    closures; objects of one type with alike attributes. Anything else: only the same object."""
    import types

    import numpy as np

    if a is b:
        return True
    if depth > 6 or type(a) is not type(b):
        return False
    if isinstance(a, (bool, int, float, complex, str, bytes, type(None))):
        return bool(a == b)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_alike(x, y, depth + 1) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_alike(a[k], b[k], depth + 1) for k in a)
    if isinstance(a, types.FunctionType):
        cells_a, cells_b = a.__closure__ or (), b.__closure__ or ()
        return (a.__code__ is b.__code__ or a.__code__ == b.__code__) and a.__globals__ is b.__globals__ \
            and _alike(a.__defaults__, b.__defaults__, depth + 1) \
            and _alike(a.__kwdefaults__, b.__kwdefaults__, depth + 1) and len(cells_a) == len(cells_b) \
            and all(_alike(x.cell_contents, y.cell_contents, depth + 1) for x, y in zip(cells_a, cells_b))
    if type(a).__module__.split(".")[0] in {"pymc", "pytensor"} and hasattr(a, "__dict__") \
            and not hasattr(a, "owner"):  # a transform object; never a graph variable
        return _alike(vars(a), vars(b), depth + 1)
    return False


def _owner(resolved: Any) -> Any:
    """The user's model object behind a resolved model (a function, a ``pm.Model``), or None."""
    from resilient.model import Model, NativeModel

    if isinstance(resolved, Model):
        return resolved.function
    if isinstance(resolved, NativeModel):
        return resolved.model
    return None


def _contents(resolved: Any, owner: Any, hasher: Any) -> None:
    """What a compiled form of ``resolved`` holds fixed: its arguments, and what the model function reads besides
    them (:func:`_function_state`) or the ``pm.Model``'s variables, data and coordinates (:func:`_pymc_contents`)."""
    _digest((resolved.args, dict(resolved.kwargs)), hasher)
    if hasattr(owner, "named_vars") and hasattr(owner, "coords"):
        _pymc_contents(owner, hasher)
    else:
        _function_state(owner, hasher)


def contents_digest(resolved: Any) -> str | None:
    """A digest of what a compiled form of ``resolved`` holds fixed (its data, the globals its function reads, a
    ``pm.Model``'s data containers): it changes when a recompilation would give another model. None where it
    cannot be told (something of unknown contents)."""
    owner = _owner(resolved)
    if owner is None:
        return None
    hasher = hashlib.blake2b(digest_size=16)
    try:
        _contents(resolved, owner, hasher)
    except _Unhashable:
        return None
    return hasher.hexdigest()


def _key(resolved: Any, parts: tuple) -> tuple[tuple, Any] | None:
    """The key under which a sampler of ``resolved`` is kept, and the user's model object; None: not kept."""
    contents = contents_digest(resolved)
    if contents is None:
        return None
    hasher = hashlib.blake2b(digest_size=16)
    options = (type(resolved).__name__, getattr(resolved, "backend", None), resolved.fix,
               tuple(sorted(resolved.noncentered)), resolved.float32, resolved.compile_backend,
               resolved.gradient_backend)
    try:
        _digest((contents, options, parts), hasher)
    except _Unhashable:
        return None
    owner = _owner(resolved)
    return (id(owner), hasher.hexdigest()), owner


def kept_sampler(resolved: Any, make: Callable[[], Any], *parts: Any) -> Any:
    """The sampler kept for ``resolved`` (the same model object and equal data, options and ``parts``: the
    backend, engine and precision choice; or a ``pm.Model`` built alike, see the module), else ``make()``, kept
    for the next call."""
    if not caches_enabled():
        return make()
    found = _key(resolved, parts)
    if found is None:
        return make()
    key, owner = found
    with _kept_lock:
        entry = _kept.get(key)
    # the same object (not another at a reused id), whose data still hash as they did (not changed in place)
    if entry is not None and entry[0]() is owner and (_key(entry[1].model, parts) or (None,))[0] == key:
        with _kept_lock:
            if key in _kept:
                _kept.move_to_end(key)
        return entry[1]
    alike = _kept_alike(resolved, key, owner, parts)
    if alike is not None:
        return alike
    sampler = make()
    try:
        reference = weakref.ref(owner)
    except TypeError:  # an object that takes no weak reference: a strong one, still bounded by KEPT_SAMPLERS
        reference = (lambda kept: lambda: kept)(owner)
    with _kept_lock:
        _kept[key] = (reference, sampler)
        while len(_kept) > KEPT_SAMPLERS:
            _kept.popitem(last=False)
    return sampler


def _kept_alike(resolved: Any, key: tuple, owner: Any, parts: tuple) -> Any:
    """The kept sampler of another model object alike with ``owner`` (equal hashed contents and options), or None:
    a ``pm.Model`` built alike (:func:`_built_alike`), or a model function defined again with the same name and
    code that reads the same values (a notebook cell re-run: the hash already holds its code and what it reads,
    :func:`_function_state`)."""
    import types

    from resilient.model import NativeModel
    from resilient.resolve import is_pymc_model

    if isinstance(resolved, NativeModel) and is_pymc_model(owner):
        def alike(kept: Any) -> bool:
            return is_pymc_model(kept) and _built_alike(kept, owner)
    elif isinstance(owner, types.FunctionType):
        def alike(kept: Any) -> bool:
            return isinstance(kept, types.FunctionType) and (kept.__module__, kept.__qualname__) == (
                owner.__module__, owner.__qualname__)
    else:
        return None
    with _kept_lock:
        candidates = [(k, entry) for k, entry in _kept.items() if k[1] == key[1] and k != key]
    for kept_key, (reference, sampler) in reversed(candidates):
        kept_owner = reference()
        if kept_owner is None or kept_owner is owner:
            continue
        if (_key(sampler.model, parts) or (None,))[0] != kept_key:  # the kept model changed since it was kept
            continue
        if alike(kept_owner):
            with _kept_lock:
                if kept_key in _kept:
                    _kept.move_to_end(kept_key)
            return sampler
    return None


def clear_kept() -> None:
    """Forget the compiled samplers this process keeps (:func:`kept_sampler`)."""
    with _kept_lock:
        _kept.clear()
