"""Many fits of one model: :func:`sample_many` runs one resilient fit per data set on dask.distributed.

Two sides, one module:

* the worker side, :func:`run_fit`: one fit under the run's :class:`~resilient.policy.Policy`, with
  the model compiled once per worker process and reused (:func:`sampler_for`; a new data set goes
  through the adapter's optional ``CompiledModel.with_data(args, kwargs)`` when it has one, else it
  is compiled);
* the client side, :class:`FitRunner`: keeps a bounded number of fits in flight, writes each result to
  disk as it arrives (``fits/<fit_id>.nc`` and a row of ``summary.csv``), skips fits a killed run
  already finished, and accounts for every fit: a fit that fails its policy is a ``failed`` row with
  its reason, one whose workers kept dying is ``lost``, none blocks the batch.

:mod:`resilient.sbc` runs simulation-based calibration on the same runner.

Dependency rule: numpy and the standard library at import time; dask.distributed, the backends and
ArviZ are imported inside functions.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import sys
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from resilient.errors import ResilientError
from resilient.loading import load_reference  # the one loader of model files, shared with the CLI
from resilient.loading import split_reference as _split_reference
from resilient.options import RunOptions
from resilient.policy import Policy

__all__ = [
    "sample_many", "ManyResult", "ModelSpec", "FitJob", "FitRunner", "run_fit", "sampler_for", "load_reference",
    "SUMMARY_COLUMNS", "FIT_STATUSES", "read_summary", "worker_environment",
]

#: what became of a fit. ``ok``: accepted by the loop; ``exhausted``: the caps ran out on a statistical
#: failure and the best attempt's draws were kept (their diagnostics fail); ``budget``: the policy's
#: time budget ran out (the finished draws are kept); ``failed``: the fit raised (preflight, model or
#: sampler error: nothing usable); ``lost``: the fit never finished because its worker died every
#: time Dask ran it, or it ran past ``fit_timeout`` (retried when the run is restarted).
FIT_STATUSES = ("ok", "exhausted", "budget", "failed", "lost")

#: columns of ``summary.csv``, one row per fit, in this order.
SUMMARY_COLUMNS = (
    "fit_id", "index", "status", "reason", "backend", "seconds", "compile", "compile_seconds", "attempts",
    "chains", "draws", "divergences", "max_rhat", "min_ess_bulk", "random_seed", "starts", "worker",
    "data_hash", "file",
)

_RUN_STATUS = {"ok": "ok", "failed": "exhausted", "budget": "budget", "interrupted": "failed"}


# ------------------------------------------------------------------------------------------------
# Shipping a model to workers
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSpec:
    """How a worker gets the model: a ``reference`` (``"path/to/file.py:name"`` or
    ``"package.module:name"``) it loads itself, or the object (pickled by cloudpickle: by reference
    for a function of an importable module, by value otherwise). ``key`` names it in the per-worker
    compile cache."""

    key: str
    reference: str | None = None
    obj: Any = None

    @classmethod
    def of(cls, model: Any) -> "ModelSpec":
        if isinstance(model, ModelSpec):
            return model
        if isinstance(model, str):
            _split_reference(model)  # says what is wrong with a malformed reference, here and not on a worker
            path, _, name = model.rpartition(":")
            if path.endswith(".py"):
                path = str(Path(path).resolve())
            reference = f"{path}:{name}"
            return cls(key=f"ref:{reference}", reference=reference)
        from resilient.resolve import is_pymc_model

        if is_pymc_model(model):
            raise ResilientError(
                "`model` must be a function for many fits, got a pm.Model, which carries one data set. Pass a "
                "function that builds and returns the pm.Model from its arguments (def model(x, y=None): ...).")
        if not callable(model):
            raise ResilientError(f"`model` must be a model function or a 'file.py:name' reference, got "
                                 f"{type(model).__name__}.")
        import cloudpickle

        payload = cloudpickle.dumps(model)
        return cls(key="obj:" + hashlib.sha1(payload).hexdigest(), obj=model)

    @property
    def name(self) -> str:
        if self.reference is not None:
            return self.reference.rpartition(":")[2]
        return getattr(self.obj, "__name__", "model")

    def load(self) -> Any:
        return self.obj if self.reference is None else load_reference(self.reference)


# ------------------------------------------------------------------------------------------------
# The worker side
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FitJob:
    """One fit, as shipped to a worker. ``data``: the model function's keyword arguments;
    ``simulation``: an object with ``simulate(job) -> (data, context)`` and
    ``records(job, datatree, context) -> list[dict]`` (SBC's prior draw and ranks), or None."""

    fit_id: str
    index: int
    model: ModelSpec
    backend: str | None
    data: Mapping[str, Any] | None
    run: Mapping[str, Any]  # draws, tune, chains, target_accept, max_tree_depth, policy, fix, float32
    random_seed: int
    keep_draws: bool = True
    topic: str | None = None
    simulation: Any = None


#: per worker process: compiled samplers by (model, backend, options, data), least recently used first.
_SAMPLERS: "OrderedDict[tuple, Any]" = OrderedDict()
#: per worker process: the samplers compiled (not derived by ``with_data``) for (model, backend, options),
#: newest first, at most ``_CACHE_SIZE``: their compiled models' ``with_data`` is asked for the next data
#: sets (several, for data sets of a few different shapes).
_BASES: dict[tuple, list] = {}
_CACHE_SIZE = 4
_CACHE_LOCK = threading.Lock()


def data_fingerprint(data: Mapping[str, Any] | None) -> str:
    """A short hash of a data set's values (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha1()
    for key in sorted(data or {}):
        value = data[key]
        digest.update(key.encode())
        if value is None:
            digest.update(b"None")
            continue
        try:
            array = np.ascontiguousarray(np.asarray(value))
        except Exception:  # noqa: BLE001 - an object numpy cannot hold: its repr stands in
            digest.update(repr(value).encode())
            continue
        if array.dtype == object:
            digest.update(repr(value).encode())
        else:
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def sampler_for(spec: ModelSpec, backend: str | None, data: Mapping[str, Any], *, fix: bool = True,
                float32: bool = False, engine: str = "auto") -> tuple[Any, str, float]:
    """A :class:`~resilient.sampling.CompiledSampler` for ``data``: ``(sampler, how, seconds)``.

    ``how`` is ``"reused"`` (this data set was compiled before in this process), ``"first"`` (the
    first compile of this model here), ``"with-data"`` (the first compile's
    ``compiled.with_data(args, kwargs)`` gave the model for the new data: compile once, sample many)
    or ``"recompiled"`` (no adapter ``with_data``, or it refused the data set: compiled again). The
    NumPyro adapter's ``with_data`` reuses the jitted programs for data arrays of the same shapes and
    dtypes and the same other arguments; the last few compiled bases are asked, so data sets of a few
    shapes each compile once.
    """
    from resilient.backend import capabilities
    from resilient.engine import model_backend
    from resilient.model import Model, NativeModel
    from resilient.resolve import default_backend, resolve_model
    from resilient.sampling import CompiledSampler

    started = time.perf_counter()
    options = (bool(fix), bool(float32), engine)
    key = (spec.key, backend, options, data_fingerprint(data))
    with _CACHE_LOCK:
        if key in _SAMPLERS:
            _SAMPLERS.move_to_end(key)
            return _SAMPLERS[key], "reused", time.perf_counter() - started
        bases = list(_BASES.get(key[:3], ()))
    function = spec.load()
    resolved = resolve_model(function, (), dict(data), fix=fix, float32=float32)
    native = resolved.backend if isinstance(resolved, NativeModel) else None
    name = default_backend(resolved, model_backend(engine, backend, native))
    sampler = None
    how = "recompiled" if bases else "first"
    # with_data takes the model function's data; a PyMC builder's arguments are not the pm.Model's data
    takes_data = isinstance(resolved, Model) or (isinstance(resolved, NativeModel)
                                                 and capabilities(resolved.backend).with_data)
    for base in bases if takes_data else ():
        if not hasattr(base.compiled, "with_data"):
            break
        try:
            compiled = base.compiled.with_data(tuple(resolved.args), dict(resolved.kwargs))
        except NotImplementedError:
            break  # the adapter cannot for this model: compile
        except Exception:  # noqa: BLE001 - another program (new shapes) or bad data: the next base, or compile (which reports it)
            continue
        sampler = CompiledSampler(resolved, name, engine=engine)
        sampler.cache[(name, resolved)] = compiled
        how = "with-data"
        break
    if sampler is None:
        sampler = CompiledSampler(resolved, name, engine=engine)
        sampler.compiled  # noqa: B018  (compile now, so the time is counted here)
    with _CACHE_LOCK:
        if how != "with-data":
            _BASES[key[:3]] = [sampler, *_BASES.get(key[:3], ())][:_CACHE_SIZE]
        _SAMPLERS[key] = sampler
        while len(_SAMPLERS) > _CACHE_SIZE:
            _SAMPLERS.popitem(last=False)
    return sampler, how, time.perf_counter() - started


def _log_start(job: FitJob) -> str:
    """Tell the client (through the scheduler's event log) that this fit started, and where."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"
    if job.topic:
        worker.log_event(job.topic, {"event": "start", "fit_id": job.fit_id, "worker": worker.address,
                                     "pid": os.getpid(), "time": time.time()})
    return worker.address


_FORK_GUARDED = False


def _guard_forks() -> None:
    """Make forking safe for the locks a forked PyMC chain process needs: numba's compiler lock and
    llvmlite's LLVM lock (in that order, as numba takes them). Another thread of the worker (Dask's
    event loop, a garbage collection freeing an LLVM object) can hold one at the moment of the fork;
    the child then inherits it locked and waits forever (seen: a chain stuck in llvmlite's lock while
    numba loaded a cached function, about one fit in 200 with a busy logging thread). Like Python's own
    locks, each is taken before the fork and released after it, in the parent and in the child.
    Registered once per process, only where PyMC is loaded."""
    global _FORK_GUARDED
    if _FORK_GUARDED or "pymc" not in sys.modules or not hasattr(os, "register_at_fork"):
        return
    locks = []
    try:
        from numba.core.compiler_lock import global_compiler_lock

        locks.append(global_compiler_lock._lock)  # noqa: SLF001
    except (ImportError, AttributeError):
        pass
    try:
        from llvmlite.binding import ffi

        locks.append(ffi.lib._lock._lock)  # noqa: SLF001 - the RLock inside llvmlite's _LLVMLock
    except (ImportError, AttributeError):
        pass
    if not locks:
        return

    def before() -> None:
        for lock in locks:
            lock.acquire()

    def after_in_parent() -> None:
        for lock in reversed(locks):
            lock.release()

    def after_in_child() -> None:
        for lock in reversed(locks):
            reinit = getattr(lock, "_at_fork_reinit", None)
            reinit() if reinit is not None else lock.release()

    os.register_at_fork(before=before, after_in_parent=after_in_parent, after_in_child=after_in_child)
    _FORK_GUARDED = True


class _ChildProcessesAllowed:
    """Lets a fit start child processes the way it would outside Dask (PyMC runs chains in processes).

    Dask workers are daemonic processes, which multiprocessing forbids to have children, and they
    default to the "spawn" start method, with which each PyMC chain process imports PyMC again and
    receives the compiled model by pickle (about 3 s more per fit, measured). For the fit, the worker
    is non-daemonic and starts children by "fork" (the platform default outside Dask, where available);
    the children die with their parent (the PyMC adapter sets PR_SET_PDEATHSIG), which is what the
    daemon rule protects, and :func:`_guard_forks` keeps the locks they need from being inherited held.
    Both settings are restored when the fit ends. Workers run one fit at a time
    (one thread each), so no other task sees the change.
    """

    def __enter__(self) -> None:
        import multiprocessing

        self.config = multiprocessing.current_process()._config  # noqa: SLF001
        self.daemon = self.config.get("daemon")
        self.config["daemon"] = False
        self.method = multiprocessing.get_start_method(allow_none=True)
        if "fork" in multiprocessing.get_all_start_methods() and self.method != "fork":
            multiprocessing.set_start_method("fork", force=True)
        _guard_forks()

    def __exit__(self, *exc: Any) -> None:
        import multiprocessing

        if self.daemon is None:
            self.config.pop("daemon", None)
        else:
            self.config["daemon"] = self.daemon
        if multiprocessing.get_start_method(allow_none=True) != self.method:
            multiprocessing.set_start_method(self.method, force=True)


def run_fit(job: FitJob) -> dict[str, Any]:
    """Run one fit on this worker; returns ``{"row": ..., "netcdf": bytes | None, "records": [...]}``.

    Never raises for a model's or a sampler's failure: that is a ``failed`` row with its reason. It
    raises only when the process itself is in trouble, which Dask then retries on another worker.
    """
    started = time.perf_counter()
    worker = _log_start(job)
    row: dict[str, Any] = {
        "fit_id": job.fit_id, "index": job.index, "status": "failed", "reason": "", "backend": job.backend or "",
        "seconds": 0.0, "compile": "", "compile_seconds": 0.0, "attempts": 0, "chains": job.run.get("chains"),
        "draws": job.run.get("draws"), "divergences": None, "max_rhat": None, "min_ess_bulk": None,
        "random_seed": job.random_seed, "starts": 1, "worker": worker, "data_hash": "", "file": "",
    }
    result: dict[str, Any] = {"row": row, "netcdf": None, "records": []}
    data_tree = None
    context = None
    try:
        data = dict(job.data or {})
        if job.simulation is not None:
            data, context = job.simulation.simulate(job)
        row["data_hash"] = data_fingerprint(data)
        sampler, how, seconds = sampler_for(job.model, job.backend, data, fix=job.run.get("fix", True),
                                            float32=job.run.get("float32", False),
                                            engine=job.run.get("engine", "auto"))
        row.update(compile=how, compile_seconds=round(seconds, 4), backend=sampler.backend)
        data_tree = _sample(sampler, job, row)
        if data_tree is not None and job.simulation is not None and row["status"] != "failed":
            result["records"] = job.simulation.records(job, data_tree, context)
    except Exception as error:  # noqa: BLE001 - recorded as this fit's failure, never raised into the batch
        row.update(status="failed", reason=_reason(error))
    row["seconds"] = round(time.perf_counter() - started, 4)
    if data_tree is not None:
        _describe(data_tree, row)
        if job.keep_draws:
            result["netcdf"] = _netcdf_bytes(data_tree)
    return result


def _sample(sampler: Any, job: FitJob, row: dict[str, Any]) -> Any:
    """The loop on this data set; fills ``row``'s status and reason; the DataTree (partial draws of a
    failed fit too, when there are any) or None."""
    from resilient import record
    from resilient.errors import SamplingFailed

    run = dict(job.run)
    policy = run.get("policy") or Policy()
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught, _ChildProcessesAllowed():
            warnings.simplefilter("always")
            data = sampler.sample(draws=run["draws"], tune=run["tune"], chains=run["chains"],
                                  target_accept=run.get("target_accept", 0.8), random_seed=job.random_seed,
                                  progressbar=False, max_tree_depth=run.get("max_tree_depth", 10), policy=policy)
    except SamplingFailed as error:
        row.update(status="failed", reason=_reason(error), attempts=len(error.attempts))
        return error.partial
    run_info = record.read_run(data) or {}
    row["status"] = _RUN_STATUS.get(run_info.get("status", "ok"), "failed")
    row["attempts"] = len(record.read_attempts(data))
    notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if row["status"] != "ok":  # the loop's warning says it all when there is one; else the run's message
        row["reason"] = " ".join((notes[-1] if notes else run_info.get("message") or "").split())[:2000]
    return data


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:2000]


def _describe(data: Any, row: dict[str, Any]) -> None:
    """Divergences, the worst R-hat and the smallest bulk ESS of the scalar parameters, into ``row``."""
    try:
        stats = data["sample_stats"].to_dataset() if "sample_stats" in data.children else None
        if stats is not None and "diverging" in stats:
            row["divergences"] = int(np.asarray(stats["diverging"]).sum())
        posterior = data["posterior"].to_dataset()
    except (KeyError, AttributeError):
        return
    from arviz_stats.base import array_stats

    rhats, esses = [], []
    for name in posterior.data_vars:
        values = np.asarray(posterior[name], float)
        row["chains"], row["draws"] = int(values.shape[0]), int(values.shape[1])
        if values.shape[0] < 2 or values.shape[1] < 8:
            continue
        flat = values.reshape(values.shape[0], values.shape[1], -1)
        for index in range(flat.shape[2]):
            ary = flat[:, :, index]
            if not np.all(np.isfinite(ary)) or np.ptp(ary) == 0:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rhats.append(float(array_stats.rhat(ary, chain_axis=0, draw_axis=1)))
                esses.append(float(array_stats.ess(ary, chain_axis=0, draw_axis=1, method="bulk")))
    if rhats:
        row["max_rhat"] = round(max(rhats), 5)
        row["min_ess_bulk"] = round(min(esses), 1)


def _netcdf_bytes(data: Any) -> bytes:
    """The DataTree as netCDF4 bytes (written on the worker, so any client can store it)."""
    handle, path = tempfile.mkstemp(suffix=".nc", prefix="resilient-fit-")
    os.close(handle)
    try:
        data.to_netcdf(path, engine="h5netcdf")
        return Path(path).read_bytes()
    finally:
        os.unlink(path)


# ------------------------------------------------------------------------------------------------
# The client side: the store
# ------------------------------------------------------------------------------------------------

def read_summary(out: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of ``out/summary.csv`` (a truncated last line, left by a killed run, is dropped);
    the last row of each fit wins (a fit ``lost`` and run again has two)."""
    return list(_read_rows(Path(out) / "summary.csv", SUMMARY_COLUMNS, key="fit_id").values())


def _read_rows(path: Path, columns: Sequence[str], key: str | tuple[str, ...]) -> dict[Any, dict[str, str]]:
    rows: dict[Any, dict[str, str]] = {}
    if not path.is_file():
        return rows
    text = path.read_text()
    complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(complete))
    if reader.fieldnames is not None and tuple(reader.fieldnames) != tuple(columns):
        raise ResilientError(f"{path} has columns {reader.fieldnames}, not Resilient's {list(columns)}: this folder "
                             "holds something else. Give another --out folder.")
    for row in reader:
        if None in row or any(row.get(c) is None for c in columns):
            continue
        identity = row[key] if isinstance(key, str) else tuple(row[k] for k in key)
        rows[identity] = row
    return rows


class _Table:
    """A CSV file that rows are appended to as they arrive (flushed and fsynced: a killed run keeps
    every row it wrote). Opening it cleans a truncated last line."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path = path
        self.columns = tuple(columns)
        if path.is_file():
            text = path.read_text()
            if text and not text.endswith("\n"):
                path.write_text(text[: text.rfind("\n") + 1])
        if not path.is_file() or path.stat().st_size == 0:
            path.write_text(",".join(self.columns) + "\n")
        self.handle = open(path, "a", newline="")  # noqa: SIM115 - closed by close()
        self.writer = csv.DictWriter(self.handle, fieldnames=self.columns, extrasaction="ignore")

    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.writer.writerow({k: _cell(row.get(k)) for k in self.columns})
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan"
    return value


class FitStore:
    """The output folder: ``manifest.json`` (what the run is), ``summary.csv`` (one row per fit, the
    "done" mark), ``fits/<fit_id>.nc`` and, for SBC, a table of per-fit records (``ranks.csv``)."""

    def __init__(self, out: str | os.PathLike, manifest: Mapping[str, Any], *, records: str | None = None,
                 record_columns: Sequence[str] = ()) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "fits").mkdir(exist_ok=True)
        self._check_manifest(dict(manifest))
        self.done = {fit_id: row for fit_id, row in _read_rows(self.out / "summary.csv", SUMMARY_COLUMNS,
                                                                "fit_id").items() if row["status"] != "lost"}
        self.summary = _Table(self.out / "summary.csv", SUMMARY_COLUMNS)
        self.records = _Table(self.out / records, record_columns) if records else None

    def _check_manifest(self, manifest: dict[str, Any]) -> None:
        path = self.out / "manifest.json"
        text = json.dumps(manifest, indent=2, sort_keys=True, default=str)
        if path.is_file():
            before = json.loads(path.read_text())
            now = json.loads(text)
            changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            if changed:
                raise ResilientError(
                    f"{self.out} holds a run with other settings ({', '.join(changed)} differ), so its finished fits "
                    "cannot be reused. Give a new output folder, or the same settings to continue that run.")
            return
        path.write_text(text)

    def finished(self, fit_id: str) -> bool:
        row = self.done.get(fit_id)
        if row is None:
            return False
        return not row["file"] or (self.out / row["file"]).is_file()

    def write(self, result: Mapping[str, Any]) -> dict[str, Any]:
        """Draws first, then the records, then the summary row (the mark that the fit is done)."""
        row = dict(result["row"])
        netcdf = result.get("netcdf")
        if netcdf:
            relative = f"fits/{row['fit_id']}.nc"
            partial = self.out / (relative + ".part")
            partial.write_bytes(netcdf)
            os.replace(partial, self.out / relative)
            row["file"] = relative
        if self.records is not None and result.get("records"):
            self.records.append(result["records"])
        self.summary.append([row])
        if row["status"] != "lost":
            self.done[row["fit_id"]] = {k: str(_cell(row.get(k))) for k in SUMMARY_COLUMNS}
        return row

    def close(self) -> None:
        self.summary.close()
        if self.records is not None:
            self.records.close()


# ------------------------------------------------------------------------------------------------
# The client side: the cluster and the runner
# ------------------------------------------------------------------------------------------------

def worker_environment(threads: int = 1, devices: int = 1) -> dict[str, str]:
    """Environment for worker processes Resilient starts: native thread pools sized to the worker's
    threads, so workers on one machine do not fight over its cores, and ``devices`` XLA host devices,
    so NumPyro runs that many chains in parallel (pmap) instead of vectorised. Give the chain count:
    the chains' sampling is a small part of a fit here, their compile the large one, and the
    vectorised NUTS program takes about twice as long to compile (measured: 3.6 s against 1.6 s of
    warm-up per fit of a two-parameter model, 2 chains)."""
    env = {name: str(threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                           "NUMBA_NUM_THREADS")}
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        flags = f"{flags} --xla_force_host_platform_device_count={int(devices)}".strip()
    env["XLA_FLAGS"] = flags
    return env


class _Cluster:
    """The Dask client to use: the caller's ``Client``, one connected to a scheduler address, or an
    embedded ``LocalCluster`` (``workers`` processes, one thread each; default one per core)."""

    def __init__(self, client: Any = None, *, workers: int | None = None, devices: int = 1,
                 connect_timeout: float = 30.0, memory_limit: str | float | None = "auto") -> None:
        from distributed import Client, LocalCluster

        self.cluster = None
        self.own = client is None or isinstance(client, str)
        if client is None:
            count = int(workers or os.cpu_count() or 1)
            if count < 1:
                raise ResilientError(f"`workers` must be a positive integer, got {workers!r}.")
            self.cluster = LocalCluster(n_workers=count, threads_per_worker=1, processes=True,
                                        dashboard_address=None, host="127.0.0.1",
                                        env=worker_environment(1, devices),
                                        memory_limit=memory_limit)
            self.client = Client(self.cluster)
        elif isinstance(client, str):
            try:
                self.client = Client(client, timeout=connect_timeout)
            except OSError as error:
                raise ResilientError(f"Cannot reach the Dask scheduler at {client} within {connect_timeout:g} s: "
                                     f"{error}. Check the address (tcp://host:8786) and that the scheduler runs."
                                     ) from error
        else:
            self.client = client

    def close(self) -> None:
        if not self.own:
            return
        try:
            self.client.close(timeout=10)
        finally:
            if self.cluster is not None:
                self.cluster.close(timeout=20)


@dataclass
class Progress:
    """Counts over the fits of a run, for the progress bar and the final tally."""

    total: int | None
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    lost: int = 0
    running: int = 0
    started_at: float = field(default_factory=time.monotonic)
    finished_here: int = 0

    @property
    def done(self) -> int:
        return self.skipped + self.ok + self.failed + self.lost

    def eta_seconds(self) -> float | None:
        if self.total is None or self.finished_here == 0:
            return None
        rate = self.finished_here / max(time.monotonic() - self.started_at, 1e-9)
        return max(self.total - self.done, 0) / rate

    def line(self) -> str:
        eta = self.eta_seconds()
        total = "?" if self.total is None else str(self.total)
        text = (f"{self.done}/{total} fits: {self.ok} ok, {self.failed} failed, {self.lost} lost, {self.running} "
                f"running" + (f", {self.skipped} already done" if self.skipped else ""))
        return text + (f", ETA {_duration(eta)}" if eta is not None else "")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class _ProgressBar:
    """A rich bar over fits (done, failed, running, ETA) on a terminal; elsewhere (CI, a pipe) one
    status line every ``every`` seconds when ``lines`` is on; nothing when off."""

    def __init__(self, enabled: bool, progress: Progress, description: str, *, lines: bool = False,
                 every: float = 10.0) -> None:
        self.progress = progress
        self.bar = None
        self.lines = enabled and lines
        self.every = every
        self.last_line = 0.0
        if enabled and not os.environ.get("CI") and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn

            self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[note]}"), transient=False)
            self.bar.start()
            self.task = self.bar.add_task(description, total=progress.total, note="")
            self.lines = False

    def update(self, force: bool = False) -> None:
        p = self.progress
        if self.bar is not None:
            eta = p.eta_seconds()
            note = (f"[green]{p.ok} ok[/] [red]{p.failed + p.lost} failed[/] {p.running} running"
                    + (f"  ETA {_duration(eta)}" if eta is not None else ""))
            self.bar.update(self.task, completed=p.done, note=note)
        elif self.lines and (force or time.monotonic() - self.last_line >= self.every):
            self.last_line = time.monotonic()
            print(p.line(), file=sys.stderr, flush=True)

    def close(self) -> None:
        self.update(force=True)
        if self.bar is not None:
            self.bar.stop()


class FitRunner:
    """Submits fits to Dask (at most ``max_in_flight`` at once), writes each result as it arrives and
    accounts for every fit. Bounded waits: no worker for ``worker_timeout`` seconds stops the run with
    an error (finished fits stay on disk); a fit running longer than ``fit_timeout`` has its worker
    restarted and is recorded ``lost``."""

    def __init__(self, client: Any, store: FitStore, *, max_in_flight: int | None = None,
                 fit_timeout: float | None = None, worker_timeout: float = 120.0, poll: float = 0.25,
                 progress: _ProgressBar | None = None) -> None:
        self.client = client
        self.store = store
        self.max_in_flight = max_in_flight
        self.fit_timeout = fit_timeout
        self.worker_timeout = worker_timeout
        self.poll = poll
        self.bar = progress
        self.topic = f"resilient-fits-{os.getpid()}-{time.time_ns()}"
        self._lock = threading.Lock()
        self.starts: dict[str, int] = {}
        self.running: dict[str, tuple[str, float]] = {}

    def _on_event(self, event: Any) -> None:
        _, message = event
        if not isinstance(message, dict) or message.get("event") != "start":
            return
        with self._lock:
            fit_id = message["fit_id"]
            self.starts[fit_id] = self.starts.get(fit_id, 0) + 1
            self.running[fit_id] = (message.get("worker", ""), time.monotonic())

    def run(self, jobs: Iterable[FitJob], progress: Progress) -> Progress:
        self.client.subscribe_topic(self.topic, self._on_event)
        pending: dict[Any, FitJob] = {}
        source: Iterator[FitJob] = iter(jobs)
        exhausted = False
        no_workers_since: float | None = None
        try:
            while True:
                limit = self.max_in_flight or max(2 * self._threads(), 2) + 2
                while not exhausted and len(pending) < limit:
                    job = next(source, None)
                    if job is None:
                        exhausted = True
                        break
                    if self.store.finished(job.fit_id):
                        progress.skipped += 1
                        continue
                    job = replace(job, topic=self.topic)
                    future = self.client.submit(run_fit, job, key=f"resilient-fit-{self.topic}-{job.fit_id}",
                                                pure=False)
                    pending[future] = job
                if not pending:
                    break
                finished = [future for future in pending if future.done()]  # a few futures: polling is cheap
                for future in finished:
                    job = pending.pop(future)
                    self._record(future, job, progress)
                    future.release()
                if not finished:
                    time.sleep(self.poll)
                    no_workers_since = self._check_workers(no_workers_since)
                    self._check_timeouts(pending, progress)
                in_flight = {j.fit_id for j in pending.values()}
                with self._lock:
                    progress.running = sum(1 for fit_id in self.running if fit_id in in_flight)
                if self.bar is not None:
                    self.bar.update()
        finally:
            for future in pending:
                future.cancel()
            try:
                self.client.unsubscribe_topic(self.topic)
            except Exception:  # noqa: BLE001 - the client may already be closing
                pass
        progress.running = 0
        return progress

    def _threads(self) -> int:
        try:
            return max(sum(self.client.nthreads().values()), 1)
        except Exception:  # noqa: BLE001
            return 1

    def _record(self, future: Any, job: FitJob, progress: Progress) -> None:
        with self._lock:
            starts = self.starts.get(job.fit_id, 1)
            worker = self.running.pop(job.fit_id, ("", 0.0))[0]
        if future.status == "finished":
            result = future.result()
            result["row"]["starts"] = max(starts, 1)
            if starts > 1:
                lost = f"{starts - 1} worker(s) died while running this fit; Dask ran it again"
                result["row"]["reason"] = "; ".join(r for r in (result["row"]["reason"], lost) if r)
        else:
            try:
                error = future.exception()
            except BaseException as cancelled:  # noqa: BLE001 - a cancelled future has no exception to give
                error = cancelled
            result = {"row": _lost_row(job, starts, worker, _reason(error) + (
                " (the fit was started on a worker that died each time Dask tried it: an out-of-memory kill "
                "or a crash of the process; see the workers' logs)" if type(error).__name__ == "KilledWorker"
                else ""))}
        row = self.store.write(result)
        progress.finished_here += 1
        status = row["status"]
        if status == "ok":
            progress.ok += 1
        elif status == "lost":
            progress.lost += 1
        else:
            progress.failed += 1

    def _check_workers(self, since: float | None) -> float | None:
        if self._threads_or_zero() > 0:
            return None
        now = time.monotonic()
        if since is None:
            return now
        if now - since > self.worker_timeout:
            raise ResilientError(
                f"No Dask worker has been connected for {self.worker_timeout:g} s, so no fit can run. The finished "
                f"fits are in {self.store.out}; start workers (or give no scheduler for a local cluster) and run the "
                "same command again to continue.")
        return since

    def _threads_or_zero(self) -> int:
        try:
            return sum(self.client.nthreads().values())
        except Exception:  # noqa: BLE001
            return 0

    def _check_timeouts(self, pending: dict[Any, FitJob], progress: Progress) -> None:
        if self.fit_timeout is None:
            return
        now = time.monotonic()
        with self._lock:
            late = {fit_id: worker for fit_id, (worker, since) in self.running.items()
                    if now - since > self.fit_timeout}
        for future, job in list(pending.items()):
            if job.fit_id not in late:
                continue
            future.cancel()
            pending.pop(future)
            worker = late[job.fit_id]
            with self._lock:
                self.running.pop(job.fit_id, None)
                starts = self.starts.get(job.fit_id, 1)
            if worker.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
                try:
                    self.client.restart_workers([worker], timeout=60, raise_for_error=False)
                except Exception:  # noqa: BLE001 - a worker that will not restart is the scheduler's to drop
                    pass
            self.store.write({"row": _lost_row(job, starts, worker, (
                f"the fit ran past fit_timeout={self.fit_timeout:g} s; its worker was restarted"))})
            progress.finished_here += 1
            progress.lost += 1


def _lost_row(job: FitJob, starts: int, worker: str, reason: str) -> dict[str, Any]:
    return {"fit_id": job.fit_id, "index": job.index, "status": "lost", "reason": reason,
            "backend": job.backend or "", "chains": job.run.get("chains"), "draws": job.run.get("draws"),
            "random_seed": job.random_seed, "starts": starts, "worker": worker}


# ------------------------------------------------------------------------------------------------
# sample_many
# ------------------------------------------------------------------------------------------------

@dataclass
class ManyResult:
    """What :func:`sample_many` left in ``out``: counts and a way to read each fit."""

    out: Path
    total: int
    counts: dict[str, int]
    skipped: int = 0
    seconds: float = 0.0

    @property
    def summary(self) -> Any:
        """``summary.csv`` as a pandas DataFrame (one row per fit, the last run of each)."""
        import pandas as pd

        rows = read_summary(self.out)
        frame = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
        for column in ("index", "seconds", "compile_seconds", "attempts", "chains", "draws", "divergences",
                       "max_rhat", "min_ess_bulk", "random_seed", "starts"):
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
        return frame.sort_values("index").reset_index(drop=True)

    def fit(self, fit_id: str | int) -> Any:
        """One fit's DataTree, read from its netCDF file."""
        import xarray as xr

        name = fit_id if isinstance(fit_id, str) else f"fit-{int(fit_id):05d}"
        path = self.out / "fits" / f"{name}.nc"
        if not path.is_file():
            raise ResilientError(f"No draws for {name} in {self.out / 'fits'}: see its row in summary.csv for why.")
        return xr.open_datatree(path, engine="h5netcdf").load()

    @property
    def failed(self) -> list[dict[str, str]]:
        """The rows of fits that are not ``ok``, with their reasons."""
        return [r for r in read_summary(self.out) if r["status"] != "ok"]


def fit_seed(random_seed: int, index: int, stream: int = 0) -> int:
    """The seed of fit ``index``: fixed by the run's seed and the index, not by which worker runs it."""
    return int(np.random.SeedSequence([int(random_seed), int(index), int(stream)]).generate_state(1)[0] % 2**31)


def run_settings(options: RunOptions, *, fix: bool, float32: bool, engine: str = "auto") -> dict[str, Any]:
    """What each fit's job carries (and the manifest records) from the run's checked
    :class:`~resilient.options.RunOptions`: draws, tune, chains, target_accept, max_tree_depth, policy,
    the model options fix and float32, and the engine."""
    return {"draws": options.draws, "tune": options.tune, "chains": options.chains,
            "target_accept": options.target_accept, "max_tree_depth": options.max_tree_depth,
            "policy": options.policy, "fix": bool(fix), "float32": bool(float32), "engine": engine}


def manifest_of(kind: str, spec: ModelSpec, backend: str | None, run: Mapping[str, Any], random_seed: int,
                **extra: Any) -> dict[str, Any]:
    settings = {k: v for k, v in run.items() if k != "policy"}
    return {"kind": kind, "model": spec.key, "backend": backend, "run": settings,
            "policy": asdict(run["policy"]), "random_seed": int(random_seed), **extra}


def resolve_fit_timeout(fit_timeout: float | str | None, policy: Policy) -> float | None:
    """Seconds after which a running fit counts as stuck: ``"auto"`` is ``max(600, 3 * time_budget)``
    with a time budget and an hour without."""
    if fit_timeout == "auto":
        return max(600.0, 3.0 * policy.time_budget) if policy.time_budget else 3600.0
    if fit_timeout is None:
        return None
    if isinstance(fit_timeout, str) or isinstance(fit_timeout, bool) or not fit_timeout > 0:
        raise ResilientError(f"`fit_timeout` must be a positive number of seconds, None or 'auto', got {fit_timeout!r}.")
    return float(fit_timeout)


def execute(jobs: Iterable[FitJob], store: FitStore, *, total: int | None, client: Any, workers: int | None,
            progressbar: bool, progress_lines: bool, description: str, fit_timeout: float | None,
            worker_timeout: float, max_in_flight: int | None, devices: int = 1) -> Progress:
    """Run ``jobs`` on the cluster ``client`` names (or a local one, with ``devices`` XLA devices per
    worker) into ``store``."""
    progress = Progress(total=total)
    cluster = _Cluster(client, workers=workers, devices=devices)
    bar = _ProgressBar(progressbar, progress, description, lines=progress_lines)
    try:
        runner = FitRunner(cluster.client, store, max_in_flight=max_in_flight, fit_timeout=fit_timeout,
                           worker_timeout=worker_timeout, progress=bar)
        runner.run(jobs, progress)
    finally:
        bar.close()
        store.close()
        cluster.close()
    return progress


def sample_many(model: Any, datasets: Iterable[Mapping[str, Any]], *, out: str | os.PathLike | None = None,
                backend: str | None = None, engine: str = "auto", client: Any = None, workers: int | None = None,
                draws: int = 1000, tune: int = 1000, chains: int = 4, target_accept: float = 0.8, max_tree_depth: int = 10,
                random_seed: int = 0, policy: Policy | None = None, time_budget: float | None = None,
                max_attempts: int | None = None, fix: bool = True, float32: bool = False, keep_draws: bool = True,
                ids: Sequence[str] | None = None, progressbar: bool = True, progress_lines: bool = False,
                fit_timeout: float | str | None = "auto", worker_timeout: float = 120.0,
                max_in_flight: int | None = None) -> ManyResult:
    """One resilient fit per data set, on dask.distributed; results stream to ``out`` as they finish.

    ``model``: a model function (shared API, NumPyro, or a function that builds and returns a
    ``pm.Model``) or a ``"file.py:name"`` / ``"package.module:name"`` reference that workers load
    themselves. ``datasets``: an iterable of the function's keyword arguments, one dict per fit (read
    lazily: a generator of thousands is fine). ``engine`` is what runs NUTS, as for :func:`resilient.sample`
    (``"auto"``, ``"numpyro"``, ``"pymc"``, ``"nutpie"``). Every fit runs under the same :class:`Policy`
    (``time_budget`` and ``max_attempts`` override it) with ``draws``/``tune``/``chains`` as in
    :func:`resilient.sample`; fit ``i``'s seed comes from ``random_seed`` and ``i``.

    ``client``: ``None`` starts a ``LocalCluster`` on this machine (``workers`` processes, default one per
    core, one thread each); a scheduler address (``"tcp://host:8786"``) or a ``distributed.Client`` uses
    that cluster. Each worker compiles the model once and reuses it (see :func:`sampler_for`).

    ``out`` (default: a new temporary folder) receives ``fits/<fit_id>.nc`` (the DataTree, unless
    ``keep_draws=False``), ``summary.csv`` (one row per fit: status, reason, timings, diagnostics) and
    ``manifest.json``. Run again with the same ``out`` and settings and the finished fits are skipped.
    A fit that fails its policy is a ``failed`` row with its reason; a fit whose worker dies is run
    again by Dask on another worker (up to ``distributed.scheduler.allowed-failures`` times, then a
    ``lost`` row). ``fit_timeout`` (seconds): a fit running longer has its worker restarted and is
    recorded ``lost``; ``"auto"`` (default) is ``max(600, 3 * time_budget)`` with a time budget and one hour
    without (the loop itself stops at the budget; the watchdog is for a fit stuck outside it, e.g. in a
    crashed child process); no connected worker for ``worker_timeout`` seconds stops the run with an error.
    """
    from resilient.backend import require
    from resilient.engine import resolve_engine

    require("distributed", "resilient.sample_many")
    spec = ModelSpec.of(model)
    options = RunOptions(draws=draws, tune=tune, chains=chains, target_accept=target_accept,
                         max_tree_depth=max_tree_depth, policy=policy, time_budget=time_budget,
                         max_attempts=max_attempts, progressbar=False)
    engine, backend = resolve_engine(engine, None, backend)
    run = run_settings(options, fix=fix, float32=float32, engine=engine)
    resolve_fit_timeout(fit_timeout, run["policy"])
    id_list = list(ids) if ids is not None else None
    if id_list is not None and len(set(id_list)) != len(id_list):
        raise ResilientError("`ids` must be unique: each names one fit's file and row.")
    total = len(datasets) if hasattr(datasets, "__len__") else None  # type: ignore[arg-type]
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="resilient-many-"))
    store = FitStore(out, manifest_of("sample_many", spec, backend, run, random_seed, keep_draws=keep_draws))

    def jobs() -> Iterator[FitJob]:
        for index, data in enumerate(datasets):
            if not isinstance(data, Mapping):
                raise ResilientError(f"Each data set must be a dict of the model's keyword arguments; data set "
                                     f"{index} is {type(data).__name__}.")
            fit_id = _fit_id(index, id_list)
            yield FitJob(fit_id=fit_id, index=index, model=spec, backend=backend, data=dict(data), run=run,
                         random_seed=fit_seed(random_seed, index), keep_draws=keep_draws)

    started = time.monotonic()
    progress = execute(jobs(), store, total=total, client=client, workers=workers, progressbar=progressbar,
                       progress_lines=progress_lines, description=f"fits of {spec.name}",
                       fit_timeout=resolve_fit_timeout(fit_timeout, run["policy"]),
                       worker_timeout=worker_timeout, max_in_flight=max_in_flight, devices=run["chains"])
    counts = {status: 0 for status in FIT_STATUSES}
    for row in read_summary(out):
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return ManyResult(out=out, total=progress.done, counts=counts, skipped=progress.skipped,
                      seconds=time.monotonic() - started)


def _fit_id(index: int, ids: Sequence[str] | None) -> str:
    if ids is None:
        return f"fit-{index:05d}"
    if index >= len(ids):
        raise ResilientError(f"`ids` has {len(ids)} names but there are more data sets than that.")
    name = str(ids[index])
    if not name or any(c in name for c in "/\\:\n,") or name.startswith("."):
        raise ResilientError(f"Fit id {name!r} cannot name a file: use letters, digits, '-', '_' and '.'.")
    return name
