"""The resilient sampling loop: attempts under a :class:`~resilient.policy.Policy`, each one
checked, the next remedy applied on failure, every finished draw kept.

Assembles the small pieces (adapters, preflight, draw buffer, checkpoint, policy); the
decisions are plain functions (:func:`assess`, :func:`choose_remedy`) so they can be tested
without a backend.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from resilient.backend import Chunk, NUTSRun, NUTSSettings, available_backends, capabilities, get_adapter
from resilient.draws import RUNNING_COUNT, DrawBuffer, running_counts_on, to_datatree
from resilient.engine import HISTORY
from resilient.errors import PreflightError, ResilientWarning, SamplerError, SamplingFailed
from resilient.errors import warn as warn_user
from resilient.model import Model, NativeModel, cached_model
from resilient.policy import Attempt, Policy
from resilient.quality import Quality, badness, convergence, measure, separated_modes
from resilient.resumption import continuation_tune, counted_on
from resilient.sampler_state import SamplerState, merge_states, stack
from resilient.states import Failure, Remedy

__all__ = ["run_loop", "assess", "choose_remedy", "Decision", "ResilientWarning", "LoopState", "noncentering_candidates"]


@dataclass(frozen=True)
class LoopState:
    """What the next attempt will use. Remedies return a changed copy; nothing mutates it."""

    model: Model | NativeModel
    backend: str
    target_accept: float
    init_strategy: str = "default"
    used: frozenset[Remedy] = frozenset()
    mass_matrix: str = "diag"
    tune: int = 1000
    draws: int = 1000
    #: the next attempt continues the last one's chains for this many more draws each (``more_draws``): no new
    #: warm-up, the draws join the earlier ones; 0: a new run
    extend: int = 0


@dataclass(frozen=True)
class Decision:
    """The loop's next step after a failure: a remedy and the state it leads to, or ``remedy=None``.
    ``skipped``: remedies that fit but were passed over, each with why (e.g. the time left)."""

    remedy: Remedy | None
    note: str
    state: LoopState
    skipped: tuple[str, ...] = ()


def assess(buffer: DrawBuffer, policy: Policy, settings: NUTSSettings, warmup_stats: dict | None = None,
           table: list[tuple[str, float, float]] | None = None) -> tuple[str | None, str]:
    """The first failure seen in an attempt's draws, with a sentence about it (``None``: accept); ``table``:
    :func:`resilient.quality.convergence`'s rows for these draws where the caller has them already."""
    stats = buffer.sample_stats()
    posterior = buffer.posterior()
    if not stats or buffer.complete_draws == 0:
        return "no-draws", "no draws were finished"
    lp = stats.get("lp")
    if lp is not None and not np.all(np.isfinite(lp)):
        return "non-finite", f"{int(np.sum(~np.isfinite(lp)))} draws have a non-finite log density"
    for name, values in posterior.items():
        values = np.asarray(values)
        if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            return "non-finite", (f"{int(np.sum(~np.isfinite(values)))} draws of {name} are not finite (inf or NaN): "
                                  "the posterior may be improper along it")
    stuck = _stuck_chains(posterior, stats)
    if stuck:
        return "stuck", f"chain(s) {', '.join(map(str, stuck))} never moved (no proposal accepted)"
    divergent = int(np.sum(stats["diverging"]))
    total = int(stats["diverging"].size)
    if divergent > policy.max_divergence_rate * total:
        return "divergences", (
            f"{divergent} of {total} draws diverged ({100 * divergent / total:.2f}%, limit "
            f"{100 * policy.max_divergence_rate:.2f}%)"
        )
    depth = stats.get("tree_depth")
    if depth is not None:
        saturated = float(np.mean(depth >= settings.max_tree_depth))
        if saturated > policy.tree_depth_saturation:
            return "tree-depth", (
                f"{100 * saturated:.0f}% of draws hit the maximum tree depth {settings.max_tree_depth}: "
                "the posterior may be improper or unidentified"
            )
    worst = _worst_convergence(posterior, settings.chains, table)
    if worst is not None:
        name, rhat, ess = worst
        if rhat > policy.rhat_limit or ess < policy.min_ess_bulk_per_chain * settings.chains:
            modes = separated_modes(posterior)
            if modes is not None and rhat > policy.rhat_limit:
                minor = _minor_mode(modes, stats.get("lp"))
                if minor is not None:
                    return "minor-mode", (
                        f"{name} has R-hat {rhat:.3f}: the chains settled in separate modes, {modes.describe()}; "
                        f"{minor}: a local mode of little posterior mass the start led them into"
                    )
                return "multimodal", (
                    f"{name} has R-hat {rhat:.3f}: the chains settled in separate modes, {modes.describe()}; "
                    "the posterior is multimodal (or unidentified) and NUTS does not cross between separated "
                    "modes, so more warm-up or a higher target_accept would not help"
                )
            return "convergence", (
                f"{name} has R-hat {rhat:.3f} and bulk ESS {ess:.0f} (limits {policy.rhat_limit} and "
                f"{policy.min_ess_bulk_per_chain:g} per chain): "
                + ("the chains disagree (slow mixing)" if rhat > policy.rhat_limit else
                   "the chains agree but mix slowly (too few effective draws)")
            )
    return None, ""


def _minor_mode(modes: Any, lp: Any) -> str | None:
    """When the modes' heights differ (the chains in one have a clearly lower log density: more than 3 of their
    within-chain standard deviations and 2 nats), a sentence naming the lower chains; None for modes of equal
    height (a symmetry such as label switching, which no restart fixes)."""
    if lp is None:
        return None
    lp = np.asarray(lp, float)
    if lp.ndim != 2 or not np.all(np.isfinite(lp)):
        return None
    heights = [float(lp[list(group)].mean()) for group in modes.groups]
    spread = float(np.mean([lp[c].std() for group in modes.groups for c in group]))
    low, high = int(np.argmin(heights)), int(np.argmax(heights))
    gap = heights[high] - heights[low]
    if gap <= max(3.0 * spread, 2.0):
        return None
    chains = ", ".join(map(str, modes.groups[low]))
    return f"chain(s) {chains} sit {gap:.1f} below the others in log density"


def _stuck_chains(posterior: dict[str, np.ndarray], stats: dict[str, np.ndarray]) -> list[int]:
    if not posterior:
        return []
    chains = next(iter(posterior.values())).shape[0]
    draws = next(iter(posterior.values())).shape[1]
    if draws < 2:
        return []
    stuck = []
    for chain in range(chains):
        moved = any(np.any(np.ptp(np.asarray(v[chain], float).reshape(draws, -1), axis=0) > 0) for v in posterior.values())
        if not moved:
            stuck.append(chain)
    return stuck


def _worst_convergence(posterior: dict[str, np.ndarray], chains: int,
                       table: list[tuple[str, float, float]] | None = None) -> tuple[str, float, float] | None:
    """The scalar furthest from convergence (R-hat excess first, then the smallest ESS) with its figures."""
    if chains < 2 or not posterior:
        return None
    table = convergence(posterior) if table is None else table
    # a figure ArviZ cannot compute counts as failing
    rows = [(label, rhat if np.isfinite(rhat) else np.inf, ess if np.isfinite(ess) else 0.0)
            for label, rhat, ess in table]
    if not rows:
        return None
    return max(rows, key=lambda row: (max(row[1] - 1.0, 0.0) * 100 + 1.0 / max(row[2], 1.0)))


def noncentering_candidates(model: Model | NativeModel, sites: Mapping[str, Any]) -> list[str]:
    """Latent sites in the centred hierarchical pattern (a location or scale that is another variable)
    that the adapter really samples non-centred when asked (``Site.noncenterable``)."""
    return [site.name for site in sites.values()
            if site.kind == "latent" and site.noncenterable and site.name not in model.noncentered]


#: remedies in the order they are tried, per failure, as an experienced modeller would try them by hand:
#: divergences in a hierarchy are a geometry problem (non-centre, then a smaller step, then a better metric);
#: slow mixing without divergences: a centred hierarchy is non-centred first (it changes the geometry at no cost),
#: else the same chains run on for more draws (as a Stan user would "run longer": no new warm-up), then a longer
#: warm-up and more draws from new starts, then a better mass matrix; a saturated
#: tree depth wants the mass matrix before anything else (a higher target_accept makes trees deeper); only a
#: failure that points at the start (initialisation, stuck chains, non-finite values) gets fresh initial points.
_LADDERS: dict[str, tuple[Remedy, ...]] = {
    "divergences": ("noncenter", "target_accept", "dense_mass", "low_rank", "float64", "other_backend"),
    "convergence": ("noncenter", "more_draws", "longer_warmup", "dense_mass", "low_rank", "other_backend"),
    "tree-depth": ("dense_mass", "low_rank", "noncenter", "longer_warmup", "other_backend"),
    "initialization": ("reinitialize", "float64", "target_accept", "other_backend"),
    "multimodal": (),
    # chains in a lower, minor mode: the start put them there, so new starts are the remedy (two kinds, then stop)
    "minor-mode": ("reinitialize",),
}
for _failure in ("non-finite", "stuck", "no-draws", "sampler-error"):
    _LADDERS[_failure] = _LADDERS["initialization"]

#: a dense mass matrix is estimated from the warm-up draws: past this many latent dimensions it needs more
#: warm-up than a run has, and nutpie's low-rank adaptation is the better metric.
DENSE_MASS_MAX_DIMENSION = 200

#: chains further apart than this (worst R-hat) are not near a common stationary distribution: continuing them
#: wastes the time a longer warm-up from new starts would use better
EXTEND_RHAT_MAX = 1.1

#: a continuation adds at least the draws the chains have and at most this many times them
EXTEND_MAX_FACTOR = 3


def extension(quality: Quality, policy: Policy) -> int | None:
    """How many more draws per chain continuing an attempt's chains needs to reach the R-hat goal (``policy.goal``) and the ESS
    limit, or None where continuing cannot be expected to get there (R-hat over :data:`EXTEND_RHAT_MAX`).

    The excess of R-hat over 1 and the ESS shortfall of chains near stationarity shrink roughly as 1/draws, so the
    draws are multiplied by the larger of the two ratios to their lines (at least doubled, at most
    :data:`EXTEND_MAX_FACTOR` + 1 times)."""
    if quality.draws < 1 or quality.rhat is None or not np.isfinite(quality.rhat) or quality.rhat > EXTEND_RHAT_MAX:
        return None
    ratios = [(quality.rhat - 1.0) / (policy.goal - 1.0)]
    if quality.ess_per_chain is not None and quality.ess_per_chain > 0:
        ratios.append(policy.min_ess_bulk_per_chain / quality.ess_per_chain)
    factor = min(max(max(ratios) - 1.0, 1.0), EXTEND_MAX_FACTOR)
    return int(np.ceil(quality.draws * factor))


#: roughly how much longer an attempt runs after each remedy than the attempt before it (the time check).
_COST: dict[str, float] = {"reinitialize": 1.0, "noncenter": 1.0, "longer_warmup": 2.0, "dense_mass": 1.3,
                           "low_rank": 1.2, "target_accept": 1.6, "float64": 1.3, "other_backend": 1.5}

_MASS = frozenset({"dense_mass", "low_rank"})


def choose_remedy(failure: Failure, state: LoopState, policy: Policy, *, candidates: Sequence[str] = (),
                  float32_in_effect: bool = False, other_backends: Sequence[str] = (),
                  mass_matrices: Sequence[str] = ("diag",), dimension: int | None = None,
                  seconds_left: float | None = None, last_seconds: float | None = None,
                  extend_by: int | None = None) -> Decision:
    """The next remedy that fits ``failure``, is not used up and fits in the time left: a pure function.

    ``candidates``: sites the adapter can non-centre (:func:`noncentering_candidates`);
    ``float32_in_effect``: the compiled model really runs in float32 (float64 is only a remedy then);
    ``other_backends``: installed engines this model can move to (a native model only to those that
    run its own language: a pm.Model moves between PyMC's NUTS and nutpie);
    ``mass_matrices``: what the current engine adapts (``"full"``: PyMC's NUTS, ``"low_rank"``: nutpie);
    ``dimension``: the number of unconstrained latent values (a dense mass matrix only up to
    :data:`DENSE_MASS_MAX_DIMENSION`); ``seconds_left`` and ``last_seconds`` (the failed attempt's warm-up and
    sampling time): a remedy expected to need more than the time left is skipped with a note; ``extend_by``: the
    draws per chain that continuing the failed attempt's chains would add (:func:`extension`; None: they cannot be
    continued, e.g. the engine keeps no state or the chains are too far apart).

    The target_accept ladder is taken one rung at a time: after its first rung, the other remedies that fit
    come first, then its further rungs.
    """
    skipped: list[str] = []
    ladder = _LADDERS.get(failure, _LADDERS["convergence"])
    for second_pass in (False, True):
        for remedy in ladder:
            if remedy not in policy.remedies or (second_pass and remedy != "target_accept"):
                continue
            if remedy in state.used and not (remedy == "target_accept" and second_pass):
                continue
            decision = _apply(remedy, state, policy, candidates=candidates, float32_in_effect=float32_in_effect,
                              other_backends=other_backends, mass_matrices=mass_matrices, dimension=dimension,
                              extend_by=extend_by)
            if decision is None:
                continue
            if seconds_left is not None and last_seconds is not None:
                # more_draws: the continuation's draws at the attempt's pace, with a margin for a short re-adaptation
                expected = last_seconds * (_COST.get(remedy, 1.0) if remedy != "more_draws" else
                                           1.2 * decision.state.extend / max(state.tune + state.draws, 1))
                if expected > seconds_left:
                    note = f"{decision.note} skipped: it needs about {expected:.0f} s and {max(seconds_left, 0):.0f} s are left"
                    if note not in skipped:
                        skipped.append(note)
                    continue
            return replace(decision, skipped=tuple(skipped))
    note = "no remedy left that fits this failure" if failure != "multimodal" else (
        "no remedy fits a multimodal posterior: reparameterise, add an identifying constraint (an ordering for "
        "label switching) or use a sampler for multimodal posteriors (e.g. pm.sample_smc)")
    if skipped:
        note += f" in the time left ({'; '.join(skipped)})"
    return Decision(None, note, state, tuple(skipped))


def _apply(remedy: Remedy, state: LoopState, policy: Policy, *, candidates: Sequence[str], float32_in_effect: bool,
           other_backends: Sequence[str], mass_matrices: Sequence[str], dimension: int | None,
           extend_by: int | None = None) -> Decision | None:
    """The decision ``remedy`` makes from ``state``, or None where it would change nothing."""
    from resilient.engine import modelling_backend

    used = state.used | {remedy}
    if remedy == "more_draws":
        if not extend_by:
            return None
        return Decision(remedy, f"the same chains continued for {extend_by} more draws each from where they stand "
                                "(no new warm-up where the engine takes its adaptation back; the draws join the "
                                "earlier ones)",
                        replace(state, extend=int(extend_by), used=used))
    state = replace(state, extend=0)
    if remedy == "target_accept":
        rungs = [t for t in policy.target_accept_ladder if t > state.target_accept]
        if rungs:
            return Decision(remedy, f"target_accept raised to {rungs[0]} (a smaller step size)",
                            replace(state, target_accept=rungs[0], used=used))
        return None
    if remedy == "reinitialize":
        strategy = {"default": "uniform"}.get(state.init_strategy, "prior")
        return Decision(remedy, f"fresh initial points ({strategy})",
                        replace(state, init_strategy=strategy, used=used if strategy == "prior" else state.used))
    if remedy == "noncenter" and candidates:
        model = state.model.with_options(noncentered=frozenset(state.model.noncentered) | set(candidates))
        return Decision(remedy, f"non-centred {', '.join(candidates)} (sampled as loc + scale * raw)",
                        replace(state, model=model, used=used))
    if remedy == "longer_warmup":
        tune, draws = max(2 * state.tune, 1000), 2 * state.draws
        return Decision(remedy, f"a longer warm-up and more draws (tune {state.tune} -> {tune}, draws "
                                f"{state.draws} -> {draws}), so the adaptation settles and the chains mix",
                        replace(state, tune=tune, draws=draws, used=used))
    if remedy == "dense_mass" and "full" in mass_matrices and state.mass_matrix != "full" and (
            dimension is None or dimension <= DENSE_MASS_MAX_DIMENSION):
        return Decision(remedy, "a dense mass matrix (adapted from the warm-up draws: correlations between "
                                "parameters)", replace(state, mass_matrix="full", used=used | _MASS))
    if remedy == "low_rank" and "low_rank" in mass_matrices and state.mass_matrix != "low_rank":
        return Decision(remedy, "low-rank mass matrix adaptation (nutpie: the strongest correlations)",
                        replace(state, mass_matrix="low_rank", used=used | _MASS))
    if remedy == "float64" and float32_in_effect:
        return Decision(remedy, "switched to float64",
                        replace(state, model=state.model.with_options(float32=False), used=used))
    if remedy == "other_backend":
        movable = [b for b in other_backends if not isinstance(state.model, NativeModel)
                   or modelling_backend(b) == state.model.backend]
        if movable:
            return Decision(remedy, f"switched to the {movable[0]} engine",
                            replace(state, backend=movable[0], mass_matrix="diag", used=used))
    return None


def _decide(failure: Failure, state: LoopState, policy: Policy, compiled: Any, *, dimension: int | None = None,
            seconds_left: float | None = None, last_seconds: float | None = None,
            extend_by: int | None = None) -> Decision:
    """:func:`choose_remedy` with the facts read off the compiled model and the installed backends."""
    from resilient.engine import can_sample, mass_matrices

    return choose_remedy(
        failure, state, policy, candidates=noncentering_candidates(state.model, compiled.sites),
        float32_in_effect=bool(state.model.float32) and "float32" not in getattr(compiled, "ignored_options", ()),
        other_backends=[b for b in available_backends() if b != state.backend and can_sample(b, compiled)],
        mass_matrices=mass_matrices(state.backend), dimension=dimension, seconds_left=seconds_left,
        last_seconds=last_seconds, extend_by=extend_by)


#: failures after which the draws exist and are a valid (if poor) Markov chain: worth returning at the cap.
STATISTICAL: frozenset[str] = frozenset({"divergences", "tree-depth", "convergence", "multimodal", "minor-mode"})


@dataclass(frozen=True)
class _Candidate:
    """An attempt whose draws could be returned: its number, draws, quality, and whether it finished."""

    number: int
    data: Any
    quality: Quality
    finished: bool
    statistical: bool  # the draws form a valid (if poor) Markov chain: no crash, no stuck chain, finite values
    #: within the policy's limits, retried only to do better (a few divergences, R-hat between goal and retry line)
    acceptable: bool = False

    def key(self, policy: Policy) -> tuple:
        rank = badness(self.quality, rhat_limit=policy.rhat_limit, min_ess_per_chain=policy.min_ess_bulk_per_chain,
                       max_divergence_rate=policy.max_divergence_rate, depth_limit=policy.tree_depth_saturation)
        return (not self.statistical, *rank, not self.finished, self.number)


def _best(candidates: Sequence[_Candidate], policy: Policy) -> _Candidate | None:
    """The attempt with the best diagnostics (:func:`resilient.quality.badness`); ties go to the earlier one,
    so a remedy must improve on the first attempt to be returned instead of it."""
    return min(candidates, key=lambda c: c.key(policy)) if candidates else None


def _ledger(candidates: Sequence[_Candidate], attempts: Sequence[Attempt], current: tuple[int, str | None] = (0, None)
            ) -> str:
    """What each attempt changed and what it gave, in one line each (for the warning); ``current``: the number
    and remedy of an attempt not yet in ``attempts``."""
    remedies = {a.attempt: a.remedy for a in attempts}
    remedies.setdefault(*current)
    lines = []
    for candidate in candidates:
        remedy = remedies.get(candidate.number)
        change = "as asked" if remedy is None else remedy.replace("_", " ")
        state = "" if candidate.finished else f", unfinished at {candidate.quality.draws} draws per chain"
        lines.append(f"attempt {candidate.number} ({change}{state}): {candidate.quality.describe()}")
    return "; ".join(lines)


def _layout(compiled: Any) -> dict[str, Any]:
    """The backend's names for dimensions, coordinates and constant data, where the adapter knows them."""
    method = getattr(compiled, "datatree_layout", None)
    return method() if method is not None else {}


def _initial_points(compiled: Any, strategy: str, chains: int, seed: int, retries: int) -> np.ndarray:
    """One finite starting point (finite log density and gradient) per chain."""
    points = []
    for chain in range(chains):
        for trial in range(retries):
            try:
                x = np.asarray(compiled.initial_point(strategy, seed + 7919 * chain + trial), float)
            except Exception as error:  # e.g. no prior draws from a Flat prior
                improper = [f"`{name}`" for name, site in getattr(compiled, "sites", {}).items()
                            if getattr(site, "improper_prior", False)]
                hint = (f" ({', '.join(improper)}: an improper prior, which cannot be drawn from; give it a proper "
                        "prior, e.g. Normal(0, 10))" if strategy == "prior" and improper else "")
                raise _InitializationFailed(
                    f"the {strategy!r} initial points cannot be made: {type(error).__name__}: {error}{hint}") from error
            value, gradient = compiled.log_density_and_gradient(x)
            if np.isfinite(value) and np.all(np.isfinite(gradient)):
                points.append(x)
                break
        else:
            raise _InitializationFailed(
                f"no initial point with a finite log density and gradient in {retries} tries of the "
                f"{strategy!r} strategy (chain {chain})"
            )
    return np.stack(points)


class _InitializationFailed(Exception):
    pass


@dataclass(frozen=True)
class _Finished:
    """A finished attempt whose chains ``more_draws`` can continue: its draws (the buffer the continuation adds
    to), each chain's sampler state after its last draw, the draws per chain, its warm-up and sampling seconds,
    and whether it was acceptable as it was (only over the R-hat goal, under the retry line)."""

    number: int
    buffer: DrawBuffer
    states: Mapping[int, Any]
    draws: int
    seconds: float
    acceptable: bool

    @cached_property
    def resume_state(self) -> SamplerState:
        """The chains' states as one record (stacked once: the continuation reads it for every chunk)."""
        return stack([self.states[chain] for chain in sorted(self.states)])


#: why the loop does not retry a sampler error of this kind.
_NO_REMEDY = {
    "resources": "no remedy lowers memory use: run fewer chains (on NumPyro, also a smaller "
                 "Policy(chunk_size=...))",
    "crash": "an error inside the sampler is not something a remedy fixes (the backend's traceback is "
             "chained to this error)",
}


class _Progress:
    """A rich progress bar over all chains' draws (in Jupyter, one output updated in place); silent when off, in
    CI, or without a terminal or notebook."""

    def __init__(self, enabled: bool, total: int, description: str) -> None:
        from resilient.notebook import notebook_progress

        self.bar = None
        self.notebook = notebook_progress(enabled, total, description)  # one output updated in place in Jupyter
        if self.notebook is not None or not enabled or os.environ.get("CI") or not sys.stderr.isatty():
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[note]}"), TimeRemainingColumn(), transient=True)
        self.bar.start()
        self.task = self.bar.add_task(description, total=total, note="")

    def advance(self, chunk: Chunk, note: str) -> None:
        if self.notebook is not None:
            self.notebook.advance(chunk, note)
        elif self.bar is not None:
            self.bar.update(self.task, advance=chunk.size * len(chunk.chains), note=note)

    def close(self) -> None:
        if self.notebook is not None:
            self.notebook.close()
        elif self.bar is not None:
            self.bar.stop()


def _retry_warm_start(states: Mapping[int, SamplerState], settings: NUTSSettings, checkpoint: Any,
                      number: int) -> Any:
    """The warm start of the retry that only raises ``target_accept`` after attempt ``number``'s few divergences:
    that attempt's adaptation (each chain's position, step size and mass matrix after its last draw). The
    geometry is the same and only the step size must shrink, which the warm start's window adapts and checks
    (:mod:`resilient.warm_start`; a window that fails its check warms up in full). None where the call has a
    warm start of its own (whose retry rule applies), a checkpoint (a resume continues the run as written) or a
    chain kept no state."""
    from resilient.warm_start import WarmStart

    if settings.warm_state is not None or checkpoint is not None or set(states) != set(range(settings.chains)):
        return None
    return WarmStart(stack([states[chain] for chain in sorted(states)]),
                     f"attempt {number}'s adaptation (this retry only raises target_accept)")


def _said_warm(attempt: Attempt) -> Attempt:
    """``attempt`` with the loop's own warm start (:func:`_retry_warm_start`) said in its message."""
    entry = attempt.settings.get("warm_start") if isinstance(attempt.settings, Mapping) else None
    if not entry:
        return attempt
    from resilient.warm_start import describe

    text = describe(entry)
    return replace(attempt, message=f"{attempt.message}; {text}" if attempt.message else text)


def run_loop(model: Model | NativeModel, backend: str, settings: NUTSSettings, policy: Policy, *,
             preflight: bool = True, checkpoint: Any = None, progressbar: bool = True,
             compile_cache: dict | None = None, warn: Callable[[str], None] | None = None,
             engine_reason: str | None = None, keep_warmup: bool = False,
             precision_reason: str | None = None) -> Any:
    """Preflight, then attempts until one is accepted or a cap is hit. Returns a DataTree.

    Nothing finished is dropped: when the attempts or the time run out, the result is the attempt with the
    best diagnostics among those that ran (finished, or the one the budget cut short if it is better), never
    one worse than the first; the run record's ``returned_attempt`` says which.
    """
    from resilient import record
    from resilient.checks import check_compiled, run_preflight

    start = time.monotonic()
    deadline = start + policy.time_budget if policy.time_budget else None
    warn = warn or warn_user
    cache = compile_cache if compile_cache is not None else {}
    attempts: list[Attempt] = []
    report = None
    seed = settings.random_seed if settings.random_seed is not None else int(np.random.default_rng().integers(2**31))
    state = LoopState(model, backend, settings.target_accept, mass_matrix=settings.mass_matrix,
                      tune=settings.tune, draws=settings.draws)
    candidates: list[_Candidate] = []  # attempts whose draws could be returned
    next_remedy: str | None = None
    last: tuple[str, str, LoopState, Any] | None = None  # the last failed attempt: failure, message, state, model
    dimension: int | None = None
    last_seconds: float | None = None
    ran: _Finished | None = None  # the last attempt that finished, whose chains ``more_draws`` can continue
    rare_from: int | None = None  # the attempt whose few divergences got one target_accept raise
    rare_warm: Any = None  # that attempt's adaptation, which the raise starts from (see _retry_warm_start)

    def compiled_for(current: LoopState) -> Any:
        key = (current.backend, current.model)
        if key not in cache:  # the same variant compiled by an earlier call of this sampler is reused
            twin = cached_model(cache, current.backend, current.model)
            cache[key] = cache[(current.backend, twin)] if twin is not current.model else (
                get_adapter(current.backend).compile(current.model))
        return cache[key]

    if preflight:
        report, compiled = run_preflight(model, backend, random_seed=seed, compiled=cache.get((backend, model)))
        if compiled is not None:
            cache[(backend, model)] = compiled
        if not report.ok:
            error = report.errors[0]
            raise PreflightError(
                f"Preflight found {len(report.errors)} blocking problem(s); the first: {error.message}"
                + (f" Fix: {error.fix}." if error.fix else ""), report)

    def finish(chosen: _Candidate | None, status: str, message: str) -> Any:
        data = None if chosen is None else chosen.data
        run_info = {"backend": state.backend, "model": model.name, "status": status, "message": message,
                    "time_budget": policy.time_budget, "seconds": time.monotonic() - start,
                    "random_seed": seed, "max_tree_depth": settings.max_tree_depth,
                    "returned_attempt": None if chosen is None else chosen.number,
                    **({"engine_reason": engine_reason} if engine_reason else {}),
                    **({"precision_reason": precision_reason} if precision_reason else {})}
        if checkpoint is not None and getattr(checkpoint, "error", None):
            run_info["checkpoint_error"] = checkpoint.error
        if chosen is not None:
            returned = next((a for a in attempts if a.attempt == chosen.number), None)
            if returned is not None:
                run_info["backend"] = returned.backend
        if data is not None:
            record.attach(data, preflight=report, attempts=[_said_warm(a) for a in attempts], run=run_info)
            if checkpoint is not None:
                checkpoint.write_record({}, {k: v for k, v in data.attrs.items() if k.startswith("resilient")})
        return data

    def give_up(summary: str, failure: str, message: str, fallback: _Candidate | None,
                crash: BaseException | None = None) -> Any:
        """No remedy left: an attempt within the policy's limits (retried only to do better), else the best
        statistical attempt with a warning, or SamplingFailed with the best draws."""
        within = _best([c for c in candidates if c.acceptable], policy)
        if within is not None:
            return finish(within, "ok", f"accepted attempt {within.number}, within the policy's limits: the "
                                        f"remedies after it did not do better ({_ledger(candidates, attempts)})")
        usable = [c for c in candidates if c.statistical]
        if failure in STATISTICAL and policy.on_exhausted == "warn" and usable:
            chosen = _best(usable, policy)
            first = usable[0].number == 1 and chosen.number == 1 and len(attempts) > 1
            verdict = ("the remedies did not help, so the first attempt's draws are returned" if first else
                       f"returning attempt {chosen.number}'s draws, the best by their diagnostics")
            warn(f"Resilient: {summary} ({len(attempts)} attempt(s)). {verdict[0].upper()}{verdict[1:]}: "
                 f"{_ledger(usable, attempts)}. Their diagnostics fail; do not trust them without checking "
                 "(Policy(on_exhausted='raise') raises instead).")
            return finish(chosen, "failed", f"{message}; returned attempt {chosen.number}'s draws")
        chosen = _best(candidates, policy) or fallback
        return _stop(finish(chosen, "failed", message), summary, attempts, report, policy, warn, cause=crash)

    def best_so_far(why: str, current: tuple[int, str | None] = (0, None)) -> tuple[_Candidate | None, str]:
        """The best attempt that ran, and a sentence saying which and why (for a budget or an interruption)."""
        chosen = _best(candidates, policy)
        if chosen is None:
            return None, f"{why}; no draws were finished"
        what = (f"attempt {chosen.number}'s {chosen.quality.draws} draws per chain"
                + ("" if chosen.finished else " (unfinished)"))
        if len(candidates) == 1:
            return chosen, f"{why}; {what} are returned"
        return chosen, (f"{why}; {what} are returned, the best by their diagnostics of the attempts that ran "
                        f"({_ledger(candidates, attempts, current)})")

    for number in range(1, policy.max_attempts + 1):
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            chosen, message = best_so_far(f"the time budget of {policy.time_budget} s ran out before attempt {number}")
            return _stop(finish(chosen, "budget", message), message, attempts, report, policy, warn, budget=True)
        attempt_start = time.monotonic()
        remedy, next_remedy = next_remedy, None
        attempt_seed = seed + 1000 * (number - 1)
        going_on = ran if state.extend and ran is not None else None  # continue ran's chains
        current_settings = {
            "draws": state.draws, "tune": state.tune, "chains": settings.chains,
            "target_accept": state.target_accept, "init": state.init_strategy,
            "float32": bool(state.model.float32), "noncentered": sorted(state.model.noncentered),
            "random_seed": attempt_seed, "mass_matrix": state.mass_matrix,
            **({"engine_reason": engine_reason} if number == 1 and engine_reason else {}),
            **({"precision_reason": precision_reason} if number == 1 and precision_reason else {}),
        }
        if going_on is not None:
            whole = going_on.resume_state.adaptation == "whole"  # NumPyro: its random key goes on too
            current_settings.update(draws=going_on.draws + state.extend, tune=0, continued={
                "from_attempt": going_on.number, "draws_before": going_on.draws, "extra_draws": state.extend,
                "random_state": "continued" if whole else f"new (random_seed {attempt_seed})"})
            if whole:
                current_settings["random_seed"] = None
        compile_start = time.monotonic()
        compiled = None
        if last is not None and (state.backend, state.model) not in cache:
            try:
                compiled_for(state)
            except Exception as error:  # noqa: BLE001 - a remedy's variant (float64, non-centred, another engine)
                failure, message, before, before_compiled = last
                why = f"the model for this remedy did not compile ({type(error).__name__}: {error})"
                state = replace(before, used=before.used | state.used)
                decision = (Decision(None, "the attempt cap is reached", state) if number == policy.max_attempts else
                            _decide(failure, state, policy, before_compiled, dimension=dimension,
                                    seconds_left=None if deadline is None else deadline - time.monotonic(),
                                    last_seconds=last_seconds))
                done = decision.remedy is None
                attempts.append(Attempt(number, state.backend, current_settings, remedy, failure,
                                        f"{why}; " + (decision.note if done else f"next: {decision.note}"),
                                        "gave-up" if done else "retry", time.monotonic() - attempt_start))
                if done:
                    return give_up(f"attempt {number}: {why}; {decision.note}", failure, message, None)
                next_remedy, state = decision.remedy, decision.state
                continue
        try:
            compiled = compiled_for(state)
            compile_seconds = time.monotonic() - compile_start
            if number > 1 and preflight and going_on is None and (state.backend, state.model) != (backend, model):
                later = check_compiled(compiled, state.model, state.backend, random_seed=attempt_seed)
                if not later.ok:
                    raise _InitializationFailed(later.errors[0].message)
            if going_on is not None:  # the chains start where they stand, in the saved state
                initial = None
            else:
                initial = settings.initial_points if number == 1 and settings.initial_points is not None else (
                    _initial_points(compiled, state.init_strategy, settings.chains, attempt_seed, policy.init_retries))
                dimension = int(np.shape(initial)[-1]) if dimension is None else dimension
        except _InitializationFailed as failure:
            attempts.append(Attempt(number, state.backend, current_settings, remedy, "initialization", str(failure),
                                    "retry", time.monotonic() - attempt_start))
            decision = _decide("initialization", state, policy, compiled, dimension=dimension)
            if decision.remedy is None or number == policy.max_attempts:
                attempts[-1] = replace(attempts[-1], outcome="gave-up")
                chosen = _best(candidates, policy)
                return _stop(finish(chosen, "failed", str(failure)), f"initialisation failed: {failure}",
                             attempts, report, policy, warn)
            attempts[-1] = replace(attempts[-1], message=f"{failure}; next: {decision.note}")
            next_remedy, state = decision.remedy, decision.state
            continue

        # each chain's sampler state after its last finished draw
        states: dict[int, Any] = {} if going_on is None else dict(going_on.states)
        buffer = DrawBuffer(settings.chains, keep_warmup=keep_warmup) if going_on is None else going_on.buffer
        offset = 0 if going_on is None else going_on.draws
        if checkpoint is not None:
            if going_on is None:
                checkpoint.start_attempt(number)
            else:  # the continuing attempt's folder holds the whole chains; a resume of it goes on to their total
                checkpoint.start_attempt(number, carry_from=going_on.number, state=going_on.resume_state,
                                         draws=going_on.draws + state.extend)
        progress = _Progress(progressbar, settings.chains * (state.extend if going_on is not None else
                                                             state.tune + state.draws),
                             f"attempt {number} ({state.backend})")
        readapted = [0]
        # a running count the engine restarts in a new run (PyMC's and nutpie's `divergences`) goes on from where
        # each chain's count stood
        counts_before = {} if going_on is None else {
            chain: count for chain in range(settings.chains)
            if (count := buffer.last_stat(chain, RUNNING_COUNT)) is not None}

        def on_chunk(chunk: Chunk) -> bool:
            if going_on is not None:
                if chunk.warmup:  # an engine that cannot take its adaptation back adapts again briefly: not kept
                    readapted[0] = max(readapted[0], chunk.start + chunk.size)
                    return True
                chunk = replace(chunk, start=chunk.start + offset, sample_stats=running_counts_on(chunk, counts_before),
                                state=counted_on(chunk.state, going_on.resume_state, offset))
            buffer.add(chunk)
            if chunk.state is not None and not chunk.warmup:
                states.update(merge_states({}, chunk.state))
            if checkpoint is not None:
                checkpoint.write_chunk(chunk)
            progress.advance(chunk, f"{buffer.divergences()} divergent")
            return True

        run_settings = replace(settings, target_accept=state.target_accept, random_seed=attempt_seed,
                               mass_matrix=state.mass_matrix, tune=state.tune, draws=state.draws,
                               initial_points=initial, deadline=deadline, chunk_size=policy.chunk_size,
                               progressbar=False)
        if going_on is not None:
            run_settings = replace(run_settings, draws=state.extend, resume_state=going_on.resume_state,
                                   tune=continuation_tune(going_on.resume_state, state.tune))
        elif rare_warm is not None and rare_from == number - 1 and remedy == "target_accept":
            run_settings = replace(run_settings, warm_state=rare_warm)
        crash: SamplerError | None = None
        try:
            with warnings.catch_warnings():
                if state.mass_matrix != settings.mass_matrix:
                    # the mass matrix is the loop's remedy, said in the attempt log: the engine's notice that
                    # the adaptation is experimental (PyMC's full one) is for a user who chose it
                    warnings.filterwarnings("ignore", message=r".* is an experimental feature", category=UserWarning)
                outcome = compiled.run_nuts(run_settings, on_chunk)
        except SamplerError as error:
            outcome, crash = NUTSRun(completed=False, reason="sampler-error"), error
        finally:
            progress.close()
        seconds = time.monotonic() - attempt_start
        if run_settings.warm_state is not None and run_settings.warm_state is rare_warm and rare_warm.log:
            current_settings["warm_start"] = {k: v for k, v in rare_warm.log[-1].items() if k != "random_seed"}
        if going_on is not None and readapted[0]:
            current_settings["continued"]["readapted"] = readapted[0]
        last_seconds = outcome.warmup_seconds + outcome.sampling_seconds or (seconds - compile_seconds)
        if going_on is not None:  # the next remedy is a new run: estimated from the run the chains began in
            last_seconds = going_on.seconds
        HISTORY.note_run(state.backend, outcome.warmup_seconds + outcome.sampling_seconds)
        posterior, stats = buffer.posterior(), buffer.sample_stats()  # stacked once: the result and its quality
        data = to_datatree(posterior, stats, compiled.observed_data(),
                           warmup_stats=buffer.warmup_stats(), layout=_layout(compiled),
                           warmup_posterior=buffer.warmup_posterior())
        if states:  # where the chains stand: step size, mass matrix, positions (what a resume takes back)
            data["sampler_state"] = stack(list(states.values())).to_dataset()
        table = convergence(posterior) if settings.chains >= 2 and posterior else []  # once: measure and assess
        quality = measure(posterior, stats, draws=buffer.complete_draws,
                          chains=settings.chains, max_tree_depth=settings.max_tree_depth, table=table)
        base = dict(attempt=number, backend=state.backend, settings=current_settings, remedy=remedy,
                    seconds=seconds, draws=buffer.complete_draws, divergences=buffer.divergences(),
                    compile_seconds=compile_seconds, warmup_seconds=outcome.warmup_seconds,
                    sampling_seconds=outcome.sampling_seconds, rhat=quality.rhat, ess_bulk=quality.ess_bulk)
        if crash is None and not outcome.completed:
            kind = "budget" if outcome.reason == "deadline" else "interrupted"
            seen, note = (assess(buffer, policy, run_settings, table=table) if buffer.complete_draws >= 8
                          else (None, ""))
            if buffer.complete_draws:
                if going_on is not None:  # the continuation holds its origin's draws and more: it replaces it
                    candidates[:] = [c for c in candidates if c.number != going_on.number]
                candidates.append(_Candidate(number, data, quality, finished=False,
                                             statistical=seen is None or seen in STATISTICAL))
            asked = state.draws if going_on is None else going_on.draws + state.extend
            why = (f"the time budget of {policy.time_budget} s ran out during attempt {number} "
                   f"(after {buffer.complete_draws} of {asked} draws per chain)"
                   if kind == "budget" else f"sampling was interrupted ({outcome.reason}) during attempt {number}")
            if going_on is not None and going_on.acceptable and kind == "budget" and seen is None:
                # the chains were acceptable before they ran longer: what ran of the continuation only adds to them
                message = (f"accepted: attempt {going_on.number}'s chains (over the R-hat goal of {policy.goal}) ran "
                           f"longer until {why}; worst R-hat {quality.rhat:.4f} over all "
                           f"{buffer.complete_draws} draws per chain")
                attempts.append(Attempt(**base, failure=kind, message=message, outcome=kind))
                return finish(candidates[-1], "ok", message)
            chosen, message = best_so_far(why, (number, remedy))
            if chosen is None:  # the budget's own result: the (empty) attempt, returned with the warning
                chosen = _Candidate(number, data, quality, finished=False, statistical=False)
            if seen is not None and chosen is not None and chosen.number == number:
                message += f"; the finished draws show a problem: {note}"
            attempts.append(Attempt(**base, failure=kind, message=message, outcome=kind))
            return _stop(finish(chosen, kind, message), message, attempts, report, policy, warn,
                         budget=kind == "budget", interrupted=kind == "interrupted")
        divergent = buffer.divergences()
        soft = soft_rhat = rare = False
        if crash is not None:
            failure = "sampler-error"
            message = f"{crash}; {buffer.complete_draws - offset} draws per chain were finished before it"
            if going_on is not None:
                origin = next(c for c in candidates if c.number == going_on.number)
                message += f" (running attempt {going_on.number}'s chains longer: its draws are kept as they were)"
                if going_on.acceptable:
                    message += f"; attempt {going_on.number}'s draws were acceptable as they were: returned"
                    attempts.append(Attempt(**base, failure=failure, message=message, outcome="gave-up"))
                    return finish(origin, "ok", message)
        else:
            failure, message = assess(buffer, policy, run_settings, table=table)
            noncenterable = noncentering_candidates(state.model, compiled.sites)
            after_rare = rare_from is not None and bool(attempts) and attempts[-1].attempt == rare_from
            remedying = bool(attempts) and attempts[-1].failure == "divergences" and not after_rare
            soft = failure is None and divergent > 0 and policy.retry_divergences and bool(noncenterable or remedying)
            # a few divergences, under the limit, where nothing is being non-centred or remedied: one higher
            # target_accept, as pm.sample's own warning advises ("Increase target_accept or reparameterize")
            rare = (failure is None and divergent > 0 and policy.retry_divergences and not soft and rare_from is None
                    and "target_accept" in policy.remedies and "target_accept" not in state.used)
            soft = soft or rare
            if soft:
                failure, message = "divergences", f"{divergent} divergent draws (under the limit)" + (
                    f" with centred hierarchical sites ({', '.join(noncenterable)})" if noncenterable else "")
            elif failure is None and quality.rhat is not None and quality.rhat > policy.goal and (
                    "more_draws" in policy.remedies and "more_draws" not in state.used):
                soft_rhat = True
                failure, message = "convergence", (
                    f"{quality.worst} has R-hat {quality.rhat:.4f}, over the goal of {policy.goal} (under the "
                    f"retry line {policy.rhat_limit})")
            if failure is None:
                attempts.append(Attempt(**base, outcome="accepted"))
                current = _Candidate(number, data, quality, True, True)
                if after_rare:  # the raise was for a few divergences: the better of the two attempts
                    chosen = _best([*(c for c in candidates if c.number == rare_from), current], policy)
                    return finish(chosen, "ok", "accepted" if chosen is current else (
                        f"accepted attempt {chosen.number}: the higher target_accept did not do better"))
                return finish(current, "ok", "accepted")
        if buffer.complete_draws and not (crash is not None and going_on is not None):
            if going_on is not None:  # the continuation holds its origin's draws and more: it replaces it
                candidates[:] = [c for c in candidates if c.number != going_on.number]
            candidates.append(_Candidate(number, data, quality, finished=crash is None,
                                         statistical=failure in STATISTICAL, acceptable=soft or soft_rhat))
        continuable = (crash is None and capabilities(state.backend).resume
                       and set(states) == set(range(settings.chains)))
        ran = (_Finished(number, buffer, states, buffer.complete_draws, last_seconds, acceptable=soft_rhat)
               if continuable else None)
        extend_by = extension(quality, policy) if continuable else None
        seconds_left = None if deadline is None else deadline - time.monotonic()
        if crash is not None and crash.kind != "numerical":
            decision = Decision(None, _NO_REMEDY[crash.kind], state)
        elif number == policy.max_attempts:
            decision = Decision(None, "the attempt cap is reached", state)
        elif soft_rhat and extend_by is None:
            decision = Decision(None, "these chains cannot be continued here (" + (
                "the engine keeps no sampler state to continue from" if not continuable else
                f"an R-hat over {EXTEND_RHAT_MAX} is not near convergence") + ")", state)
        else:
            only = ("more_draws",) if soft_rhat else ("target_accept",) if rare else None
            decision = _decide(failure, state, policy.replace(remedies=only) if only else policy,
                               compiled, dimension=dimension, seconds_left=seconds_left, last_seconds=last_seconds,
                               extend_by=extend_by)
            if rare and decision.remedy is not None:
                rare_from = number
                rare_warm = _retry_warm_start(states, settings, checkpoint, number)
        new_remedy, note = decision.remedy, decision.note
        if new_remedy is None and soft:
            attempts.append(Attempt(**base, failure=failure, outcome="accepted",
                                    message=f"{message}; accepted: {note} and the rate is under the limit"))
            return finish(_Candidate(number, data, quality, True, True), "ok",
                          f"accepted with {divergent} divergent draws")
        if new_remedy is None and soft_rhat:
            attempts.append(Attempt(**base, failure=failure, outcome="accepted",
                                    message=f"{message}; accepted under the retry line: {note}"))
            return finish(_Candidate(number, data, quality, True, True), "ok",
                          f"accepted with R-hat {quality.rhat:.4f}, over the goal of {policy.goal}")
        if new_remedy is None:
            attempts.append(Attempt(**base, failure=failure, message=f"{message}; {note}", outcome="gave-up"))
            return give_up(f"attempt {number} failed: {message}; {note}", failure, message,
                           _Candidate(number, data, quality, False, False), crash)
        skipped = f" ({'; '.join(decision.skipped)})" if decision.skipped else ""
        attempts.append(Attempt(**base, failure=failure, message=f"{message}; next: {note}{skipped}", outcome="retry"))
        last = (failure, message, state, compiled)
        next_remedy, state = new_remedy, decision.state
    raise AssertionError("unreachable: the loop returns or raises within max_attempts")


def _stop(data: Any, message: str, attempts: list[Attempt], report: Any, policy: Policy,
          warn: Callable[[str], None], budget: bool = False, interrupted: bool = False,
          cause: BaseException | None = None) -> Any:
    """Return the draws with a warning, or raise SamplingFailed carrying them (and ``cause``,
    the backend's error, as its ``__cause__``: its traceback is what a bug report needs)."""
    summary = f"{message} ({len(attempts)} attempt(s))"
    if (budget or interrupted) and data is not None:
        warn(f"Resilient: {summary}. The result holds only the finished draws.")
        return data
    improper = next((f for f in getattr(report, "findings", ()) if f.check == "improper-posterior"), None)
    said = "" if improper is None else (f" Preflight had warned: {improper.message}"
                                        + (f" Fix: {improper.fix}." if improper.fix else ""))
    raise SamplingFailed(f"Sampling failed: {summary}.{said} The attempt log, the preflight report and the best "
                         "draws that ran are attached to this error (.attempts, .preflight, .partial).",
                         attempts=tuple(attempts), preflight=report, partial=data) from cause
