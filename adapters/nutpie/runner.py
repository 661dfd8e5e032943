"""nutpie's non-blocking sampler under a deadline: finished draws handed over in chunks, stops kept."""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from resilient.adapters.common import pymc_running_stats
from resilient.backend import Chunk, NUTSRun, NUTSSettings
from resilient.errors import SamplerError

if TYPE_CHECKING:
    from resilient.adapters.nutpie.compiled import NutpieCompiledModel

#: nutpie's statistic for each of :data:`resilient.backend.STAT_NAMES`.
STAT_SOURCES = {
    "diverging": "diverging",
    "tree_depth": "depth",
    "n_steps": "n_steps",
    "energy": "energy",
    "lp": "logp",
    "acceptance_rate": "mean_tree_accept",
    "step_size": "step_size",
}
_STAT_DTYPES = {"diverging": bool, "tree_depth": np.int64, "n_steps": np.int64}
#: nutpie statistics not passed on: per-draw text (a DataTree of numbers is what checkpoints store; the
#: divergence's draw and energy error are kept as ``divergence_draw`` and ``divergence_energy_error``).
_SKIPPED = {"divergence_message"}
#: For a PyMC model, PyMC's NUTS statistics that nutpie has under another name (``pm.sample(nuts_sampler="pymc")``'s
#: name -> nutpie's). ``energy_error``, ``max_energy_error``, ``index_in_trajectory`` and ``step_size_bar`` are
#: nutpie's names too.
PYMC_ALIASES = {"reached_max_treedepth": "maxdepth_reached"}
#: PyMC's NUTS statistics with no nutpie counterpart that a PyMC model's nutpie run still carries, honestly:
#: ``divergences`` is PyMC's running count of the chain's post-warm-up divergences (0 in warm-up), counted
#: here from ``diverging``; ``largest_eigval`` and ``smallest_eigval`` are NaN, as PyMC 6.4 gives them for
#: every mass matrix adaptation it has (only its base potential defines them) and as its docs define them
#: ("nan if it is not used").
PYMC_COMPUTED = ("divergences", "largest_eigval", "smallest_eigval")
#: PyMC's NUTS statistics a nutpie run leaves out: nutpie's Rust sampler does not time each draw, and a
#: time shared out from the polling of chunks would not be the draw's.
PYMC_UNAVAILABLE = ("perf_counter_diff", "perf_counter_start", "process_time_diff")

#: nutpie keeps its mass matrix per draw in the trace (``store_mass_matrix``) for models up to this many
#: unconstrained values, so a checkpoint's sampler state shows it; above, the state has positions and step sizes.
STORE_MASS_MATRIX_UP_TO = 200

#: seconds between looks at the trace while nutpie samples (at least; longer as the trace grows).
POLL_SECONDS = 0.5
MAX_POLL_SECONDS = 5.0


#: seconds :func:`_chain_seeds` waits for every chain's first call (each takes about a millisecond)
SEED_PROBE_SECONDS = 5.0


class _Starts:
    """nutpie's ``initial_point_func``: chain ``c`` starts at row ``c`` of the points the loop chose (in nutpie's
    layout), found by the seed nutpie hands it (``seeds``, from :func:`_chain_seeds`). A call with another seed (a
    retry after a start nutpie refused, or no ``seeds``) takes the next row in call order."""

    def __init__(self, points: np.ndarray, seeds: list[int] | None = None) -> None:
        self.points = points
        self.rows = {seed: row for row, seed in enumerate(seeds or ())}
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, seed: Any = None) -> np.ndarray:
        with self.lock:
            row = self.rows.pop(int(seed), None) if seed is not None else None
            if row is None:
                row = self.calls % len(self.points)
                self.calls += 1
        return self.points[row].copy()


class _Probed(Exception):
    """Raised by :func:`_chain_seeds`'s initial-point function: the chain has shown its seed."""


def _chain_seeds(model: NutpieCompiledModel, chains: int, options: dict[str, Any]) -> list[int] | None:
    """The seed nutpie hands each chain's initial-point function at its first call, in chain order; None where
    the probe does not see one per chain.

    nutpie starts its chains on a thread pool: with several cores their first calls arrive in any order, and a
    start given by call order lands on another chain from run to run (the same seed gave other draws under load).
    Each chain's seed is its own (its generator is the run's seed on the chain's stream); on one core the pool
    starts the chains one after another, in order. So the probe runs nutpie on one core with the same seed and
    settings, its initial-point function noting the seed and raising, which ends each chain at once."""
    import nutpie

    seen: list[int] = []

    def note(seed: Any = None) -> np.ndarray:
        seen.append(int(seed))
        raise _Probed

    try:
        sampler = nutpie.sample(model.with_starts(note), chains=chains, cores=1, progress_bar=False, blocking=False,
                                **options)
    except Exception:  # noqa: BLE001 - the run itself meets (and reports) whatever stopped the probe
        return None
    try:
        end = time.monotonic() + SEED_PROBE_SECONDS
        while len(seen) < chains and time.monotonic() < end:
            time.sleep(0.0005)
    finally:
        try:
            _quietly(sampler.cancel)
        except Exception:  # noqa: BLE001 - its chains failed, as the probe meant them to
            pass
    return seen if len(seen) == chains and len(set(seen)) == chains else None


class _Feeder:
    """Hands each chain's finished draws (warm-up first) to ``on_chunk``: at each look, the whole
    ``chunk_size`` pieces finished since the last one as one chunk; at the end, everything left.

    nutpie's trace pads chains that are behind with NaN; a chain's finished draws are those with a
    finite step size.
    """

    def __init__(self, model: NutpieCompiledModel, settings: NUTSSettings, on_chunk: Callable[[Chunk], bool]) -> None:
        self.names = [name for name in model.posterior_names if name not in model.hidden]
        self.settings = settings
        self.on_chunk = on_chunk
        self.size = max(1, int(settings.chunk_size))
        chains = int(settings.chains)
        self.sent = {(c, w): 0 for c in range(chains) for w in (True, False)}
        self.stopped = False
        self.warmup_ended: float | None = None
        # A PyMC model's run carries pm.sample's names besides ours (model.source is what compiled it).
        self.pymc_names = getattr(model, "source", None) == "pymc"
        self.divergences: dict[int, int] = {}  # post-warm-up divergences handed over so far, per chain
        # pm.sample(nuts_sampler="nutpie") keeps nutpie's own names (`depth`, `logp`, `mean_tree_accept`, `tuning`):
        # so does a PyMC model's run, besides ours. A NumPyro model's run has ours for those.
        self.skipped = _SKIPPED if self.pymc_names else _SKIPPED | {"tuning", *STAT_SOURCES.values()}
        self.model = model
        self.mass: dict[int, np.ndarray] = {}  # each chain's last mass matrix (inverse, diagonal), nutpie's order

    def feed(self, trace: Any, final: bool) -> bool:
        """Hand over the complete chunks in ``trace`` (all finished draws when ``final``); ``False``
        once ``on_chunk`` asked to stop."""
        groups = set(trace.children) if trace is not None else set()
        for chain in range(int(self.settings.chains)):
            for warmup, values, stats in ((True, "warmup_posterior", "warmup_sample_stats"),
                                          (False, "posterior", "sample_stats")):
                if stats not in groups or values not in groups:
                    continue
                stat_set = trace[stats].to_dataset()
                available = _finished(stat_set, chain)
                if not warmup and available and self.warmup_ended is None:
                    self.warmup_ended = time.monotonic()
                start = self.sent[(chain, warmup)]
                count = available - start
                if not final and not (warmup and available >= int(self.settings.tune)):
                    count -= count % self.size  # whole chunks while a phase runs; the rest when it ends
                if count > 0 and not self.stopped:
                    # All the finished draws since the last look, in one chunk: a fast sampler under a
                    # deadline must not spend its budget handing over (and checkpointing) small pieces.
                    self._send(trace[values].to_dataset(), stat_set, chain, warmup, start, count)
                if warmup and self.sent[(chain, True)] < min(available, int(self.settings.tune)):
                    break  # this chain's warm-up is not all handed over: its draws wait
        return not self.stopped

    def _send(self, values: Any, stats: Any, chain: int, warmup: bool, start: int, count: int) -> None:
        span = slice(start, start + count)
        posterior = {name: np.asarray(values[name].values[chain, span])[None] for name in self.names}
        sample_stats = {
            name: np.asarray(stats[source].values[chain, span], dtype=_STAT_DTYPES.get(name, np.float64))[None]
            for name, source in STAT_SOURCES.items()
        }
        for name in stats.data_vars:
            if name in self.skipped:
                continue
            array = np.asarray(stats[name].values[chain, span])
            if array.dtype.kind in "biuf" and array.ndim == 1:
                sample_stats[str(name)] = array[None]
        if self.pymc_names:
            sample_stats.update(self._pymc_stats(sample_stats, chain, warmup))
        if "mass_matrix_inv" in stats:  # nutpie writes it where it changes (NaN elsewhere): keep the last one
            rows = np.asarray(stats["mass_matrix_inv"].values[chain, span], np.float64)
            finite = np.flatnonzero(np.all(np.isfinite(rows), axis=-1)) if rows.ndim == 2 else []
            if len(finite):
                self.mass[chain] = rows[finite[-1]]
        state = None if warmup else self._state(values, stats, chain, start + count)
        chunk = Chunk(chains=(chain,), start=start, warmup=warmup, posterior=posterior, sample_stats=sample_stats,
                      state=state)
        self.sent[(chain, warmup)] = start + count
        try:
            keep_going = self.on_chunk(chunk)
        except BaseException:
            self.stopped = True
            raise
        if keep_going is False:
            self.stopped = True

    def _state(self, values: Any, stats: Any, chain: int, done: int) -> Any:
        """The chain's :class:`~resilient.sampler_state.SamplerState` after its draw ``done - 1``: the position
        (our unconstrained vector at that draw), nutpie's step size and, where the trace keeps it, its mass
        matrix; ``adaptation="re-adapt"``: nutpie takes neither back, a resumed run adapts again briefly."""
        from resilient.sampler_state import SamplerState, cached_fingerprint

        model, settings = self.model, self.settings
        try:
            point = {name: np.asarray(values[name].values[chain, done - 1]) for name in model.latent_names}
            position = np.asarray(model.unconstrain(point), np.float64)
        except Exception:  # noqa: BLE001 - no state is better than a wrong one; the draws go on
            return None
        matrix = None
        nutpie_order = self.mass.get(chain)
        if nutpie_order is not None and nutpie_order.shape == (model.dimension,):
            matrix = np.empty_like(nutpie_order)
            matrix[np.asarray(model.order)] = nutpie_order  # x_nutpie = x[order]
        return SamplerState(
            engine="nutpie", chains=(chain,), positions=position[None],
            step_size=np.asarray([float(stats["step_size"].values[chain, done - 1])]),
            draws_done=np.asarray([done], np.int64), tune_done=np.asarray([self.sent[(chain, True)]], np.int64),
            inverse_mass_matrix=None if matrix is None else matrix[None], mass_matrix=settings.mass_matrix,
            adaptation="re-adapt", random_state={"seed": settings.random_seed},
            settings={"tune": int(settings.tune), "target_accept": float(settings.target_accept),
                      "max_tree_depth": int(settings.max_tree_depth), "mass_matrix": settings.mass_matrix,
                      "chains": int(settings.chains), "chunk_size": int(settings.chunk_size)},
            fingerprint=cached_fingerprint(model), latent_names=tuple(model.latent_names))

    def _pymc_stats(self, sample_stats: dict[str, np.ndarray], chain: int, warmup: bool) -> dict[str, np.ndarray]:
        """PyMC's names for this chunk (:data:`PYMC_ALIASES`, :data:`PYMC_COMPUTED`), as pm.sample's NUTS gives them."""
        found = {name: sample_stats[source] for name, source in PYMC_ALIASES.items() if source in sample_stats}
        return {**found, **pymc_running_stats(sample_stats["diverging"], (chain,), warmup, self.divergences)}

    def delivered(self, warmup: bool) -> dict[int, int]:
        return {c: n for (c, w), n in self.sent.items() if w == warmup}


class _Interrupts:
    """Ctrl-C as a flag while nutpie samples (main thread, default handler only): the loop aborts at its next
    look and keeps the draws. A KeyboardInterrupt raised anywhere in the loop could land just after
    ``wait`` took the finished trace from nutpie (which checks signals while it waits), and the trace would
    be lost; a flag cannot land in the middle of anything."""

    def __init__(self) -> None:
        self.seen = False
        self._previous: Any = None

    def __enter__(self) -> "_Interrupts":
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.seen = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _abort_and_feed(sampler: Any, feeder: _Feeder) -> None:
    """Abort nutpie and hand over what it finished; a sampler whose results were already taken has none."""
    try:
        trace = _trace(_quietly(sampler.abort))
    except ValueError:  # "Sampler has no results to take"
        return
    feeder.feed(trace, final=True)


class _Arrays:
    """One group of a trace as NumPy arrays (name -> ``(chains, draws, ...)``), read as the feeder reads a DataTree
    group: ``group.to_dataset()[name].values``, ``name in group``, ``group.data_vars``."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self.data_vars = list(arrays)

    def to_dataset(self) -> "_Arrays":
        return self

    def __contains__(self, name: object) -> bool:
        return name in self.arrays

    def __getitem__(self, name: str) -> Any:
        return _Values(self.arrays[name])


class _Values:
    __slots__ = ("values",)

    def __init__(self, values: np.ndarray) -> None:
        self.values = values


class _ArrowTrace:
    """nutpie's raw trace (``return_raw_trace=True``: its Arrow record batches) as the four groups the feeder reads
    (``posterior``, ``sample_stats`` and their warm-up groups), each variable filled per chain by nutpie's own
    ``_add_arrow_data``, as ``_arrow_to_arviz`` fills them before it builds ArviZ objects. Those objects are what a
    look at the trace cost (0.26 s of a 0.36 s attempt on eight schools, every look and the last): the feeder only
    ever takes arrays out of them."""

    #: columns of nutpie's statistics batches that its own conversion leaves out of ``sample_stats``: the chain and
    #: draw indices (coordinates there) and the per-draw vectors of settings Resilient leaves off
    SKIPPED = ["chain", "draw", "gradient", "unconstrained_draw", "divergence_start", "divergence_end",
               "divergence_momentum", "divergence_start_gradient", "transformed_position", "transformed_gradient",
               "transformation_mu"]

    def __init__(self, results: Any) -> None:
        from nutpie.sample import _add_arrow_data

        draw_batches, stat_batches = results.get_arrow_trace()
        chains = len(draw_batches)
        tuning = [int(stat.column("tuning").to_numpy().sum()) for stat in stat_batches]
        longest_tune = max(tuning, default=0)
        longest = max((draw.num_rows - t for draw, t in zip(draw_batches, tuning)), default=0)
        groups: dict[str, dict[str, np.ndarray]] = {name: {} for name in (
            "warmup_posterior", "posterior", "warmup_sample_stats", "sample_stats")}
        dims: dict[str, Any] = {}
        for kind, batches, skipped in (("posterior", draw_batches, []), ("sample_stats", stat_batches, self.SKIPPED)):
            for chain, batch in enumerate(batches):
                tuned = tuning[chain]
                _add_arrow_data(groups[f"warmup_{kind}"], longest_tune, batch.slice(0, tuned), chain, chains, dims,
                                skipped)
                _add_arrow_data(groups[kind], longest, batch.slice(tuned, batch.num_rows - tuned), chain, chains, dims,
                                skipped)
        self.groups = {name: _Arrays(arrays) for name, arrays in groups.items()}
        self.children = set(self.groups)

    def __getitem__(self, name: str) -> _Arrays:
        return self.groups[name]


def _raw_traces() -> bool:
    """Whether this nutpie has the helper :class:`_ArrowTrace` fills its arrays with (a private one: a nutpie
    without it is run as before, its trace converted to a DataTree by nutpie)."""
    try:
        from nutpie.sample import _add_arrow_data  # noqa: F401
    except ImportError:
        return False
    return True


def _trace(raw: Any) -> Any:
    """What the feeder reads from one of the sampler's results: a raw one as :class:`_ArrowTrace`, a DataTree (a
    nutpie run without ``return_raw_trace``) as it is."""
    return _ArrowTrace(raw) if raw is not None and hasattr(raw, "get_arrow_trace") else raw


def _finished(stats: Any, chain: int) -> int:
    step = np.asarray(stats["step_size"].values[chain], dtype=np.float64)
    finite = np.isfinite(step)
    return int(finite.size if finite.all() else np.argmin(finite))


def _quietly(method: Callable, **kwargs: Any) -> Any:
    """One of the sampler's calls that convert its trace to a DataTree, without ArviZ's conventions
    warnings (a partial trace can have fewer draws than chains)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return method(**kwargs)


def _seed(settings: NUTSSettings) -> int:
    if settings.random_seed is None:
        return int(np.random.default_rng().integers(2**31))
    return int(settings.random_seed)


def run_nutpie(model: NutpieCompiledModel, settings: NUTSSettings, on_chunk: Callable[[Chunk], bool]) -> NUTSRun:
    """nutpie's NUTS in the background (:func:`_run_nutpie`); with ``settings.warm_state``, a warm start checked by
    :func:`resilient.warm_start.run_warm`, which falls back to the full warm-up."""
    if settings.warm_state is not None:
        from resilient.warm_start import run_warm

        return run_warm(model, "nutpie", settings, on_chunk,
                        lambda s, c, warm=None, window=0, reestimate=False: _run_nutpie(model, s, c, warm, window))
    return _run_nutpie(model, settings, on_chunk)


def _run_nutpie(model: NutpieCompiledModel, settings: NUTSSettings, on_chunk: Callable[[Chunk], bool],
                warm: Any = None, window: int = 0) -> NUTSRun:
    """nutpie's NUTS in the background, polled every :data:`POLL_SECONDS` (or until the deadline).

    ``warm`` (a :class:`~resilient.sampler_state.SamplerState`) and ``window``: a warm start. nutpie takes no mass
    matrix: the chains start at ``settings.initial_points`` (the saved positions) with the saved step size (the
    median over chains: nutpie's ``initial_step`` is one number) and nutpie adapts its mass matrix and step size
    again, on its own schedule, for ``window`` iterations instead of ``settings.tune``."""
    import nutpie

    from resilient.engine import mass_matrices

    extra_settings: dict[str, Any] = {}
    if warm is not None:
        settings = replace(settings, tune=int(window))
        extra_settings["initial_step"] = float(np.median(np.asarray(warm.step_size, np.float64)))
    resumed = settings.resume_state
    if resumed is not None:
        # nutpie takes no adaptation back: the chains start at their saved positions with the saved step size
        # (the median over chains: nutpie's initial step is one number) and adapt again for `tune` iterations.
        if getattr(resumed, "engine", None) != "nutpie":
            raise ValueError(f"`resume_state` must be the SamplerState of a nutpie run, got one of "
                             f"{getattr(resumed, 'engine', None)!r}.")
        settings = replace(settings, initial_points=np.asarray(resumed.positions, np.float64))
        extra_settings["initial_step"] = float(np.median(resumed.step_size))
    if model.dimension <= STORE_MASS_MATRIX_UP_TO:
        extra_settings["store_mass_matrix"] = True

    mass_matrix = settings.mass_matrix
    if mass_matrix not in mass_matrices("nutpie"):
        raise ValueError(f"nutpie's mass matrix must be one of {mass_matrices('nutpie')}, got {mass_matrix!r}.")
    if int(settings.tune) < 1:
        raise ValueError("nutpie needs at least one warm-up draw (tune >= 1): with tune=0 its Rust sampler "
                         "panics (nuts-rs 0.18 asserts early_end < num_tune). Use tune >= 1 or engine='pymc'.")
    chains = int(settings.chains)
    cores = max(1, min(chains, settings.cores or model.cores or os.cpu_count() or 1))
    compiled = model.nutpie_model
    options = dict(draws=int(settings.draws), tune=int(settings.tune), seed=_seed(settings), save_warmup=True,
                   adaptation=mass_matrix, target_accept=float(settings.target_accept),
                   maxdepth=int(settings.max_tree_depth), return_raw_trace=_raw_traces(), **extra_settings)
    if settings.initial_points is not None:
        points = np.asarray(settings.initial_points, dtype=np.float64)
        if points.shape != (chains, model.dimension):
            raise ValueError(f"initial_points must have shape (chains, dimension) = ({chains}, {model.dimension}), "
                             f"got {points.shape}.")
        seeds = _chain_seeds(model, chains, options) if cores > 1 and chains > 1 else None
        compiled = model.with_starts(_Starts(np.ascontiguousarray(points[:, model.order]), seeds))
    feeder = _Feeder(model, settings, on_chunk)
    started = time.monotonic()
    reason = ""
    done = False
    poll = POLL_SECONDS
    with _Interrupts() as interrupts:  # from before nutpie starts: Ctrl-C must never leave it running
        sampler = nutpie.sample(compiled, chains=chains, cores=cores, progress_bar=bool(settings.progressbar),
                                blocking=False, **options)
        try:
            while True:
                remaining = None if settings.deadline is None else settings.deadline - time.monotonic()
                if interrupts.seen or (remaining is not None and remaining <= 0):
                    reason = "interrupted" if interrupts.seen else "deadline"
                    _abort_and_feed(sampler, feeder)
                    done = True
                    break
                try:
                    trace = _trace(_quietly(sampler.wait, timeout=poll if remaining is None else min(poll, remaining)))
                except TimeoutError:
                    looked = time.monotonic()
                    if not feeder.feed(_trace(_quietly(sampler.inspect)), final=False):
                        reason = "stopped"
                        break
                    # A look converts the whole trace so far: wait longer as it grows, so looking costs
                    # at most about a fifth of the run (and Ctrl-C waits at most MAX_POLL_SECONDS).
                    poll = min(MAX_POLL_SECONDS, max(POLL_SECONDS, 4.0 * (time.monotonic() - looked)))
                    continue
                feeder.feed(trace, final=True)
                done = True
                break
        except KeyboardInterrupt:  # raised outside the polling loop (Ctrl-C from a thread that is not the main one)
            reason = "interrupted"
            _abort_and_feed(sampler, feeder)
            done = True
        except BaseException as error:
            if not isinstance(error, (RuntimeError, ValueError)) and type(error).__name__ != "PanicException":
                raise
            if not feeder.stopped:
                try:
                    feeder.feed(_trace(_quietly(sampler.inspect)), final=True)
                except Exception:  # noqa: BLE001 - the sampler's own error is the one to report
                    pass
            raise SamplerError(f"nutpie stopped with {type(error).__name__}: {error}", backend="nutpie",
                               kind="numerical" if "logp" in str(error).lower() or "energy" in str(error).lower()
                               else "crash") from error
        finally:
            if not done:
                sampler.cancel()
    finished = time.monotonic()
    if feeder.stopped and not reason:
        reason = "stopped"
    drawn, warm = feeder.delivered(False), feeder.delivered(True)
    complete = not reason and all(drawn[c] == settings.draws and warm[c] == settings.tune for c in range(chains))
    warmup_end = feeder.warmup_ended or finished
    return NUTSRun(
        completed=complete,
        reason="" if complete else (reason or "interrupted"),
        warmup_seconds=max(0.0, warmup_end - started),
        sampling_seconds=max(0.0, finished - warmup_end),
        extra={"engine": "nutpie", "nutpie": model.describe, "cores": cores, "mass_matrix": mass_matrix, "draws_delivered": drawn,
               "warmup_draws_delivered": warm, "nutpie_compile_seconds": model.compile_seconds},
    )
