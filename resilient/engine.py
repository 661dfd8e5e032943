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
A default-size run of a ``pm.Model`` in a process that has not bought it yet goes to NumPyro's NUTS over PyMC's
JAX translation instead (``Capabilities.auto_cold``: XLA compiles faster than Numba, the fastest cold start
measured), whose seconds count as the rent.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from resilient.backend import ADAPTERS, CAPABILITIES, LANGUAGE_NAMES, LANGUAGES, capabilities, install_hint
from resilient.errors import BackendUnavailableError, ResilientError

__all__ = ["ENGINES", "MODELLING", "MASS_MATRICES", "INIT_MASS_MATRIX", "EngineChoice", "choose_engine", "modelling_backend",
           "mass_matrices", "can_sample", "EngineHistory", "HISTORY"]

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
#: the most iterations, all chains together, of a run auto starts on the cold-start engine (``Capabilities.auto_cold``):
#: twice the 4 x (1000 + 1000) measured in ``benchmarks/engines.py``, where its cold call beat nutpie's by the
#: sampling time of 3-40 such runs (nutpie samples faster once compiled, so a long run goes to the ski rental).
COLD_START_ITERATIONS = 16_000
#: the fewest iterations, all chains together, of a run auto starts on the cold-start engine when nothing of the
#: model is compiled for it yet: a default-size run (4 x (1000 + 1000)). Below it the measure depends on the
#: caches: a 2-parameter model, 2 x 400 iterations, took PyMC's NUTS 2.4 s and NumPyro's 4.4 s with PyTensor's
#: compilation cache warm, 8.8 s and 6.8 s with every cache empty (2-core machine, whole call); short runs stay
#: on the ski rental's choice, and so do the suite's short test runs.
COLD_START_MIN_ITERATIONS = 8_000
#: leapfrog steps per draw assumed before sampling (tree depth 3).
STEPS_PER_DRAW = 8
#: gradient evaluations PyMC's NUTS spends per nutpie's for the same effective draws (nutpie's
#: gradient-based mass matrix adaptation; its paper reports 1.3x median over Stan's, diagonal).
NUTPIE_EFFICIENCY = 1.3


@dataclass
class EngineHistory:
    """What this process has done with its engines, the state of ``engine="auto"``'s ski rental.

    ``compiles``: compilations per engine whose compilation has a one-off cost per process
    (``Capabilities.one_off_compile``: nutpie's Numba; later ones are cheaper); ``rent_seconds``: the seconds
    engines that are weighed against such an engine (``Capabilities.weighed_against_nutpie``: PyMC's NUTS)
    have sampled, warm-up and draws of every attempt. The engine registry owns one, :data:`HISTORY`, which
    the loop and the adapters report to and :func:`choose_engine` reads; pass another to decide apart from it.
    """

    compiles: dict[str, int] = field(default_factory=dict)
    rent_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def note_compile(self, engine: str) -> None:
        """``engine`` compiled a model in this process (its one-off cost, if it has one, is paid)."""
        with self._lock:
            self.compiles[engine] = self.compiles.get(engine, 0) + 1

    def note_run(self, engine: str, seconds: float) -> None:
        """``engine`` sampled for ``seconds`` (one attempt): the rent, when it is an engine that pays it."""
        if seconds > 0 and engine in CAPABILITIES and (capabilities(engine).weighed_against_nutpie
                                                     or capabilities(engine).auto_cold):
            with self._lock:
                self.rent_seconds += float(seconds)

    def compiled(self, engine: str) -> int:
        """How many times ``engine`` has compiled in this process."""
        return self.compiles.get(engine, 0)

    def reset_session(self) -> None:
        """Forget the rent; the compilations stay counted (Numba stays warm)."""
        with self._lock:
            self.rent_seconds = 0.0


#: this process's engine history (see :class:`EngineHistory`).
HISTORY = EngineHistory()


def note_run(engine: str, seconds: float) -> None:
    """Called by the loop after each attempt: ``HISTORY.note_run(engine, seconds)``."""
    HISTORY.note_run(engine, seconds)


def reset_session() -> None:
    """``HISTORY.reset_session()``: forget what this process has sampled (the rent)."""
    HISTORY.reset_session()


def modelling_backend(engine: str) -> str:
    return MODELLING.get(engine, engine)


def model_backend(engine: str, backend: str | None, native: str | None) -> str | None:
    """The backend (language) to compile a model in: a native model's own, else ``backend``, else the
    engine's default language (``None``: the shared API's default)."""
    if engine in CAPABILITIES and native is None and backend is not None and backend in capabilities(engine).foreign_native:
        language = capabilities(engine).language
        through = engine_for_language(engine, backend)
        how = (f"{engine}'s function interface" if through == engine else
               f"engine={through!r}, {capabilities(through).title}, which runs shared-API models too")
        raise ResilientError(f"engine={engine!r} and backend={backend!r} disagree for a shared-API model: {engine} runs "
                             f"it through the {LANGUAGE_NAMES.get(language, language)} translation"
                             + (", compiled with Numba" if capabilities(engine).one_off_compile else "")
                             + f" (native {LANGUAGE_NAMES.get(backend, backend)} models run through {how}). "
                             "Drop one of them.")
    if native is not None or backend is not None:
        return backend
    return MODELLING.get(engine)


def engine_for_language(engine: str, language: str) -> str:
    """The registered engine that runs ``engine``'s NUTS on a model of ``language``: ``engine`` itself where it runs
    that language (its own, or a foreign one natively: nutpie over a NumPyro function), else the engine declared as
    its sampler for that language (``Capabilities.nuts_of``: engine="numpyro" on a pm.Model is pymc_numpyro, as
    pm.sample(nuts_sampler="numpyro") runs it); ``engine`` where none is declared (the caller refuses it)."""
    if engine not in CAPABILITIES or capabilities(engine).language == language:
        return engine
    declared = next((name for name, c in CAPABILITIES.items() if c.language == language and c.nuts_of == engine), None)
    if declared is not None:
        return declared
    return engine


def mass_matrices(engine: str) -> tuple[str, ...]:
    return MASS_MATRICES.get(engine, ("diag",))


def all_mass_matrices() -> tuple[str, ...]:
    return tuple(dict.fromkeys(m for kinds in MASS_MATRICES.values() for m in kinds))


def engines_adapting(mass_matrix: str) -> tuple[str, ...]:
    """The engines, by the name a user gives them, that adapt ``mass_matrix`` (an engine reached through another's
    name, ``Capabilities.nuts_of``, is that name's: engine='numpyro' on a pm.Model)."""
    return tuple(engine for engine in MODELLING
                 if mass_matrix in mass_matrices(engine) and not capabilities(engine).nuts_of)


def can_sample(engine: str, compiled: Any) -> bool:
    """Whether ``engine`` samples ``compiled``: an engine for continuous latents only (nutpie) does not sample a
    model with discrete ones."""
    return not (engine in CAPABILITIES and capabilities(engine).continuous_only
                and getattr(compiled, "discrete_latents", ()))


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
    if backend in MODELLING and backend not in LANGUAGES:  # an engine's name given as the backend (nutpie): it is
        # an engine of a language, not a language
        if engine not in ("auto", backend):
            raise ResilientError(f"backend={backend!r} and engine={engine!r} disagree; give one of them.")
        engine, backend = backend, None
    if backend is not None and backend not in LANGUAGES:
        raise BackendUnavailableError(f"`backend` must be one of {', '.join(repr(b) for b in LANGUAGES)}, got "
                                      f"{backend!r} (the model's language; engines are chosen with `engine=`), or one "
                                      "of pm.sample's compute backends "
                                      f"{', '.join(repr(b) for b in COMPUTE_BACKEND_ENGINE)}.")
    if engine in MODELLING and capabilities(engine).foreign_native:
        return engine, backend  # its language's models, or a native model of another language it runs (nutpie)
    if engine != "auto":
        implied = MODELLING[engine]
        if backend is not None and backend != implied:
            said = f"nuts_sampler={nuts_sampler!r}" if nuts_sampler is not None else f"engine={engine!r}"
            raise ResilientError(f"{said} and backend={backend!r} disagree: {engine} runs {implied} models. Give "
                                 "one of them.")
        backend = implied
    return engine, backend


#: the engine that runs each of pm.sample's compute backends here (each adapter's Capabilities.compute_backends).
COMPUTE_BACKEND_ENGINE = {backend: name for name, c in reversed(CAPABILITIES.items()) for backend in c.compute_backends}


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
                  mass_matrix: str = "diag", history: EngineHistory | None = None,
                  rival_compiled: bool = False, cold_compiled: bool = False, cold: bool = True) -> EngineChoice:
    """The engine for a model written for ``backend``. ``engine`` is ``"auto"`` or a checked name;
    ``compiled_pymc`` (the language's compiled model) lets ``auto`` time the gradient; a ``mass_matrix`` only
    one of the language's engines adapts decides it. ``history`` (default: the process's :data:`HISTORY`) is
    the ski rental's state: what the process has compiled and sampled; ``rival_compiled``: this model is already
    compiled for the rival engine (nutpie) in this process, so choosing it costs no compilation;
    ``cold_compiled``: the same for the language's cold-start engine (``Capabilities.auto_cold``); ``cold=False``
    leaves that engine out (its compilation failed)."""
    history = HISTORY if history is None else history
    if engine != "auto":
        runs = engine_for_language(engine, backend)
        package = ADAPTERS[runs][2] if runs in ADAPTERS else runs
        if not installed(package):
            raise ResilientError(f"engine={engine!r} needs the `{package}` package, which is not installed: "
                                 f"`{install_hint(package)}`, or engine='auto'.")
        if runs != engine:
            language = LANGUAGE_NAMES.get(backend, backend)
            return EngineChoice(backend, runs, f"asked for ({engine}): {capabilities(runs).title}, as pm.sample("
                                               f"nuts_sampler={engine!r}) runs a {language} model")
        return EngineChoice(backend, engine, f"asked for ({engine})")
    own = capabilities(backend)  # a language's own engine has the language's name
    # the rival auto weighs by ski rental: the language's engine with a one-off compilation (nutpie)
    rival = next((name for name, c in CAPABILITIES.items()
                  if c.language == backend and name != backend and c.one_off_compile), None)
    if not own.weighed_against_nutpie or rival is None:
        language = LANGUAGE_NAMES.get(backend, backend)
        what = f"a {language} model" if native else f"a shared-API model on the {language} backend"
        return EngineChoice(backend, backend, f"auto: {own.title}, the one engine here for {what}")
    other = capabilities(rival)
    if cold:
        choice = _cold_start(backend, compiled_pymc, mass_matrix, history, rival, rival_compiled, cold_compiled,
                             chains * (tune + draws))
        if choice is not None:
            return choice
    if mass_matrix in own.mass_matrices and mass_matrix not in other.mass_matrices:
        return EngineChoice(backend, backend, f"auto: {own.title} (mass_matrix={mass_matrix!r}, which only "
                                              f"{own.title} adapts here)")
    if not installed(ADAPTERS[rival][2]):
        return EngineChoice(backend, backend, f"auto: {own.title} ({rival} is not installed: "
                                              f"`{install_hint(ADAPTERS[rival][2])}`)")
    if mass_matrix in other.mass_matrices and mass_matrix not in own.mass_matrices and can_sample(rival, compiled_pymc) \
            and tune >= 1:
        return EngineChoice(backend, rival, f"auto: {other.title} (mass_matrix={mass_matrix!r}, which only "
                                            f"{other.title} adapts)")
    if not can_sample(rival, compiled_pymc):
        return EngineChoice(backend, backend, f"auto: {own.title} with its compound step (discrete latents: "
                                              f"{', '.join(compiled_pymc.discrete_latents)}; {other.title} samples "
                                              "continuous ones only)")
    if tune < 1:
        return EngineChoice(backend, backend, f"auto: {own.title} ({other.title} needs at least one warm-up draw)")
    disconnected = tuple(getattr(compiled_pymc, "disconnected_latents", ()) or ())
    if disconnected:
        return EngineChoice(backend, backend, f"auto: {own.title} (the log density does not depend on "
                                              f"{', '.join(disconnected)}: {other.title} cannot compile it)")
    if compiled_pymc is None:
        return EngineChoice(backend, rival, f"auto: {other.title} (no gradient timing available)")
    parallel = max(1, min(chains, cores or os.cpu_count() or 1))  # nutpie's threads
    processes = compiled_pymc.processes(chains, cores) if hasattr(compiled_pymc, "processes") else parallel
    steps = chains * (tune + draws) * STEPS_PER_DRAW / parallel
    own_steps = chains * (tune + draws) * STEPS_PER_DRAW / processes
    rent = history.rent_seconds
    if rival_compiled:
        compile_seconds, compile_note = 0.0, "already compiled for this model in this process"
    elif history.compiled(rival):
        compile_seconds, compile_note = NUMBA_COMPILE_SECONDS_LATER, "later compilations in this process"
    elif rent >= NUMBA_COMPILE_SECONDS_FIRST:
        compile_seconds = NUMBA_COMPILE_SECONDS_LATER
        compile_note = (f"as later compilations do: {own.title} has already sampled {rent:.1f} s in this "
                        f"process, more than the first compilation's {NUMBA_COMPILE_SECONDS_FIRST:g} s, which is "
                        "paid once in a process that samples again (ski rental)")
    else:
        compile_seconds, compile_note = NUMBA_COMPILE_SECONDS_FIRST, "the first in this process"
    # PyMC's expected time minus nutpie's is fixed + gradient * slope: where both are positive nutpie is expected to
    # be faster whatever the gradient costs, and timing it would only compile PyMC's log density for nothing
    fixed = PYMC_START_SECONDS + own_steps * PYMC_STEP_OVERHEAD_SECONDS - compile_seconds
    slope = own_steps - steps / NUTPIE_EFFICIENCY
    assumed = (f"{chains} x {tune + draws} draws at an assumed {STEPS_PER_DRAW} steps each, {own.title} {processes} "
               f"chain(s) at a time, {other.title} {parallel}")
    if fixed > 0 and slope >= 0:
        return EngineChoice(backend, rival, (
            f"auto: {other.title}, expected faster whatever the gradient costs ({assumed}; "
            f"{own.title} adds about {PYMC_STEP_OVERHEAD_SECONDS * 1e6:.0f} us a step, "
            f"{own_steps * PYMC_STEP_OVERHEAD_SECONDS:.1f} s here, more than {other.title}'s compilation of about "
            f"{compile_seconds:g} s ({compile_note}), and needs {own_steps / (steps / NUTPIE_EFFICIENCY):.2g} x its "
            "gradients; the gradient was not timed)"))
    gradient = _gradient_seconds(compiled_pymc)
    if gradient is None:
        return EngineChoice(backend, backend, f"auto: {own.title} (the gradient could not be timed at the initial "
                                              f"point; {other.title} would compile for nothing if the model fails)")
    own_seconds = PYMC_START_SECONDS + own_steps * (gradient + PYMC_STEP_OVERHEAD_SECONDS)
    rival_seconds = compile_seconds + steps * gradient / NUTPIE_EFFICIENCY
    pick = rival if rival_seconds < own_seconds else backend
    name = capabilities(pick).title
    return EngineChoice(backend, pick, (
        f"auto: {name}, expected {min(own_seconds, rival_seconds):.1f} s against "
        f"{max(own_seconds, rival_seconds):.1f} s ({assumed}; gradient {gradient * 1e6:.0f} us; {other.title} "
        f"compiles in about {compile_seconds:g} s ({compile_note}) "
        f"and needs about 1/{NUTPIE_EFFICIENCY:g} of the steps, {own.title} adds about "
        f"{PYMC_STEP_OVERHEAD_SECONDS * 1e6:.0f} us a step)"))


def _cold_start(backend: str, compiled: Any, mass_matrix: str, history: EngineHistory, rival: str,
                rival_compiled: bool, cold_compiled: bool, iterations: int) -> EngineChoice | None:
    """The language's cold-start engine (``Capabilities.auto_cold``: NumPyro's NUTS over PyMC's JAX translation)
    where it can run this model, the run is of default size and the process has not bought the rival's one-off
    compilation (a longer run buys it); ``None`` to leave the choice to the ski rental. On the reference posteriors
    (``benchmarks/engines.py``, 4 x (1000 + 1000), empty caches, 2026-12-07, medians of 3) auto's first call on it took
    0.73-1.27 x the time of the fastest raw side to 1,000 effective draws (PyMC's NUTS, nutpie, NumPyro on the model written
    for it). Its seconds are rent, but a later model of default size stays on it: JAX is warm in the process by
    then, and nutpie's first compilation is not (on P1, rebuilt in a way the kept samplers do not recognise, the
    second call on nutpie took 5.3 x the fastest raw re-run)."""
    name = next((n for n, c in CAPABILITIES.items() if c.language == backend and c.auto_cold), None)
    if name is None or compiled is None or rival_compiled or not installed(ADAPTERS[name][2]):
        return None
    title = capabilities(name).title
    if not can_sample(name, compiled) or mass_matrix not in capabilities(name).mass_matrices \
            or getattr(compiled, "disconnected_latents", ()) or iterations > COLD_START_ITERATIONS:
        return None
    if cold_compiled:
        return EngineChoice(backend, name, f"auto: {title} (this model is already prepared for it in this process)")
    if iterations < COLD_START_MIN_ITERATIONS:
        return None
    if history.compiled(rival):
        return None
    rival_title = capabilities(rival).title
    return EngineChoice(backend, name, (
        f"auto: {title}, the fastest cold start measured for a PyMC model: {rival_title}'s first Numba "
        f"compilation costs more than it saves on a run of {iterations} iterations ({COLD_START_MIN_ITERATIONS} to "
        f"{COLD_START_ITERATIONS}); once this process has compiled for {rival_title}, auto weighs it (ski rental)"))


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
