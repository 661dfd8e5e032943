"""The NumPyro adapter: compiles shared-API models and native NumPyro functions."""

from __future__ import annotations

from pathlib import Path

from resilient.backend import CAPABILITIES

from resilient.adapters.common import require_native

from functools import partial
from typing import Any, Callable

import numpy as np
from numpyro import handlers
from resilient.errors import ModelError, ResilientError, UnsupportedModelError
from resilient.model import Model, NativeModel, Site, Trace, data_arguments
from resilient.adapters.numpyro.compiled import DataArguments, NumPyroCompiledModel
from resilient.adapters.numpyro.native import _NativeFixes, _native_sites, fixed_constants, parameter_inputs, reparam_config
from resilient.adapters.numpyro.runner import CHAIN_METHODS
from resilient.adapters.numpyro.translate import _SharedHandler


class NumPyroAdapter:
    """Compiles shared-API models and native NumPyro model functions for NumPyro.

    ``chain_method``: ``"parallel"`` (pmap, one XLA device per chain), ``"vectorized"`` (vmap), or
    ``None``: parallel where ``jax.local_device_count() >= chains``, else vectorized.
    """

    name = "numpyro"
    capabilities = CAPABILITIES["numpyro"]

    def __init__(self, chain_method: str | None = None) -> None:
        if chain_method is not None and chain_method not in CHAIN_METHODS:
            raise ValueError(
                f"`chain_method` must be one of {', '.join(repr(m) for m in CHAIN_METHODS)} or None, "
                f"got {chain_method!r}."
            )
        self.chain_method = chain_method

    def compile(self, model: Any) -> NumPyroCompiledModel:
        from resilient.caches import enable_jax_cache

        enable_jax_cache()
        if isinstance(model, Model):
            compiled = self._compile_shared(model)
        elif isinstance(model, NativeModel):
            require_native(model, "numpyro")
            if not callable(model.model):
                raise UnsupportedModelError(
                    f"A native NumPyro model must be a function, got {type(model.model).__name__}."
                )
            compiled = self._compile_native(model)
        else:
            compiled = None
        if compiled is not None:
            compiled._rebuild = lambda args, kwargs: self.compile(model.with_options(args=args, kwargs=kwargs))
            return compiled
        raise UnsupportedModelError(
            f"The NumPyro backend compiles resilient.Model or NativeModel(backend='numpyro'), "
            f"got {type(model).__name__}."
        )

    def _compile_shared(self, model: Model) -> NumPyroCompiledModel:
        arguments = DataArguments(*data_arguments(model.args, model.kwargs))
        handler = _SharedHandler()
        recorded: dict[str, dict[str, Site]] = {}

        def numpyro_model(data: tuple) -> None:
            args, kwargs = arguments.join(data)
            sites = Trace(model.with_options(args=args, kwargs=kwargs), handler).run()
            recorded.setdefault("sites", sites)
            recorded["last"] = sites

        compiled = NumPyroCompiledModel(numpyro_model, float32=model.float32, chain_method=self.chain_method,
                                        name=model.name, arguments=arguments)
        compiled._site_records = lambda: recorded.get("last", {})
        with compiled.precision():
            model_trace = _run_model(compiled)
            compiled.sites = dict(recorded.get("sites", {}))
            compiled._layout(model_trace)
        return compiled

    def _compile_native(self, model: NativeModel) -> NumPyroCompiledModel:
        arguments = DataArguments(*_on_device(*data_arguments(model.args, model.kwargs), float32=model.float32))
        user_fn = model.model

        def numpyro_model(data: tuple) -> Any:
            args, kwargs = arguments.join(data)
            return user_fn(*args, **kwargs)

        fixes = _NativeFixes(numpyro_model, fix=model.fix)
        model_fn: Callable = fixes
        noncentered = frozenset(model.noncentered)
        if noncentered:
            model_fn = handlers.reparam(fixes, config=reparam_config(noncentered))
        compiled = NumPyroCompiledModel(model_fn, float32=model.float32, chain_method=self.chain_method,
                                        name=model.name, arguments=arguments, native=True)
        with compiled.precision():
            try:
                fixes.start_learning(1)
                _run_model(compiled, seed=1)
                fixes.start_learning(2)
                model_trace = _run_model(compiled)
            finally:
                fixes.start_learning(0)
            missing = sorted(n for n in noncentered if f"{n}_decentered" not in model_trace)
            if missing:
                latent = [n for n, s in model_trace.items() if s["type"] == "sample" and not s["is_observed"]]
                raise ModelError(
                    f"Cannot non-centre {', '.join(f'`{n}`' for n in missing)}: the model has no latent site of that "
                    f"name. Its latent sites are: {', '.join(latent) or 'none'}.",
                    site=missing[0],
                )
            inputs = parameter_inputs(partial(numpyro_model, arguments.values), model_trace)
            compiled.sites = _native_sites(model_trace, fixes, noncentered, inputs)
            compiled._fixed_by = fixed_constants(fixes)
            compiled._layout(model_trace)
            compiled._name_dims(model_trace)
            compiled.hidden = frozenset(f"{n}_decentered" for n in noncentered)
        return compiled


def _on_device(args: tuple, kwargs: dict, *, float32: bool) -> tuple[tuple, dict]:
    """NumPy arrays among the data arguments as fresh NumPy copies in the model's precision (float arrays in its
    float dtype). jax caches what it made of a NumPy array it has seen, and jax 0.12 shares that between
    precisions: after a raw NumPyro run in float32 (jax's default) a float64 run of the same function on the
    same NumPy data failed with "RuntimeProgramInputMismatch ... expected f64 got f32", and the raw run after
    ours the other way round (issue #16); a copy is an array no jax cache has seen. They stay NumPy arrays, as
    in a raw NumPyro run, so a model may use NumPy on its data (``np.stack`` of lagged slices in arK): jax
    arrays would be traced inside jit, and NumPy cannot take tracers."""

    def convert(value: Any) -> Any:
        if type(value) is not np.ndarray or value.dtype.kind not in "biuf":
            return value
        if value.dtype.kind == "f":
            return value.astype(np.float32 if float32 else np.float64)
        return value.copy()

    return tuple(convert(a) for a in args), {k: convert(v) for k, v in kwargs.items()}


def _run_model(compiled: NumPyroCompiledModel, seed: int = 0) -> dict:
    """The compile-time trace; a failure inside the user's model is a model error."""
    current = _SiteInProgress()
    try:
        with current:
            return compiled._trace_once(seed)
    except ResilientError:
        raise
    except Exception as error:  # noqa: BLE001 - the model function raised: report it as the model's
        import traceback

        frames = traceback.extract_tb(error.__traceback__)
        where, site = _users_line(frames)
        if site is None and current.name is not None:
            site = current.name
            where += f" while drawing site `{site}`"
        in_truncation = any(Path(frame.filename).name == "truncated.py" for frame in frames)
        raise ModelError(
            f"Running the model {compiled.name!r} under NumPyro failed{where}: {type(error).__name__}: {error}"
            + (_TRUNCATION_HINT if isinstance(error, AssertionError) and in_truncation else ""),
            site=site,
        ) from error


class _SiteInProgress(handlers.Messenger):
    """The sample site NumPyro is processing (its name from the message, so a site named by a variable, as in
    ``numpyro.sample(name, ...)``, is known too): an error raised while it is drawn or enumerated names it."""

    def __init__(self) -> None:
        super().__init__()
        self.name: str | None = None

    def process_message(self, msg: dict) -> None:
        if msg["type"] == "sample":
            self.name = msg["name"]

    def postprocess_message(self, msg: dict) -> None:
        if msg["type"] == "sample":
            self.name = None


_TRUNCATION_HINT = (". NumPyro's TruncatedDistribution takes a base distribution on the whole real line (Normal, "
                    "Cauchy, StudentT, Laplace, Logistic, SoftLaplace); truncate another family with the shared API's "
                    "Truncated, or write its bounds into the model")


def _users_line(frames: Any) -> tuple[str, str | None]:
    """Where in the user's code an error was raised (of its traceback ``frames``, the innermost outside NumPyro,
    JAX and Resilient) as `` at file:line (`source`)``, and the site name a ``numpyro.sample("name", ...)`` on
    that line gives."""
    import linecache
    import re

    skip = ("site-packages", "dist-packages", f"{Path(__file__).parents[1]}", f"{Path(__file__).parents[2]}/resilient")
    frames = [f for f in frames if not any(part in f.filename for part in skip)]
    if not frames:
        return "", None
    frame = frames[-1]
    source = (frame.line or linecache.getline(frame.filename, frame.lineno)).strip()
    match = re.search(r"""\bsample\(\s*["']([^"']+)["']""", source)
    return f" at {Path(frame.filename).name}:{frame.lineno} (`{source}`)", match.group(1) if match else None
