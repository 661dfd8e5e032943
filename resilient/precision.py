"""``float32="auto"``: float32 where it is safe and faster, float64 otherwise (issue #16, item 4).

On NumPyro (the one engine here that runs a model in float32) auto takes float32 when both hold:

* the model's data are large: at least :data:`AUTO_FLOAT32_MIN_ELEMENTS` numbers in its data arguments.
  ``benchmarks/precision.py`` (a proportion_test-like logistic regression, 3 predictors, 2 chains, 300 + 300
  iterations, 2 CPU cores; two runs) measured NUTS's time in float64 over float32 at 0.95-0.97 for 1k rows
  (4k numbers), 1.06-1.17 for 10k rows (40k), 1.34-1.36 for 30k rows (120k) and 1.56-1.58 for 100k rows
  (400k): under ~100k numbers float32 saves little, not worth a second compile and a check;
* a float32 preflight is clean: at a few initial points where float64's log density and gradient are finite,
  float32's are finite too, and the two log densities agree within float32's rounding
  (:func:`float32_tolerance`).

Otherwise float64. On PyMC's NUTS and nutpie auto is float64: PyMC models here run in float64 (the PyMC
adapter does not apply float32; it lists it in ``ignored_options``), and nutpie runs a NumPyro function's log
density in x64. The choice and its reason go into the run
record and the first attempt, as the engine's do; a float32 run that diverges or cannot start gets the loop's
``float64`` remedy, as a requested float32 does.

The default (``float32=None``) is the backend's habit (issue #26, item 2), decided by :func:`default_float32`:

* a native NumPyro function runs in the precision raw NumPyro gives it: float32, jax's default, unless the user
  turned jax's x64 on (``numpyro.enable_x64()``, ``jax.config.update("jax_enable_x64", True)`` or
  ``JAX_ENABLE_X64``) when the model was given; then float64. float64 stays a checked choice: the float32
  log density is compared with float64's as ``"auto"`` compares them (at any data size), and float64 is taken
  where float32 is not finite or not within rounding of it. A model float64 cannot run (NumPyro's
  ``hmm_enum``: an int32 ``scan`` carry meets an int64 one under x64, raw or not) stays in float32, as raw
  NumPyro runs it: nothing raw NumPyro runs is refused. The loop's ``float64`` remedy applies to a float32 run;
* shared-API and PyMC models run in float64, as before (PyMC's own habit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from resilient.model import cached_model

__all__ = ["AUTO_FLOAT32_MIN_ELEMENTS", "RAW", "PrecisionChoice", "choose_precision", "data_elements", "default_float32",
           "default_form", "float32_tolerance", "x64_enabled"]

#: data size (numbers in the model's data arguments) from which ``float32="auto"`` considers float32.
AUTO_FLOAT32_MIN_ELEMENTS = 100_000

#: initial points the float32 check compares at.
CHECK_POINTS = 4

EPS32 = float(np.finfo(np.float32).eps)

#: ``float32=None`` on a native NumPyro function: the precision raw NumPyro would give it, checked (see above)
RAW = "raw"


@dataclass(frozen=True)
class PrecisionChoice:
    float32: bool
    reason: str
    model: Any  # the model to sample: the given one, or its float32 variant


def data_elements(model: Any) -> int:
    """How many numbers the model's data arguments hold (arrays of numbers, nested in tuples, lists and dicts)."""

    def count(value: Any) -> int:
        if isinstance(value, Mapping):
            return sum(count(v) for v in value.values())
        if isinstance(value, (tuple, list)):
            return sum(count(v) for v in value)
        dtype = getattr(value, "dtype", None)
        if dtype is not None and hasattr(value, "shape"):
            try:
                return int(np.prod(value.shape, dtype=np.int64)) if np.dtype(dtype).kind in "biuf" else 0
            except TypeError:  # a dtype NumPy does not know
                return 0
        return 0

    return count(tuple(getattr(model, "args", ()))) + count(dict(getattr(model, "kwargs", {}) or {}))


def float32_tolerance(value64: float, x: np.ndarray, gradient64: np.ndarray, elements: int) -> float:
    """How far float32's log density may be from float64's at ``x`` from rounding alone.

    Two parts, each float32's epsilon times a magnitude: the log density is a sum of up to ``elements`` terms,
    each computed to a few ulps (4 allowed) and summed by a reduction whose rounding error is at most
    ``ceil(log2 n)`` ulps of the sum of absolute values (pairwise summation; Higham, *Accuracy and Stability
    of Numerical Algorithms*, 4.2) -- ``|log density|`` stands for that sum, which is exact when the terms share
    a sign (a Bernoulli or Poisson likelihood) and too small otherwise, so the check errs towards float64;
    and ``x`` itself is rounded to float32, which moves the log density by up to ``sum |gradient_i x_i|`` ulps."""
    summed = (math.ceil(math.log2(max(elements, 2))) + 4) * abs(value64)
    moved = float(np.sum(np.abs(np.asarray(gradient64, float) * np.asarray(x, float))))
    return EPS32 * (summed + moved)


def x64_enabled() -> bool:
    """Whether jax's x64 is on for the caller (outside Resilient's own ``jax.enable_x64`` scopes): what raw
    NumPyro runs a model in (``numpyro.enable_x64()`` and ``JAX_ENABLE_X64`` set the same flag)."""
    import jax

    return bool(jax.config.read("jax_enable_x64"))


def _native_numpyro(model: Any) -> bool:
    """A native model of a language that runs in float32 by default (NumPyro: jax without x64)."""
    from resilient.backend import capabilities
    from resilient.model import NativeModel

    return isinstance(model, NativeModel) and capabilities(model.backend).float32_by_default


def default_float32(model: Any) -> bool | str:
    """What ``float32=None`` (the default) means for ``model``, the backend's habit: :data:`RAW` for a native
    NumPyro function (the precision raw NumPyro would give it, float32 unless jax's x64 is on; checked per run by
    :func:`choose_precision`), False (float64) for shared-API and PyMC models."""
    return RAW if _native_numpyro(model) else False


def default_form(model: Any, float32_auto: bool | str) -> tuple[Any, bool | str]:
    """``(model, mode)`` for a sampler: ``float32_auto`` is True (``float32="auto"``), False (a bool given) or
    :data:`RAW` (``float32=None``), ``model`` the resolved float64 form. Under RAW a native NumPyro function
    becomes its float32 form unless jax's x64 is on now, as raw NumPyro reads it, and keeps RAW (each run checks
    and records the choice); other models are float64 with no choice to make."""
    if float32_auto != RAW:
        return model, float32_auto
    mode = default_float32(model)
    if mode == RAW and not x64_enabled():
        model = model.with_options(float32=True)
    return model, mode


def _float64(model: Any, reason: str, mode: str = "auto") -> PrecisionChoice:
    return PrecisionChoice(False, f"{mode}: float64: {reason}", model)


def _compare(compiled64: Any, compiled32: Any, elements: int, seed: int) -> tuple[str | None, int, tuple]:
    """``(why not float32 or None, points compared, (largest difference, its tolerance))``: float32 against
    float64 at :data:`CHECK_POINTS` initial points where float64's log density and gradient are finite."""
    checked, worst = 0, (0.0, 0.0)
    for point in range(CHECK_POINTS):
        x = np.asarray(compiled64.initial_point("default", seed + 7919 * point), float)
        value64, gradient64 = compiled64.log_density_and_gradient(x)
        if not (np.isfinite(value64) and np.all(np.isfinite(gradient64))):
            continue  # not a point to compare at (preflight and the loop deal with float64's own problems)
        value32, gradient32 = compiled32.log_density_and_gradient(x)
        if not (np.isfinite(value32) and np.all(np.isfinite(gradient32))):
            return (f"the float32 log density or gradient is not finite at an initial point where float64's are "
                    f"(log density {value32} in float32, {value64:.6g} in float64)"), checked, worst
        tolerance = float32_tolerance(value64, x, gradient64, elements)
        difference = abs(float(value32) - float(value64))
        if difference > tolerance:
            return (f"the float32 log density is {difference:.3g} from float64's at an initial point "
                    f"({value64:.6g}), more than float32's rounding explains ({tolerance:.3g})"), checked, worst
        checked += 1
        worst = max(worst, (difference, tolerance))
    if not checked:
        return "no initial point with a finite float64 log density and gradient to compare at", 0, worst
    return None, checked, worst


def choose_precision(model: Any, engine: str, cache: dict, random_seed: int | None = None,
                     mode: bool | str = "auto") -> PrecisionChoice:
    """float32 or float64 for ``model`` on ``engine``, with the reason; compiles what it checks into ``cache``
    (keyed ``(engine, model)``, as the loop keys it) so the run reuses it. ``mode`` True or ``"auto"``
    (``float32="auto"``; ``model`` is the float64 form) or :data:`RAW` (the default on a native NumPyro function;
    ``model`` is in the precision :func:`default_form` gave it)."""
    if mode == RAW:
        return _choose_raw(model, engine, cache, random_seed)
    from resilient.backend import capabilities, get_adapter

    if not capabilities(engine).float32:
        native = getattr(model, "backend", None)
        if native is not None and native != capabilities(engine).language:  # a NumPyro function on nutpie
            return _float64(model, f"the {engine} engine samples in float64 (nutpie's own NUTS over the NumPyro "
                                   "log density, run in x64); only NumPyro's NUTS runs a model in float32")
        return _float64(model, "PyMC models here run in float64 (PyMC's NUTS and nutpie; the PyMC adapter does "
                               "not apply float32)")
    elements = data_elements(model)
    if elements < AUTO_FLOAT32_MIN_ELEMENTS:
        return _float64(model, f"the data hold {elements:,} numbers, under the {AUTO_FLOAT32_MIN_ELEMENTS:,} from "
                               "which float32 is faster enough to pay for its check (benchmarks/precision.py)")
    variant = cached_model(cache, engine, model.with_options(float32=True))
    try:
        compiled64 = cache.get((engine, model)) or get_adapter(engine).compile(model)
        cache[(engine, model)] = compiled64
        compiled32 = cache.get((engine, variant)) or get_adapter(engine).compile(variant)
        cache[(engine, variant)] = compiled32
    except Exception as error:  # noqa: BLE001 - preflight compiles the float64 model again and says why
        return _float64(model, f"the float32 check could not compile the model ({type(error).__name__}: {error})")
    if "float32" in getattr(compiled32, "ignored_options", ()):
        return _float64(model, "the adapter does not apply float32 to this model")
    seed = 0 if random_seed is None else int(np.atleast_1d(random_seed)[0])
    refused, checked, worst = _compare(compiled64, compiled32, elements, seed)
    if refused:
        return _float64(model, refused)
    return PrecisionChoice(True, (
        f"auto: float32: the data hold {elements:,} numbers (float32 pays from {AUTO_FLOAT32_MIN_ELEMENTS:,}) and "
        f"the float32 log density and gradient are finite and agree with float64's at {checked} initial points "
        f"(largest difference {worst[0]:.3g}, rounding tolerance {worst[1]:.3g}); float64 is the remedy if "
        "it diverges or cannot start"), variant)


def _choose_raw(model: Any, engine: str, cache: dict, random_seed: int | None) -> PrecisionChoice:
    """The default on a native NumPyro function: the precision raw NumPyro gives it (``model``'s, as
    :func:`default_form` set it), float64 where the float32 check fails and float64 runs."""
    from resilient.backend import capabilities, get_adapter

    if not model.float32:
        return _float64(model, "jax's x64 is on (numpyro.enable_x64, jax_enable_x64 or JAX_ENABLE_X64), so raw "
                               "NumPyro runs this model in float64 too; float32=True asks for float32", RAW)
    float64 = cached_model(cache, engine, model.with_options(float32=False))
    if not capabilities(engine).float32:
        return _float64(float64, f"the {engine} engine samples in float64 (nutpie's own NUTS over the NumPyro log "
                                 "density, run in x64); only NumPyro's NUTS runs a model in float32", RAW)
    habit = "raw NumPyro's precision: jax's x64 is off, as by default"
    try:
        compiled32 = cache.get((engine, model)) or get_adapter(engine).compile(model)
        cache[(engine, model)] = compiled32
    except Exception as error:  # noqa: BLE001 - float64 may run what float32 cannot; else preflight says why
        try:
            cache[(engine, float64)] = cache.get((engine, float64)) or get_adapter(engine).compile(float64)
        except Exception:  # noqa: BLE001 - neither compiles: preflight reports the float32 model's error
            return PrecisionChoice(True, f"{RAW}: float32: {habit} (it does not compile in float64 either)", model)
        return _float64(float64, f"the model does not compile in float32 ({type(error).__name__}: {error}) and "
                                 "does in float64", RAW)
    if "float32" in getattr(compiled32, "ignored_options", ()):
        return _float64(float64, "the adapter does not apply float32 to this model", RAW)
    try:
        compiled64 = cache.get((engine, float64)) or get_adapter(engine).compile(float64)
        cache[(engine, float64)] = compiled64
        seed = 0 if random_seed is None else int(np.atleast_1d(random_seed)[0])
        refused, checked, worst = _compare(compiled64, compiled32, data_elements(model), seed)
    except Exception as error:  # noqa: BLE001 - raw NumPyro runs it in float32: so do we
        return PrecisionChoice(True, (
            f"{RAW}: float32: {habit}; float64 could not be checked against it, as this model does not run in "
            f"float64 ({type(error).__name__}: {_first_line(error)}), so there is no float64 remedy either"), model)
    if refused:
        return _float64(float64, f"{refused} (float32 is raw NumPyro's precision here; float32=True forces it)", RAW)
    return PrecisionChoice(True, (
        f"{RAW}: float32: {habit}; its log density and gradient are finite and agree with float64's at {checked} "
        f"initial points (largest difference {worst[0]:.3g}, rounding tolerance {worst[1]:.3g}); float64 is the "
        "remedy if it diverges or cannot start (float32=False asks for float64)"), model)


def _first_line(error: Exception, limit: int = 300) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text[:limit]
