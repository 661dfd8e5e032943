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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

__all__ = ["AUTO_FLOAT32_MIN_ELEMENTS", "PrecisionChoice", "choose_precision", "data_elements", "float32_tolerance"]

#: data size (numbers in the model's data arguments) from which ``float32="auto"`` considers float32.
AUTO_FLOAT32_MIN_ELEMENTS = 100_000

#: initial points the float32 check compares at.
CHECK_POINTS = 4

EPS32 = float(np.finfo(np.float32).eps)


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


def _float64(model: Any, reason: str) -> PrecisionChoice:
    return PrecisionChoice(False, f"auto: float64: {reason}", model)


def choose_precision(model: Any, engine: str, cache: dict, random_seed: int | None = None) -> PrecisionChoice:
    """float32 or float64 for ``model`` (its float64 form) on ``engine``, with the reason; compiles what it
    checks into ``cache`` (keyed ``(engine, model)``, as the loop keys it) so the run reuses it."""
    from resilient.backend import get_adapter

    if engine != "numpyro":
        if getattr(model, "backend", None) == "numpyro":  # a NumPyro function on nutpie
            return _float64(model, f"the {engine} engine samples in float64 (nutpie's own NUTS over the NumPyro "
                                   "log density, run in x64); only NumPyro's NUTS runs a model in float32")
        return _float64(model, "PyMC models here run in float64 (PyMC's NUTS and nutpie; the PyMC adapter does "
                               "not apply float32)")
    elements = data_elements(model)
    if elements < AUTO_FLOAT32_MIN_ELEMENTS:
        return _float64(model, f"the data hold {elements:,} numbers, under the {AUTO_FLOAT32_MIN_ELEMENTS:,} from "
                               "which float32 is faster enough to pay for its check (benchmarks/precision.py)")
    variant = model.with_options(float32=True)
    try:
        compiled64 = cache.get((engine, model)) or get_adapter(engine).compile(model)
        cache[(engine, model)] = compiled64
        compiled32 = get_adapter(engine).compile(variant)
        cache[(engine, variant)] = compiled32
    except Exception as error:  # noqa: BLE001 - preflight compiles the float64 model again and says why
        return _float64(model, f"the float32 check could not compile the model ({type(error).__name__}: {error})")
    if "float32" in getattr(compiled32, "ignored_options", ()):
        return _float64(model, "the adapter does not apply float32 to this model")
    seed = 0 if random_seed is None else int(np.atleast_1d(random_seed)[0])
    checked, worst = 0, (0.0, 0.0)
    for point in range(CHECK_POINTS):
        x = np.asarray(compiled64.initial_point("default", seed + 7919 * point), float)
        value64, gradient64 = compiled64.log_density_and_gradient(x)
        if not (np.isfinite(value64) and np.all(np.isfinite(gradient64))):
            continue  # not a point to compare at (preflight and the loop deal with float64's own problems)
        value32, gradient32 = compiled32.log_density_and_gradient(x)
        if not (np.isfinite(value32) and np.all(np.isfinite(gradient32))):
            return _float64(model, f"the float32 log density or gradient is not finite at an initial point where "
                                   f"float64's are (log density {value32} in float32, {value64:.6g} in float64)")
        tolerance = float32_tolerance(value64, x, gradient64, elements)
        difference = abs(float(value32) - float(value64))
        if difference > tolerance:
            return _float64(model, f"the float32 log density is {difference:.3g} from float64's at an initial point "
                                   f"({value64:.6g}), more than float32's rounding explains ({tolerance:.3g})")
        checked += 1
        worst = max(worst, (difference, tolerance))
    if not checked:
        return _float64(model, "no initial point with a finite float64 log density and gradient to compare at")
    return PrecisionChoice(True, (
        f"auto: float32: the data hold {elements:,} numbers (float32 pays from {AUTO_FLOAT32_MIN_ELEMENTS:,}) and "
        f"the float32 log density and gradient are finite and agree with float64's at {checked} initial points "
        f"(largest difference {worst[0]:.3g}, rounding tolerance {worst[1]:.3g}); float64 is the remedy if "
        "it diverges or cannot start"), variant)
