"""Which engine samples a model: ``engine="auto"`` picks, per model, the one expected to reach the
effective draws first among those installed; ``engine=`` / ``nuts_sampler=`` choose by hand.

An engine is what runs NUTS; a backend is the language a model is written in. NumPyro models
run on NumPyro's NUTS. PyMC models (and shared-API models sent to PyMC) run on PyMC's NUTS or on
nutpie (Rust NUTS over a Numba-compiled log density). nutpie takes about 3 s to compile a model
with Numba the first time in a process (about 1.5 s later: Numba's own machinery is then warm) and
spends no Python time per leapfrog step; PyMC's NUTS starts in about 1 s and spends about 40 us of
Python per step on top of the gradient (measured on a 2-core machine: ``benchmarks/engines.py``).
``auto`` times the gradient and compares the two expected totals. nutpie's first compilation is a
one-off cost of the process: once PyMC's NUTS has run longer than it in this process, ``auto``
stops charging it to the call at hand (ski rental: rent until the rent paid equals the price, then
buy), so a session that samples again and again moves to nutpie and pays the first compilation once.
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass
from typing import Any

from resilient.backend import CAPABILITIES, install_hint
from resilient.errors import BackendUnavailableError, ResilientError

__all__ = ["ENGINES", "MODELLING", "MASS_MATRICES", "INIT_MASS_MATRIX", "EngineChoice", "choose_engine", "modelling_backend",
           "mass_matrices", "can_sample"]

#: engine -> the backend (modelling language) whose models it runs, as each adapter declares it.
MODELLING: dict[str, str] = {name: c.language for name, c in CAPABILITIES.items()}
ENGINES = ("auto", *MODELLING)
#: the mass matrix adaptations each engine offers (its adapter's Capabilities.mass_matrices).
MASS_MATRICES: dict[str, tuple[str, ...]] = {name: c.mass_matrices for name, c in CAPABILITIES.items()}
#: pm.sample's ``init`` -> the mass matrix adaptation it asks for (its jitter: the loop picks the starts).
INIT_MASS_MATRIX = {"auto": "diag", "adapt_diag": "diag", "jitter+adapt_diag": "diag",
                    "jitter+adapt_diag_grad": "diag_grad", "adapt_full": "full", "jitter+adapt_full": "full"}

#: measured constants of the estimate (seconds; ``benchmarks/engines.py`` and its notes in the README):
#: nutpie's first Numba compilation in a process, and later ones (Numba's own machinery is warm).
NUMBA_COMPILE_SECONDS_FIRST = 3.0
NUMBA_COMPILE_SECONDS_LATER = 1.5
PYMC_START_SECONDS = 1.0
PYMC_STEP_OVERHEAD_SECONDS = 40e-6
#: leapfrog steps per draw assumed before sampling (tree depth 3).
STEPS_PER_DRAW = 8
#: gradient evaluations PyMC's NUTS spends per nutpie's for the same effective draws (nutpie's
#: gradient-based mass matrix adaptation; its paper reports 1.3x median over Stan's, diagonal).
NUTPIE_EFFICIENCY = 1.3

_nutpie_compiles = 0
#: seconds PyMC's NUTS has sampled in this process (warm-up and draws of every attempt).
_pymc_seconds = 0.0


def note_nutpie_compile() -> None:
    """Called by the nutpie adapter after a compilation: later ones in this process are cheaper."""
    global _nutpie_compiles
    _nutpie_compiles += 1


def note_run(engine: str, seconds: float) -> None:
    """Called by the loop after each attempt: the seconds ``engine`` sampled (the rent of the ski rental)."""
    global _pymc_seconds
    if engine == "pymc" and seconds > 0:
        _pymc_seconds += float(seconds)


def reset_session() -> None:
    """Forget what this process has sampled (the rent); nutpie's compilations stay counted (Numba is warm)."""
    global _pymc_seconds
    _pymc_seconds = 0.0


def modelling_backend(engine: str) -> str:
    return MODELLING.get(engine, engine)


def model_backend(engine: str, backend: str | None, native: str | None) -> str | None:
    """The backend (language) to compile a model in: a native model's own, else ``backend``, else the
    engine's default language (``None``: the shared API's default)."""
    if engine == "nutpie" and native is None and backend == "numpyro":
        raise ResilientError("engine='nutpie' and backend='numpyro' disagree for a shared-API model: nutpie runs it "
                             "through the PyMC translation, compiled with Numba (native NumPyro functions run through "
                             "nutpie's function interface). Drop one of them.")
    if native is not None or backend is not None:
        return backend
    return MODELLING[engine] if engine != "auto" else None


def mass_matrices(engine: str) -> tuple[str, ...]:
    return MASS_MATRICES.get(engine, ("diag",))


def all_mass_matrices() -> tuple[str, ...]:
    return tuple(dict.fromkeys(m for kinds in MASS_MATRICES.values() for m in kinds))


def engines_adapting(mass_matrix: str) -> tuple[str, ...]:
    return tuple(engine for engine in MODELLING if mass_matrix in mass_matrices(engine))


def can_sample(engine: str, compiled: Any) -> bool:
    """Whether ``engine`` samples ``compiled``: nutpie samples continuous latents only."""
    return not (engine == "nutpie" and getattr(compiled, "discrete_latents", ()))


@dataclass(frozen=True)
class EngineChoice:
    backend: str  # the modelling backend: "numpyro" or "pymc"
    engine: str  # what runs NUTS: "numpyro", "pymc" or "nutpie"
    reason: str


def resolve_engine(engine: str | None, nuts_sampler: str | None, backend: str | None) -> tuple[str, str | None]:
    """``(engine, backend)`` from the three ways to say it; a clear error where they disagree."""
    engine = "auto" if engine is None else engine
    if nuts_sampler is not None:
        if nuts_sampler not in MODELLING:
            raise ResilientError(f"nuts_sampler={nuts_sampler!r} is not an engine Resilient runs; it runs "
                                 f"{', '.join(repr(e) for e in MODELLING)}. Call pm.sample directly for others.")
        if engine not in ("auto", nuts_sampler):
            raise ResilientError(f"nuts_sampler={nuts_sampler!r} and engine={engine!r} disagree; give one of them.")
        engine = nuts_sampler
    if engine not in ENGINES:
        raise ResilientError(f"`engine` must be one of {', '.join(repr(e) for e in ENGINES)}, got {engine!r}.")
    if backend == "nutpie":  # a backend of its own name would only confuse: it is the PyMC language's engine
        if engine not in ("auto", "nutpie"):
            raise ResilientError(f"backend='nutpie' and engine={engine!r} disagree; give one of them.")
        engine, backend = "nutpie", None
    if backend is not None and backend not in ("numpyro", "pymc"):
        raise BackendUnavailableError(f"`backend` must be one of 'numpyro', 'pymc', got {backend!r} (the model's "
                                      "language; engines are chosen with `engine=`), or one of pm.sample's compute "
                                      "backends 'numba', 'jax', 'c'.")
    if engine == "nutpie":
        return engine, backend  # a PyMC model (shared-API ones go through PyMC), or a native NumPyro one
    if engine != "auto":
        implied = MODELLING[engine]
        if backend is not None and backend != implied:
            said = f"nuts_sampler={nuts_sampler!r}" if nuts_sampler is not None else f"engine={engine!r}"
            raise ResilientError(f"{said} and backend={backend!r} disagree: {engine} runs {implied} models. Give "
                                 "one of them.")
        backend = implied
    return engine, backend


#: the engine that runs each of pm.sample's compute backends here.
COMPUTE_BACKEND_ENGINE = {"numba": "nutpie", "jax": "nutpie", "c": "pymc"}


def engine_for_compute_backend(engine: str, compute_backend: str | None) -> str:
    """The engine once pm.sample's ``backend=`` (a compute backend) is taken into account."""
    if compute_backend is None:
        return engine
    runs = COMPUTE_BACKEND_ENGINE[compute_backend]
    if engine not in ("auto", runs):
        raise ResilientError(f"backend={compute_backend!r} (a compute backend, as pm.sample takes it) is run here by "
                             f"{runs}: PyMC's NUTS runs PyMC's default C backend, nutpie 'numba' or 'jax'. "
                             f"engine={engine!r} disagrees; drop one of them.")
    return runs


def installed(engine: str) -> bool:
    """Whether ``engine``'s package can be imported (a ``sys.modules`` entry of ``None`` hides it)."""
    try:
        return importlib.util.find_spec(engine) is not None
    except (ImportError, ValueError):
        return False


def choose_engine(engine: str, backend: str, *, native: bool, compiled_pymc: Any = None, draws: int = 1000,
                  tune: int = 1000, chains: int = 4, cores: int | None = None,
                  mass_matrix: str = "diag") -> EngineChoice:
    """The engine for a model written for ``backend``. ``engine`` is ``"auto"`` or a checked name;
    ``compiled_pymc`` (the PyMC adapter's compiled model) lets ``auto`` time the gradient; a
    ``mass_matrix`` only one PyMC engine adapts decides it."""
    if engine != "auto":
        if not installed(engine):
            raise ResilientError(f"engine={engine!r} needs the `{engine}` package, which is not installed: "
                                 f"`pip install {engine}`, or engine='auto'.")
        return EngineChoice(backend, engine, f"asked for ({engine})")
    if backend == "numpyro":
        what = "a NumPyro model" if native else "a shared-API model on the NumPyro backend"
        return EngineChoice(backend, "numpyro", f"auto: NumPyro's NUTS, the one engine here for {what}")
    if mass_matrix in mass_matrices("pymc") and mass_matrix not in mass_matrices("nutpie"):
        return EngineChoice(backend, "pymc", f"auto: PyMC's NUTS (mass_matrix={mass_matrix!r}, which only PyMC's "
                                             "NUTS adapts here)")
    if not installed("nutpie"):
        return EngineChoice(backend, "pymc", "auto: PyMC's NUTS (nutpie is not installed: "
                                                 f"`{install_hint('nutpie')}`)")
    if mass_matrix == "low_rank" and can_sample("nutpie", compiled_pymc) and tune >= 1:
        return EngineChoice(backend, "nutpie", "auto: nutpie (mass_matrix='low_rank', which only nutpie adapts)")
    if not can_sample("nutpie", compiled_pymc):
        return EngineChoice(backend, "pymc", "auto: PyMC's NUTS with its compound step (discrete latents: "
                                             f"{', '.join(compiled_pymc.discrete_latents)}; nutpie samples "
                                             "continuous ones only)")
    if tune < 1:
        return EngineChoice(backend, "pymc", "auto: PyMC's NUTS (nutpie needs at least one warm-up draw)")
    if compiled_pymc is None:
        return EngineChoice(backend, "nutpie", "auto: nutpie (no gradient timing available)")
    gradient = _gradient_seconds(compiled_pymc)
    if gradient is None:
        return EngineChoice(backend, "pymc", "auto: PyMC's NUTS (the gradient could not be timed at the initial "
                                             "point; nutpie would compile for nothing if the model fails)")
    parallel = max(1, min(chains, cores or os.cpu_count() or 1))
    steps = chains * (tune + draws) * STEPS_PER_DRAW / parallel
    if _nutpie_compiles:
        compile_seconds, compile_note = NUMBA_COMPILE_SECONDS_LATER, "later compilations in this process"
    elif _pymc_seconds >= NUMBA_COMPILE_SECONDS_FIRST:
        compile_seconds = NUMBA_COMPILE_SECONDS_LATER
        compile_note = (f"as later compilations do: PyMC's NUTS has already sampled {_pymc_seconds:.1f} s in this "
                        f"process, more than the first compilation's {NUMBA_COMPILE_SECONDS_FIRST:g} s, which is "
                        "paid once in a process that samples again (ski rental)")
    else:
        compile_seconds, compile_note = NUMBA_COMPILE_SECONDS_FIRST, "the first in this process"
    pymc_seconds = PYMC_START_SECONDS + steps * (gradient + PYMC_STEP_OVERHEAD_SECONDS)
    nutpie_seconds = compile_seconds + steps * gradient / NUTPIE_EFFICIENCY
    pick = "nutpie" if nutpie_seconds < pymc_seconds else "pymc"
    name = "nutpie" if pick == "nutpie" else "PyMC's NUTS"
    return EngineChoice(backend, pick, (
        f"auto: {name}, expected {min(pymc_seconds, nutpie_seconds):.1f} s against "
        f"{max(pymc_seconds, nutpie_seconds):.1f} s ({chains} x {tune + draws} draws at an assumed {STEPS_PER_DRAW} "
        f"steps each on {parallel} core(s); gradient {gradient * 1e6:.0f} us; nutpie compiles in about "
        f"{compile_seconds:g} s ({compile_note}) "
        f"and needs about 1/{NUTPIE_EFFICIENCY:g} of the steps, PyMC's NUTS adds about "
        f"{PYMC_STEP_OVERHEAD_SECONDS * 1e6:.0f} us a step)"))


def _gradient_seconds(compiled: Any, repeats: int = 20) -> float | None:
    """Median seconds of one log density and gradient at the backend's initial point (compiled first)."""
    import numpy as np

    try:
        x = np.asarray(compiled.initial_point("default", 0), float)
        value, _ = compiled.log_density_and_gradient(x)
    except Exception:  # noqa: BLE001 - a model that cannot be evaluated is preflight's to report
        return None
    if not np.isfinite(value):
        return None
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        compiled.log_density_and_gradient(x)
        times.append(time.perf_counter() - started)
    return float(np.median(times))
