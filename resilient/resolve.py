"""Work out what kind of model a user passed: shared API, NumPyro function or PyMC model."""

from __future__ import annotations

import sys
import types
from typing import Any, Mapping

from resilient.errors import UnsupportedModelError
from resilient.model import Model, NativeModel

__all__ = ["resolve_model", "is_numpyro_function", "is_pymc_function", "is_pymc_model", "is_bambi_model"]

SUPPORTED = (
    "a shared-API model function (calling resilient.model.sample / deterministic), "
    "a NumPyro model function (calling numpyro.sample), "
    "a PyMC model (pm.Model, passed as model= or as the `with pm.Model():` context), "
    "or a function that builds and returns a pm.Model"
)


def is_pymc_model(obj: Any) -> bool:
    """A ``pm.Model``, or the frozen copy ``freeze_model`` makes of one."""
    return any(c.__module__.startswith("pymc") and c.__name__ in ("Model", "BaseModel") for c in type(obj).__mro__)


def is_bambi_model(obj: Any) -> bool:
    """A ``bambi.Model`` (recognised by its class, without importing bambi); ``resilient.sample`` runs the
    PyMC model it builds and shapes the result as ``fit`` does (:mod:`resilient.adapters.pymc.bambi`)."""
    return any(c.__module__.split(".")[0] == "bambi" and c.__name__ == "Model" for c in type(obj).__mro__)


def _referenced_objects(function: Any) -> list[Any]:
    code = getattr(function, "__code__", None)
    if code is None:
        return []
    names: set[str] = set()
    stack = [code]
    while stack:
        current = stack.pop()
        names.update(current.co_names)
        names.update(current.co_freevars)
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    namespace = dict(getattr(function, "__globals__", {}))
    for name, cell in zip(code.co_freevars, function.__closure__ or ()):
        try:
            namespace[name] = cell.cell_contents
        except ValueError:
            continue
    return [namespace[n] for n in names if n in namespace]


def _imports(function: Any, package: str) -> bool:
    """The function (or a function inside it) imports ``package`` itself (``import pymc as pm``)."""
    stack = [getattr(function, "__code__", None)]
    while stack:
        code = stack.pop()
        if code is None:
            continue
        if any(name == package or name.startswith(f"{package}.") for name in code.co_names):
            return True
        stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return False


def _refers_to(function: Any, package: str) -> bool:
    if _imports(function, package):
        return True
    for obj in _referenced_objects(function):
        module = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", "") or ""
        if module == package or module.startswith(f"{package}."):
            return True
    return False


def is_numpyro_function(function: Any) -> bool:
    """True when the function refers to numpyro (``numpyro.sample``, ``dist.Normal`` ...)."""
    return _refers_to(function, "numpyro")


def is_pymc_function(function: Any) -> bool:
    """True when the function refers to pymc (``pm.Model``, ``pm.Normal`` ...): a model builder."""
    return _refers_to(function, "pymc")


def _built_pymc_model(function: Any, args: tuple, kwargs: Mapping[str, Any]) -> Any:
    """Call a builder (``def model(): with pm.Model() as m: ...; return m``) for its model."""
    name = getattr(function, "__name__", "model")
    built = function(*args, **kwargs)
    if is_pymc_model(built):
        return built
    raise UnsupportedModelError(
        f"{name}() refers to PyMC but returned {type(built).__name__}, not a pm.Model. A builder must end with "
        f"`return model` (the pm.Model it made); pass a NumPyro or shared-API function to sample it as one."
    )


def _pymc_context_model() -> Any:
    if "pymc" not in sys.modules:
        return None
    import pymc as pm

    try:
        return pm.modelcontext(None)
    except TypeError:
        return None


def resolve_model(model: Any, args: tuple = (), kwargs: Mapping[str, Any] | None = None, **options: Any
                  ) -> Model | NativeModel:
    """The :class:`Model` or :class:`NativeModel` for what the user passed (``None``: the PyMC context)."""
    kwargs = dict(kwargs or {})
    if isinstance(model, (Model, NativeModel)):
        return model.with_options(**options) if options else model
    if model is None:
        model = _pymc_context_model()
        if model is None:
            raise UnsupportedModelError(
                "No model given. Pass one as the first argument, or call inside `with pm.Model():`. "
                f"Resilient runs {SUPPORTED}."
            )
    if is_bambi_model(model):  # the PyMC model Bambi builds (resilient.sample also shapes the result as fit does)
        if not model.built:
            model.build()
        model = model.backend.model
    if is_pymc_model(model):
        if args or kwargs:
            raise UnsupportedModelError(
                "A PyMC model carries its own data: positional/keyword data arguments are only for "
                "model functions. Use pm.Data or build the model with the data."
            )
        return NativeModel("pymc", model, **options)
    if callable(model) and not isinstance(model, type):
        from resilient.model import data_arguments

        args, kwargs = data_arguments(args, kwargs)
        if is_numpyro_function(model):
            return NativeModel("numpyro", model, args, kwargs, **options)
        if is_pymc_function(model):
            return NativeModel("pymc", _built_pymc_model(model, args, kwargs), **options)
        return Model(model, args, kwargs, **options)
    raise UnsupportedModelError(f"`model` must be {SUPPORTED}; got {type(model).__module__}.{type(model).__name__}.")


def default_backend(model: Model | NativeModel, backend: str | None) -> str:
    """The backend to use: a native model's own; for shared models ``backend`` or numpyro."""
    if isinstance(model, NativeModel):
        if backend is not None and backend != model.backend:
            raise UnsupportedModelError(
                f"This is a native {model.backend} model, so `backend` must be {model.backend!r}, got {backend!r}. "
                "Write the model in the shared API (resilient.sample, resilient.distributions) to run it on either backend."
            )
        return model.backend
    return backend or "numpyro"
