"""Sampling with pm.sample in chunks: the per-draw collector, sample stats and PyMC's failures as SamplerError."""

from __future__ import annotations

import re
import signal
import time
from typing import Any, Callable, Sequence
import numpy as np
from resilient.backend import STAT_NAMES, Chunk, NUTSSettings
from resilient.errors import SamplerError
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from resilient.adapters.pymc.compiled import PyMCCompiledModel
    from resilient.adapters.pymc.control import _StopControl


#: PyMC's NUTS statistic for each of :data:`resilient.backend.STAT_NAMES`.
_STAT_SOURCES = {
    "diverging": "diverging",
    "tree_depth": "depth",
    "n_steps": "tree_size",
    "energy": "energy",
    "lp": "model_logp",
    "acceptance_rate": "mean_tree_accept",
    "step_size": "step_size",
}


_STAT_DTYPES = {"diverging": bool, "tree_depth": np.int64, "n_steps": np.int64}


def _extra_stat_dtypes() -> dict[str, np.dtype]:
    """PyMC's other per-draw NUTS statistics, with PyMC's names and dtypes (``energy_error``,
    ``max_energy_error``, ``reached_max_treedepth``, ``index_in_trajectory``, ``divergences``,
    ``perf_counter_diff`` ...): what ``pm.sample``'s DataTree has in sample_stats besides the
    seven of :data:`STAT_NAMES` (which it renames as we do). Like PyMC's converter, ``tune`` and
    the ``warning`` objects are left out. Every chunk carries every one of them (NaN, 0 or
    False where a draw lacks it), so the chunks of a run stack."""
    from pymc.step_methods.hmc.nuts import NUTS

    sources = set(_STAT_SOURCES.values())
    extra = {}
    for name, (dtype, shape) in NUTS.stats_dtypes_shapes.items():
        if name in sources or name in ("tune", "in_warmup", "warning") or shape not in ([], ()):
            continue
        kind = np.dtype(dtype)
        if kind.kind in "biuf":
            extra[name] = kind
    return extra


EXTRA_STATS: dict[str, np.dtype] = _extra_stat_dtypes()
#: Step-method statistics PyMC's converter leaves out of sample_stats (the warm-up flag, warning objects).
_NOT_STATS = ("tune", "in_warmup", "warning")


def _scalar_number(value: Any) -> bool:
    array = np.asarray(value)
    return array.dtype.kind in "biuf" and array.ndim == 0


def _missing(dtype: Any) -> Any:
    return np.nan if np.dtype(dtype).kind == "f" else np.zeros((), dtype=dtype).item()


#: PyMC's own failures that a remedy can address, and what they mean, for the sentence users read.
_NUMERICAL = {
    "Bad initial energy": "the energy at the chain's current position was not finite: the log density "
                          "recomputed there, or the kinetic energy under the newly adapted mass matrix, "
                          "overflowed (often a funnel or a chain drifting far out, especially in float32)",
    "Mass matrix contains zeros": "the adapted mass matrix has a zero variance (a latent the density ignores)",
    "Mass matrix contains non-finite": "the adapted mass matrix overflowed",
    "Initial evaluation of model at starting point failed": "the log density is not finite at a starting point",
}


def _sampler_failure(error: BaseException, workers: Any = None) -> SamplerError | None:
    """PyMC's sampler failing mid-run, as a :class:`SamplerError`; ``None`` for any other error.

    A chain worker's error reaches us as ``ParallelSamplingError`` (whatever the worker raised),
    a worker that died without a word as ``EOFError`` or ``ConnectionResetError`` on its pipe
    (``workers``, our ``mp_ctx``, knows its exit code); in-process chains raise PyMC's
    ``SamplingError``, the mass matrix's ``ValueError`` or ``MemoryError`` (any other error
    there may be ours, and keeps its own traceback).
    """
    from pymc.exceptions import SamplingError
    from pymc.sampling.parallel import ParallelSamplingError

    if isinstance(error, (EOFError, ConnectionError)):
        return _worker_death(getattr(workers, "processes", None) or ())
    chain = None
    cause: BaseException = error
    if isinstance(error, ParallelSamplingError):
        chain = getattr(error, "_chain", None)
        cause = error.__cause__ or error
    text = str(cause).strip() or type(cause).__name__
    detail = text.split(": SamplerWarning(")[0].splitlines()[0].rstrip(" .:!")
    hint = next((h for key, h in _NUMERICAL.items() if detail.startswith(key)), None)
    if isinstance(cause, MemoryError):
        kind = "resources"
    elif hint is not None and isinstance(cause, (SamplingError, ValueError)):
        kind = "numerical"
    elif cause is not error:
        kind = "crash"
    else:
        return None
    iteration = re.search(r"\bstep=(\d+)", text)
    where = "" if chain is None else f" chain {chain}"
    where += "" if iteration is None else f" at iteration {iteration.group(1)} (warm-up included)"
    return SamplerError(f"PyMC's NUTS stopped{where} with {type(cause).__name__}: {detail}"
                        + (f": {hint}" if hint else ""), backend="pymc", kind=kind, chain=chain)


def _worker_death(processes: Sequence[Any]) -> SamplerError:
    """Which chains' workers died and how, from the exit codes. PyMC makes one worker per chain,
    in chain order, and terminates the others (SIGTERM) when one fails."""
    for process in processes:
        process.join(timeout=1.0)
    dead = [(chain, p.exitcode) for chain, p in enumerate(processes)
            if p.exitcode not in (None, 0, -signal.SIGTERM)]
    if not dead:
        return SamplerError("a PyMC chain worker exited without reporting an error", backend="pymc", kind="crash")
    hows = []
    for chain, code in dead:
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            hows.append(f"chain {chain}: killed by {name}")
        else:
            hows.append(f"chain {chain}: exit code {code}")
    killed = any(code == -signal.SIGKILL for _, code in dead)
    who = "a PyMC chain worker" if len(dead) == 1 else f"{len(dead)} PyMC chain workers"
    return SamplerError(
        f"{who} died without reporting an error ({'; '.join(hows)})"
        + (": SIGKILL is what the out-of-memory killer sends" if killed else ""),
        backend="pymc", kind="resources" if killed else "crash", chain=dead[0][0])


class _ChainBuffer:
    """One chain's draws not yet handed over: either copied per draw (``values``, ``stats``) or,
    when PyMC records into its NDArray trace, the range ``begin:begin + size`` of that trace."""

    def __init__(self) -> None:
        self.warmup = True
        self.start = 0
        self.values: dict[str, list[np.ndarray]] = {}
        self.stats: dict[str, list[Any]] = {}
        self.size = 0
        self.trace: Any = None
        self.begin = 0


class _Collector:
    """``pm.sample``'s callback: buffers each chain's draws and hands chunks to ``on_chunk``.

    It runs in the main process (PyMC calls it there for parallel chains too, right after
    recording the draw in its NDArray trace). Per draw it only counts: a chunk's constrained
    values, deterministics and NUTS statistics are sliced out of that trace when the chunk is
    handed over, so the callback adds next to nothing to PyMC's own per-draw work. For any
    other trace each draw is copied (values computed here, statistics from ``draw.stats``).
    """

    def __init__(self, compiled: PyMCCompiledModel, settings: NUTSSettings,
                 on_chunk: Callable[[Chunk], bool]) -> None:
        self.compiled = compiled
        self.settings = settings
        self.on_chunk = on_chunk
        self.chunk_size = max(1, int(settings.chunk_size))
        self.buffers = {c: _ChainBuffer() for c in range(int(settings.chains))}
        self.delivered = {c: 0 for c in self.buffers}
        self.warmup_delivered = {c: 0 for c in self.buffers}
        self.reason: str | None = None
        self.control: _StopControl | None = None
        self.first_draw: float | None = None
        self.warmup_ended: dict[int, float] = {}
        self.names = compiled.sampled_names
        self.packing_error: str | None = None

    # PyMC calls callback(trace=..., draw=...)
    def __call__(self, trace: Any = None, draw: Any = None) -> None:
        control = self.control
        if control is not None:
            control.in_callback = True
        try:
            if self.reason is None and control is not None and control.reason is not None:
                self.reason = control.reason
            if self.reason is None:
                self._take(trace, draw)
                deadline = self.settings.deadline
                if self.reason is None and deadline is not None and time.monotonic() > deadline:
                    self.reason = "deadline"
        finally:
            if control is not None:
                control.in_callback = False
                control.progress()
        if self.reason is not None or (control is not None and control.reason is not None):
            if self.reason is None:
                self.reason = control.reason
            raise KeyboardInterrupt

    def _take(self, trace: Any, draw: Any) -> None:
        now = time.monotonic()
        if self.first_draw is None:
            self.first_draw = now
        chain = int(draw.chain)
        warmup = bool(draw.tuning)
        buffer = self.buffers[chain]
        if not warmup and chain not in self.warmup_ended:
            self.warmup_ended[chain] = now
        if buffer.warmup != warmup:
            if buffer.size:
                self._flush(chain)
            if self.reason is not None:
                return
            buffer.warmup, buffer.start = warmup, 0
        if _recorded_in(trace, self.names):
            if not buffer.size:
                buffer.trace, buffer.begin = trace, trace.draw_idx - 1
        else:
            values = self._values(draw)
            for name in self.names:
                buffer.values.setdefault(name, []).append(values[name])
            for name, value in _nuts_stats(draw.stats).items():
                buffer.stats.setdefault(name, []).append(value)
        buffer.size += 1
        if buffer.size >= self.chunk_size:
            self._flush(chain)

    def _values(self, draw: Any) -> dict[str, np.ndarray]:
        """Constrained values of this draw, computed from its unconstrained point (a discrete
        latent, untransformed, is in the point as it is)."""
        compiled = self.compiled
        inputs = [np.asarray(draw.point[value]).astype(dtype) for _, value, _, dtype, _ in compiled._layout]
        with np.errstate(all="ignore"):
            outputs = compiled._sampling_constrain_fn(*inputs)
        values = {name: np.array(v) for name, v in zip(compiled.posterior_names, outputs)}
        values.update({name: np.array(draw.point[name]) for name in compiled.discrete_latents})
        return values

    def _flush(self, chain: int) -> None:
        buffer = self.buffers[chain]
        if not buffer.size:
            return
        size = buffer.size
        if buffer.trace is not None:
            span = slice(buffer.begin, buffer.begin + size)
            posterior = {name: np.array(buffer.trace.samples[name][span]) for name in self.names}
            stats = _trace_stats(buffer.trace, span, size)
        else:
            posterior = {name: np.stack(buffer.values[name]) for name in self.names}
            stats = buffer.stats
        chunk = Chunk(
            chains=(chain,),
            start=buffer.start,
            warmup=buffer.warmup,
            posterior={name: values[None] for name, values in posterior.items() if name not in self.compiled.hidden},
            sample_stats={
                **{name: np.asarray(stats[name], dtype=_STAT_DTYPES.get(name, np.float64))[None]
                   for name in STAT_NAMES},
                **{name: np.asarray(stats[name], dtype=dtype)[None] for name, dtype in EXTRA_STATS.items()},
                # the compound step's other methods (Metropolis: accept, accepted, scaling), PyMC's names and dtypes
                **{name: np.asarray(stats[name])[None] for name in sorted(stats)
                   if name not in STAT_NAMES and name not in EXTRA_STATS},
            },
        )
        buffer.start += size
        buffer.values, buffer.stats, buffer.size, buffer.trace = {}, {}, 0, None
        (self.warmup_delivered if chunk.warmup else self.delivered)[chain] += size
        try:
            keep_going = self.on_chunk(chunk)
        except BaseException:
            self.reason = "error"  # never call on_chunk again
            raise
        if keep_going is False:
            self.reason = "stopped"

    def flush_all(self) -> None:
        """Hand over every chain's partial chunk (unless on_chunk asked to stop or failed)."""
        for chain in self.buffers:
            if self.reason in ("stopped", "error"):
                return
            self._flush(chain)

    def all_delivered(self) -> bool:
        return all(
            self.delivered[c] == self.settings.draws and self.warmup_delivered[c] == self.settings.tune
            for c in self.buffers
        )


def _recorded_in(trace: Any, names: Sequence[str]) -> bool:
    """Whether ``trace`` is PyMC's NDArray trace holding ``names`` and the samplers' statistics."""
    samples = getattr(trace, "samples", None)
    return (
        isinstance(samples, dict)
        and getattr(trace, "draw_idx", 0) >= 1
        and isinstance(getattr(trace, "_stats", None), list)
        and all(name in samples for name in names)
    )


def _sources() -> dict[str, str]:
    """Our name -> PyMC's, for STAT_NAMES and EXTRA_STATS."""
    return {**_STAT_SOURCES, **{name: name for name in EXTRA_STATS}}


def _missing_value(name: str) -> Any:
    if name in EXTRA_STATS:
        return _missing(EXTRA_STATS[name])
    return np.nan if name not in _STAT_DTYPES else 0


def _trace_stats(trace: Any, span: slice, size: int) -> dict[str, np.ndarray]:
    """STAT_NAMES and EXTRA_STATS for the draws ``span`` of an NDArray trace (one dict of arrays
    per sampler), then the other step methods' scalar statistics under their own names."""
    found: dict[str, np.ndarray] = {}
    sources = _sources()
    for sampler_stats in trace._stats:
        for name, source in sources.items():
            if name not in found and source in sampler_stats:
                found[name] = np.array(sampler_stats[source][span])
    for sampler_stats in trace._stats:
        for name, values in sampler_stats.items():
            if name not in found and name not in _NOT_STATS and name not in sources.values():
                array = np.asarray(values)
                if array.dtype.kind in "biuf" and array.ndim == 1:
                    found[name] = np.array(array[span])
    for name in (*STAT_NAMES, *EXTRA_STATS):
        if name not in found:
            found[name] = np.full(size, _missing_value(name))
    return found


def _nuts_stats(stats: Any) -> dict[str, Any]:
    """STAT_NAMES and EXTRA_STATS from PyMC's per-draw statistics (a list with one dict per step
    method), then the other step methods' scalar statistics under their own names."""
    found: dict[str, Any] = {}
    sources = _sources()
    samplers = stats if isinstance(stats, (list, tuple)) else [stats]
    for sampler_stats in samplers:
        for name, source in sources.items():
            if name not in found and source in sampler_stats:
                found[name] = sampler_stats[source]
    for name in (*STAT_NAMES, *EXTRA_STATS):
        found.setdefault(name, _missing_value(name))
    for sampler_stats in samplers:
        for name, value in sampler_stats.items():
            if name not in found and name not in _NOT_STATS and name not in sources.values() and _scalar_number(value):
                found[name] = value
    return found
