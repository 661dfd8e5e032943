"""Warm start: a model sampled again starts from the adaptation its last accepted run found, and checks it.

The second call of ``resilient.compile(model).sample(...)`` (or any call given ``warm_start=<a result>``)
does not pay the whole warm-up again. Its chains start at the saved positions, with the saved step size
and mass matrix, and adapt only the step size for a short window (:data:`WINDOW` iterations instead of
``tune``). Before any draw is handed on, each chain's window is checked (:func:`check_window`): its
acceptance rate against ``target_accept``, the step size it settled on against the saved one, and its
divergences. A window that fails the check stops the run, and the attempt warms up in full as if no state
had been given; the attempt log says which happened and what the check found (the attempt's
``settings["warm_start"]``). Nothing from a window that was not checked reaches the result.

What each engine takes back (its ``run_nuts`` calls :func:`run_warm` when ``NUTSSettings.warm_state`` is set):

- NumPyro: the step size and the inverse mass matrix (``NUTS(step_size=..., inverse_mass_matrix=...)``); the
  window adapts the step size only: re-estimating a mass matrix from 150 iterations would replace a good one
  with a worse one. A state of other data (:attr:`WarmStart.reestimate`: ``sample_many``'s and ``sbc``'s next
  data set, a result of other data given as ``warm_start``) gets a longer window (:data:`REESTIMATE_WINDOW`)
  that estimates the mass matrix again after an opening buffer, as the schedule's last slow window does.
- PyMC's NUTS: the step size and mass matrix, set on the NUTS step (a fixed ``QuadPotentialDiag`` /
  ``QuadPotentialFull`` and dual averaging restarted from the saved step size), as a resume sets them. A
  state from other data is not used (the mass matrix would stay fixed at the other data's).
- nutpie: the positions and the step size (``initial_step``, the median over chains); nutpie takes no mass
  matrix, so it re-estimates one in the window (its own schedule, scaled to the window).

Dependency rule: NumPy only (adapters call this module; it imports none of them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import numpy as np

from resilient.backend import Chunk, NUTSRun, NUTSSettings
from resilient.errors import SamplerError

__all__ = ["WINDOW", "REESTIMATE_WINDOW", "OPENING", "STEP_SIZE_FACTOR", "ACCEPTANCE_TOLERANCE",
           "MAX_DIVERGENCE_RATE", "WarmStart", "WarmStartRefused", "Verdict", "check_window", "run_warm",
           "structure_differences", "from_result", "describe"]

#: iterations of step-size adaptation a warm-started run makes instead of ``tune``. Dual averaging from a
#: step size that already fits settles within a few dozen iterations; 150 leaves it two restarts of the
#: usual schedule (NumPyro's and Stan's windows: a 75-iteration opening buffer, then 25 and 50 iterations)
#: and a second half long enough (75 iterations per chain) to measure the acceptance rate to about +-0.05.
#: It is 15% of the default warm-up of 1000, so a warm call's warm-up costs about a seventh of a cold one's.
WINDOW = 150

#: a warm start from a state of other data (:attr:`WarmStart.reestimate`) re-estimates the mass matrix:
#: :data:`OPENING` iterations at the saved adaptation carry the chains from the other data's posterior to this
#: one's, a slow window collects the draws the mass matrix is estimated from (the schedule's last, which NumPyro
#: ends with its terminal 50-iteration step-size window). Kept at the other data's (the 150-iteration window),
#: 36 of 72 warm SBC fits of a normal model (N=20, 2 chains x 500 + 500, three seeds) needed the loop's second
#: attempt (R-hat over 1.01) against 6 of 72 cold; re-estimated after the opening, 5 of 72 (2026-12-06). Without
#: the opening, the chains' way from the other posterior counted in the estimate and the step size fell 3-40 fold.
REESTIMATE_WINDOW = 250

#: the first iterations of a :data:`REESTIMATE_WINDOW`, left out of the mass matrix's estimate.
OPENING = 50

#: each chain's final step size after the window may differ from the saved one (the median over the saved chains:
#: one chain's own is a noisy average, eight schools' four ranged 0.32-0.55 in one run) by at most this factor
#: either way. Two cold runs of one model settle within about 30% of each other; a step size that had to halve
#: or double to keep the target acceptance means the saved mass matrix (or point) no longer fits the posterior.
STEP_SIZE_FACTOR = 2.0

#: the mean acceptance over the window's second half (after dual averaging has moved) may differ from
#: ``target_accept`` by at most this much; dual averaging from a fitting step size holds it within about 0.05.
ACCEPTANCE_TOLERANCE = 0.15

#: divergent iterations allowed in a chain's window's second half, as a fraction of its iterations. Dual averaging
#: keeps trying larger steps to the end of any warm-up, so warm-up diverges more than sampling (eight schools,
#: non-centred: 1.5% of a cold run's last 250 warm-up iterations, none of its draws); a saved mass matrix that no
#: longer fits diverges far more. The first half is not counted: its first proposals are ten times the saved step.
MAX_DIVERGENCE_RATE = 0.1


class WarmStartRefused(Exception):
    """Raised by an engine, before it samples anything, when it cannot start from the saved adaptation (PyMC's
    compound step keeps none); the message says why, and the attempt warms up in full."""


@dataclass(frozen=True)
class Verdict:
    """What the check of a warm start's window found, one entry per chain where it ran."""

    passed: bool
    found: str  #: in words: what passed, or what failed and why
    acceptance: tuple[float, ...] = ()
    step_size: tuple[float, ...] = ()
    saved_step_size: float = float("nan")  #: the median over the saved chains' step sizes
    divergences: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "found": self.found, "acceptance": [round(a, 4) for a in self.acceptance],
                "step_size": [float(f"{s:.6g}") for s in self.step_size],
                "saved_step_size": float(f"{self.saved_step_size:.6g}"),
                "divergences_in_window": int(self.divergences)}


@dataclass(frozen=True, eq=False)
class WarmStart:
    """A saved adaptation (a :class:`~resilient.sampler_state.SamplerState`) offered to a run's first attempt.

    ``log`` is written by :func:`run_warm`, once per attempt that met this record (keyed by the attempt's
    random seed), so the caller can put what happened in the attempt log. The first attempt uses the state; a
    later one (a remedy's) only where the attempt before it used it and passed its check, and the remedy only
    raised ``target_accept`` (the same draws and tune: the loop's smaller-step retry, whose geometry is the same, and
    whose window adapts the step size to the new target); any other remedy warms up in full.
    """

    state: Any
    source: str  #: where the state came from, in words ("the last accepted call of this compiled model")
    window: int = WINDOW
    log: list = field(default_factory=list)
    #: the state may be of other data (a result given whose data digests differ: ``sample_many``'s and ``sbc``'s
    #: next data set): the window estimates the mass matrix again (:data:`REESTIMATE_WINDOW`), not keeping the saved one
    reestimate: bool = False

    @classmethod
    def of_other_data(cls, state: Any, source: str) -> "WarmStart":
        """A warm start from a state whose data may differ from this run's: its mass matrix is estimated again."""
        return cls(state, source, window=REESTIMATE_WINDOW, reestimate=True)

    def note(self, seed: Any, entry: Mapping[str, Any]) -> None:
        self.log.append({"random_seed": seed, **entry})


def describe(entry: Mapping[str, Any]) -> str:
    """One attempt's warm start (a :attr:`WarmStart.log` entry) in the words of its attempt log message."""
    if entry.get("used") and entry.get("passed") is False:
        return f"warm start: {entry.get('found')}; fell back to {entry.get('fallback')}"
    if entry.get("used"):
        return f"warm start from {entry.get('source')}: {entry.get('window')}-iteration window; {entry.get('found')}"
    return f"no warm start: {entry.get('why')}"


def structure_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """How the model of ``current`` (a :func:`~resilient.sampler_state.model_fingerprint`) differs in structure
    from the saved one's: the model, its latents and their sizes, its sites, its precision and its non-centred
    sites. Data values are not compared: the next data set of the same shapes is what a warm start is for."""
    from resilient.sampler_state import fingerprint_differences

    found = fingerprint_differences({k: v for k, v in saved.items() if k != "data"},
                                    {k: v for k, v in current.items() if k != "data"})
    old, new = sorted(saved.get("noncentered") or ()), sorted(current.get("noncentered") or ())
    if old != new:
        found.append(f"the model samples {', '.join(new) or 'no site'} non-centred, the saved run "
                     f"{', '.join(old) or 'none'}")
    return found


def from_result(data: Any) -> Any:
    """The :class:`~resilient.sampler_state.SamplerState` in a result's ``sampler_state`` group."""
    from resilient.errors import ResilientError
    from resilient.sampler_state import SamplerState

    children = getattr(data, "children", None)
    if children is None or "sampler_state" not in children:
        raise ResilientError("`warm_start` must be 'auto', False or a result of resilient.sample with a "
                             f"sampler_state group, got {type(data).__name__}"
                             + (" without one" if children is not None else "") + ".")
    return SamplerState.from_dataset(data["sampler_state"].to_dataset())


def settings_mismatch(state: Any, engine: str, chains: int, mass_matrix: str, tune: int, window: int = WINDOW
                      ) -> str | None:
    """Why a saved state cannot start a run of these settings (another engine, other chains, another kind of mass
    matrix, a warm-up no longer than the window), or None: checked when a call plans its warm start and again
    for each attempt (a remedy may change them)."""
    if state.engine != engine:
        return f"the saved state is {state.engine}'s and this run's engine is {engine}"
    if len(state.chains) != int(chains):
        return f"the saved state has {len(state.chains)} chains and this run {chains}"
    if state.mass_matrix != mass_matrix:
        return f"the saved mass matrix is {state.mass_matrix!r} and this run adapts {mass_matrix!r}"
    if int(tune) <= window:
        return f"tune={tune} is no longer than the warm-start window ({window} iterations)"
    return None


def _unusable(warm: WarmStart, engine: str, compiled: Any, settings: NUTSSettings) -> str | None:
    """Why ``warm``'s state cannot start this run, or None."""
    from resilient.sampler_state import cached_fingerprint

    state = warm.state
    if settings.resume_state is not None:  # more_draws, or a resumed run: the chains go on with their own adaptation
        return "the attempt continues its own chains, with their adaptation"
    if warm.log:
        last = warm.log[-1]  # the attempt before this one: warm, checked, with these draws and tune, a lower target
        retry = (last.get("passed") and last.get("draws") == int(settings.draws)
                 and last.get("tune_asked") == int(settings.tune)
                 and float(settings.target_accept) > float(last.get("target_accept", 1.0)))
        if not retry:
            return ("only a call's first attempt starts warm, and a retry that only raises target_accept after a "
                    "warm first attempt; this remedy's attempt warms up in full")
    mismatch = settings_mismatch(state, engine, settings.chains, settings.mass_matrix, settings.tune, warm.window)
    if mismatch is not None:
        return mismatch
    differences = structure_differences(state.fingerprint, cached_fingerprint(compiled))
    if differences:
        return "the saved state is of another model: " + "; ".join(differences)
    if np.shape(state.positions) != (int(settings.chains), int(compiled.dimension)):
        return (f"the saved positions have shape {np.shape(state.positions)}, this model needs "
                f"({settings.chains}, {compiled.dimension})")
    steps = np.asarray(state.step_size, np.float64)
    if not (np.all(np.isfinite(steps)) and np.all(steps > 0) and np.all(np.isfinite(state.positions))):
        return "the saved step sizes or positions are not finite"
    return None


def check_window(stats: Mapping[str, np.ndarray], final_step: float, saved_step: float,
                 target_accept: float, reestimated: bool = False) -> tuple[bool, str, float, int]:
    """One chain's window: ``(passed, why, acceptance, divergences)``. ``stats`` are the window's per-iteration
    ``acceptance_rate`` and ``diverging``; ``final_step`` the step size it settled on; ``saved_step`` the saved
    one. See :data:`STEP_SIZE_FACTOR`, :data:`ACCEPTANCE_TOLERANCE` and :data:`MAX_DIVERGENCE_RATE`.

    ``reestimated``: the window estimated the mass matrix again (a state of other data). A step size that grew
    then says this data's posterior is easier in the new scaling, not that the adaptation no longer fits; only
    one that shrank past the factor fails."""
    accept = np.asarray(stats.get("acceptance_rate", ()), np.float64)
    diverging = np.asarray(stats.get("diverging", ()), bool)
    half = accept.size // 2
    late_accept = accept[half:]
    late_accept = late_accept[np.isfinite(late_accept)]
    acceptance = float(np.mean(late_accept)) if late_accept.size else float("nan")
    divergent = int(np.sum(diverging[diverging.size // 2:]))
    problems = []
    ratio = final_step / saved_step if saved_step > 0 else float("inf")
    if not np.isfinite(ratio) or not 1 / STEP_SIZE_FACTOR <= ratio <= (np.inf if reestimated else STEP_SIZE_FACTOR):
        problems.append(f"the step size moved from {saved_step:.4g} to {final_step:.4g} (x{ratio:.3g}, more than "
                        f"a factor {STEP_SIZE_FACTOR:g})")
    if not np.isfinite(acceptance) or abs(acceptance - target_accept) > ACCEPTANCE_TOLERANCE:
        problems.append(f"the acceptance rate was {acceptance:.2f} against a target of {target_accept:g}")
    if divergent > MAX_DIVERGENCE_RATE * max(1, diverging.size - diverging.size // 2):
        problems.append(f"{divergent} of its last {diverging.size - diverging.size // 2} iterations diverged")
    return not problems, "; ".join(problems), acceptance, divergent


class _Gate:
    """``on_chunk`` for a warm-started run: holds every chunk until each chain's window has been checked (at
    the chain's first draw after it), then hands them on in order, and everything after them; on a failed
    check it stops the run and hands on nothing."""

    def __init__(self, warm: WarmStart, settings: NUTSSettings, on_chunk: Callable[[Chunk], bool]) -> None:
        self.state = warm.state
        self.reestimated = warm.reestimate
        self.settings = settings
        self.on_chunk = on_chunk
        self.held: list[Chunk] = []
        self.window: dict[int, dict[str, list]] = {c: {"acceptance_rate": [], "diverging": []}
                                                   for c in range(int(settings.chains))}
        self.results: dict[int, tuple[bool, str, float, int, float, float]] = {}
        self.open = False
        self.failed: str | None = None
        self.decided: float | None = None  #: time.monotonic() when the last window was checked (or one failed)

    def __call__(self, chunk: Chunk) -> bool:
        if self.open:
            return self.on_chunk(chunk)
        if self.failed is not None:
            return False
        self.held.append(chunk)
        for row, chain in enumerate(chunk.chains):
            if chunk.warmup:
                for name in ("acceptance_rate", "diverging"):
                    if name in chunk.sample_stats:
                        self.window[chain][name].append(np.asarray(chunk.sample_stats[name])[row])
            elif chain not in self.results:
                stats = chunk.sample_stats
                used = np.asarray(stats.get("step_size_bar", stats["step_size"]))[row]
                final = float(used[0]) if np.size(used) else float("nan")
                saved = float(np.median(np.asarray(self.state.step_size, np.float64)))
                window = {name: np.concatenate(parts) if parts else np.zeros(0)
                          for name, parts in self.window[chain].items()}
                passed, why, acceptance, divergent = check_window(window, final, saved,
                                                                  float(self.settings.target_accept), self.reestimated)
                self.results[chain] = (passed, why, acceptance, divergent, final, saved)
                if not passed:
                    self.failed = f"chain {chain}: {why}"
                    self.decided = time.monotonic()
                    self.held.clear()
                    return False
        if len(self.results) == len(self.window):
            self.open = True
            self.decided = time.monotonic()
            held, self.held = self.held, []
            for piece in held:
                if self.on_chunk(piece) is False:
                    return False
        return True

    def release_checked(self) -> None:
        """After a run that stopped before every window was checked: hand on the warm-up and the draws of the
        chains whose window passed (never a draw of an unchecked chain)."""
        held, self.held = self.held, []
        for piece in held:
            if piece.warmup or all(self.results.get(c, (False,))[0] for c in piece.chains):
                if self.on_chunk(piece) is False:
                    return

    def verdict(self) -> Verdict:
        chains = sorted(self.results)
        rows = [self.results[c] for c in chains]
        if self.failed is not None:
            found = f"the check failed: {self.failed}"
        elif len(rows) < len(self.window):
            found = (f"the run stopped before every chain's window was checked ({len(rows)} of {len(self.window)}); "
                     "only checked chains' draws were kept")
        else:
            if self.reestimated:  # a grown step size passes: say how it moved, not "within a factor"
                ratios = [r[4] / r[5] for r in rows]
                step = (f"step size x{min(ratios):.2g}-{max(ratios):.2g} of the saved one with the mass matrix "
                        "estimated again")
            else:
                factor = max(max(r[4] / r[5], r[5] / r[4]) for r in rows)
                step = f"step size within a factor {factor:.2f} of the saved one"
            found = (f"the check passed: acceptance {min(r[2] for r in rows):.2f}-{max(r[2] for r in rows):.2f} "
                     f"(target {float(self.settings.target_accept):g}), {step}, "
                     f"{sum(r[3] for r in rows)} divergences in the windows' second halves")
        return Verdict(self.failed is None and len(rows) == len(self.window), found,
                       tuple(r[2] for r in rows), tuple(r[4] for r in rows),
                       float(np.median(np.asarray(self.state.step_size, np.float64))), sum(r[3] for r in rows))


def run_warm(compiled: Any, engine: str, settings: NUTSSettings, on_chunk: Callable[[Chunk], bool],
             run: Callable[..., NUTSRun]) -> NUTSRun:
    """``compiled.run_nuts`` for settings that carry a :class:`WarmStart` (``settings.warm_state``).

    ``run(settings, on_chunk, warm=None, window=0, reestimate=False)`` is the engine's own run: with ``warm`` (the saved
    :class:`~resilient.sampler_state.SamplerState`) it starts each chain at ``settings.initial_points`` (the saved
    positions) with the saved adaptation and warms up for ``window`` iterations instead of ``settings.tune``;
    ``reestimate`` (:attr:`WarmStart.reestimate`) says whether the state may be of other data. A state that does
    not fit this run (another model, engine, chain count, mass matrix kind; see :func:`_unusable`) is not used; a window
    that fails its check (or makes the engine fail) stops, and the run warms up in full from the loop's
    initial points. Either way ``warm.log`` says what happened, and so does the result's ``extra``.
    """
    warm: WarmStart = settings.warm_state
    cold = replace(settings, warm_state=None)
    why = _unusable(warm, engine, compiled, settings)
    if why is not None:
        warm.note(settings.random_seed, {"used": False, "source": warm.source, "why": why})
        return run(cold, on_chunk)
    state = warm.state
    window = replace(cold, initial_points=np.asarray(state.positions, np.float64))
    gate = _Gate(warm, window, on_chunk)
    started = time.monotonic()
    entry: dict[str, Any] = {"used": True, "source": warm.source, "window": warm.window,
                             "tune_asked": int(settings.tune), "draws": int(settings.draws),
                             "target_accept": float(settings.target_accept),
                             "mass_matrix": ("estimated again in the window (the state may be of other data)"
                                             if warm.reestimate else "the saved one")}
    try:
        outcome = run(window, gate, warm=state, window=warm.window, reestimate=warm.reestimate)
    except WarmStartRefused as refused:
        warm.note(settings.random_seed, {"used": False, "source": warm.source, "why": str(refused)})
        return run(cold, on_chunk)
    except SamplerError as error:
        if gate.open:  # draws were handed on: the failure is the run's, not the window's
            raise
        gate.failed = f"the engine failed in the window ({error})"
        outcome = NUTSRun(False, "sampler-error")
    ended = time.monotonic()
    window_seconds = (gate.decided or ended) - started  # to the check: the window and the first chunk of draws
    verdict = gate.verdict()
    entry.update(verdict.to_dict(), window_seconds=round(window_seconds, 3))
    if gate.failed is None:
        if not gate.open:
            gate.release_checked()
        warm.note(settings.random_seed, entry)
        outcome.extra["warm_start"] = entry
        return outcome
    entry["fallback"] = f"a full warm-up of {settings.tune} iterations from the loop's initial points"
    warm.note(settings.random_seed, entry)
    full = run(cold, on_chunk)
    full.extra["warm_start"] = entry
    full.warmup_seconds += ended - started  # the failed window is warm-up time this attempt spent
    return full
