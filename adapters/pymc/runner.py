"""Sampling with pm.sample in chunks: the per-draw collector, sample stats and PyMC's failures as SamplerError."""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
from typing import Any, Callable, Iterator, Sequence
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
        #: the run's :class:`_Run` (set by run_nuts): where the step's order of x and a resumed state are
        self.run: _Run | None = None
        self.mass: dict[int, np.ndarray] = {}  # each chain's inverse mass matrix after warm-up, in x's order

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
        if not warmup and chain not in self.mass:
            self._take_mass(chain, draw.stats)
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
            state=None if buffer.warmup else self._state(chain, posterior, stats, size),
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

    def _take_mass(self, chain: int, stats: Any) -> None:
        samplers = stats if isinstance(stats, (list, tuple)) else [stats]
        for sampler_stats in samplers:
            matrix = sampler_stats.get(MASS_STAT) if isinstance(sampler_stats, dict) else None
            if isinstance(matrix, np.ndarray) and self.run is not None and self.run.order is not None:
                order = self.run.order
                back = np.empty_like(order)
                back[order] = np.arange(order.size)  # PyMC's order -> ours
                self.mass[chain] = matrix[back] if matrix.ndim == 1 else matrix[back][:, back]
                return

    def _state(self, chain: int, posterior: dict[str, np.ndarray], stats: dict[str, Any], size: int) -> Any:
        """The chain's :class:`~resilient.sampler_state.SamplerState` after this chunk (post-warm-up), or None
        where the mass matrix did not reach us (a compound step: NUTS and another method)."""
        mass = self.mass.get(chain)
        if mass is None:
            return None
        from resilient.sampler_state import SamplerState, cached_fingerprint

        compiled, settings = self.compiled, self.settings
        try:
            position = compiled.unconstrain({name: posterior[name][-1] for name in compiled.latent_names})
        except Exception:  # noqa: BLE001 - no state is better than a wrong one; the draws go on
            return None
        step = np.asarray(stats.get("step_size_bar", stats["step_size"]), np.float64)[-1]
        resumed = self.run.resume if self.run is not None and not self.run.warm else None
        return SamplerState(
            engine="pymc", chains=(chain,), positions=np.asarray(position, np.float64)[None],
            step_size=np.asarray([step]), draws_done=np.asarray([self.delivered[chain] + size], np.int64),
            tune_done=np.asarray([self.warmup_delivered[chain]], np.int64), inverse_mass_matrix=mass[None],
            mass_matrix=settings.mass_matrix, random_state={"seed": settings.random_seed},
            settings={"tune": int(settings.tune), "target_accept": float(settings.target_accept),
                      "max_tree_depth": int(settings.max_tree_depth), "mass_matrix": settings.mass_matrix,
                      "chains": int(settings.chains), "chunk_size": int(settings.chunk_size),
                      **({"resumed": True} if resumed is not None else {})},
            fingerprint=cached_fingerprint(compiled), latent_names=tuple(compiled.latent_names),
            # PyMC's `step_size` statistic after warm-up is the last warm-up step, not the one used
            # (`step_size_bar`): kept so that a resumed run's statistics read as the uninterrupted run's
            native={"step_size_statistic": np.asarray([np.asarray(stats["step_size"], np.float64)[-1]])})

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


# ---- the sampler state: step size, mass matrix and position per chain (resume) ----------------------

#: the per-draw statistic (sparse: present on one draw per chain) that carries the potential's inverse mass
#: matrix from a chain's worker to the collector: on the first draw after warm-up, when it stops changing
MASS_STAT = "resilient_inverse_mass"


def _inverse_mass(potential: Any) -> np.ndarray | None:
    """The inverse mass matrix PyMC's potential uses: the variance vector of a diagonal one, the covariance
    of a dense one; None for a potential of another kind."""
    for name in ("_var", "v"):
        value = getattr(potential, name, None)
        if value is not None and np.ndim(value) == 1:
            return np.array(value, dtype=np.float64)
    value = getattr(potential, "_cov", None)
    if value is not None and np.ndim(value) == 2:
        return np.array(value, dtype=np.float64)
    return None


def _state_nuts_class() -> type:
    """PyMC's NUTS with two additions, made once: it reports its potential's inverse mass matrix
    (:data:`MASS_STAT`) on the first draw after warm-up, and, for a resumed run (``_resilient_resume``),
    it takes the saved step size and mass matrix of the chain it finds itself at on its first step
    (each chain starts at its saved position, so the nearest saved position names the chain)."""
    global _STATE_NUTS
    if _STATE_NUTS is not None:
        return _STATE_NUTS
    from pymc.step_methods.hmc import integration
    from pymc.step_methods.hmc.nuts import NUTS
    from pymc.step_methods.hmc.quadpotential import QuadPotentialDiag, QuadPotentialFull

    class StateNUTS(NUTS):
        stats_dtypes_shapes = {**NUTS.stats_dtypes_shapes, MASS_STAT: (object, None)}
        _resilient_emit = False
        _resilient_placed = False
        #: (positions, step sizes, inverse mass matrices), each per chain in PyMC's order of the values
        _resilient_resume: Any = None

        def stop_tuning(self) -> None:
            super().stop_tuning()
            self._resilient_emit = True

        def reset_tuning(self, start: Any = None) -> None:
            super().reset_tuning(start)
            self._resilient_placed = False

        def _place(self, q0: Any) -> None:
            positions, steps, matrices = self._resilient_resume
            row = int(np.argmin(np.sum((positions - np.asarray(q0.data, np.float64)) ** 2, axis=1)))
            matrix = matrices[row]
            rng = self.rng.spawn(1)[0]
            self.potential = QuadPotentialFull(matrix, rng=rng) if np.ndim(matrix) == 2 else QuadPotentialDiag(
                matrix, rng=rng)
            self.integrator = integration.CpuLeapfrogIntegrator(self.potential, self._logp_dlogp_func)
            self.step_adapt._initial_step = float(steps[row][0])
            self.step_adapt.reset()
            self.step_adapt._log_step = np.log(float(steps[row][1]))  # only its statistic reads it now
            self._resilient_placed = True

        def astep(self, q0: Any) -> Any:
            if self._resilient_resume is not None and not self._resilient_placed:
                self._place(q0)
            point, stats = super().astep(q0)
            if self._resilient_emit:
                self._resilient_emit = False
                stats[0][MASS_STAT] = _inverse_mass(self.potential)
            return point, stats

    StateNUTS.__name__ = StateNUTS.__qualname__ = "StateNUTS"
    StateNUTS.__module__ = __name__
    _STATE_NUTS = StateNUTS
    return StateNUTS


_STATE_NUTS: type | None = None


def __getattr__(name: str) -> Any:  # pickle finds the step's class by name, in a chain worker too
    if name == "StateNUTS":
        return _state_nuts_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def with_state(step: Any, resume: Any = None) -> Any:
    """``step`` (PyMC's NUTS, from ``init_nuts``) as :func:`_state_nuts_class`'s NUTS, in place; with
    ``resume`` (positions, step sizes, matrices per chain in PyMC's order) it continues a saved run."""
    from pymc.step_methods.hmc.nuts import NUTS

    if type(step) is not NUTS:
        return step
    cls = _state_nuts_class()
    step.__class__ = cls
    step.stats_dtypes_shapes = dict(cls.stats_dtypes_shapes)
    step.stats_dtypes = [{name: dtype for name, (dtype, _) in cls.stats_dtypes_shapes.items()}]
    step._resilient_resume = resume
    return step


def pymc_order(compiled: PyMCCompiledModel, step: Any) -> np.ndarray:
    """Indices into our unconstrained vector ``x`` in the order PyMC ravels the step's values (``q.data``)."""
    blocks = {value: block for _, value, _, _, block in compiled._layout}
    return np.concatenate([np.arange(blocks[v.name].start, blocks[v.name].stop) for v in step.vars]
                          or [np.zeros(0, np.int64)]).astype(np.int64)


class _Run:
    """What the ``init_nuts`` hook does for the run in this thread: the compiled model, and the saved state
    of a resumed run (``warm``: of a warm start, whose step size dual averaging then adapts for the window)."""

    def __init__(self, compiled: PyMCCompiledModel, resume: Any = None, warm: bool = False) -> None:
        self.compiled = compiled
        self.resume = resume
        self.warm = warm
        self.order: np.ndarray | None = None  # PyMC's order of x, once the step exists

    def adopt(self, step: Any) -> Any:
        from pymc.step_methods.hmc.nuts import NUTS

        if type(step) is not NUTS:
            return step
        self.order = pymc_order(self.compiled, step)
        saved = None
        if self.resume is not None:
            order = self.order
            matrices = self.resume.inverse_mass_matrix
            matrices = (matrices[:, order] if np.ndim(matrices) == 2 else matrices[:, order][:, :, order])
            used = np.asarray(self.resume.step_size, np.float64)
            statistic = np.asarray(self.resume.native.get("step_size_statistic", used), np.float64)
            saved = (np.asarray(self.resume.positions, np.float64)[:, order], np.stack([used, statistic], axis=1),
                     matrices)
        return with_state(step, saved)


_CURRENT = threading.local()


def _hooked_init_nuts(*args: Any, **kwargs: Any) -> Any:
    """``pm.sample``'s ``init_nuts``, whose NUTS step is :func:`with_state`'s, on the compiled model's own
    ``logp_dlogp_function`` (:meth:`PyMCCompiledModel.reusing_value_grad`), where a Resilient run in this thread
    asked for it (:func:`hook_init_nuts`); PyMC's own, unchanged, for anyone else."""
    run = getattr(_CURRENT, "run", None)
    if run is None:
        return _ORIGINAL_INIT_NUTS(*args, **kwargs)
    # the NUTS step runs the log density and gradient preflight compiled (not compiled again)
    with run.compiled.reusing_value_grad(kwargs.get("model"), kwargs.get("compile_kwargs")):
        points, step = _ORIGINAL_INIT_NUTS(*args, **kwargs)
    return points, run.adopt(step)


_ORIGINAL_INIT_NUTS: Any = None


@contextlib.contextmanager
def hook_init_nuts(run: _Run) -> Iterator[_Run]:
    """Within this block, ``pm.sample`` in this thread builds its NUTS step through ``run``."""
    global _ORIGINAL_INIT_NUTS
    import pymc.sampling.mcmc as mcmc

    if _ORIGINAL_INIT_NUTS is None:
        _ORIGINAL_INIT_NUTS = mcmc.init_nuts
        mcmc.init_nuts = _hooked_init_nuts
    previous = getattr(_CURRENT, "run", None)
    _CURRENT.run = run
    try:
        yield run
    finally:
        _CURRENT.run = previous
