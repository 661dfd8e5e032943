"""The worker side of a batch: :func:`run_fit` runs one fit under the run's policy and never raises for
the model's or the sampler's failure (that is a ``failed`` row with its reason); :func:`sampler_for`
compiles the model once per worker process and reuses it (through the adapter's optional
``CompiledModel.with_data(args, kwargs)`` for a new data set of the same shapes).

Dependency rule: numpy and the standard library at import time; dask.distributed, the backends and
ArviZ are imported inside functions.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from resilient import netcdf
from resilient.batch.fork import ChildProcessesAllowed
from resilient.batch.spec import DATA_FRAME, FitJob, ModelSpec, builds_bambi, data_fingerprint
from resilient.errors import ResilientError
from resilient.policy import Policy

__all__ = ["run_fit", "sampler_for", "prepared"]

_RUN_STATUS = {"ok": "ok", "failed": "exhausted", "budget": "budget", "interrupted": "failed"}

#: per worker process: compiled samplers by (model, backend, options, data), least recently used first.
_SAMPLERS: "OrderedDict[tuple, Any]" = OrderedDict()
#: per worker process: the samplers compiled (not derived by ``with_data``) for (model, backend, options),
#: newest first, at most ``_CACHE_SIZE``: their compiled models' ``with_data`` is asked for the next data
#: sets (several, for data sets of a few different shapes).
_BASES: dict[tuple, list] = {}
_CACHE_SIZE = 4
_CACHE_LOCK = threading.Lock()
#: per worker process: the last accepted fit's sampler_state (a DataTree holding only that group) per (model,
#: backend), what ``sample_many(warm_start=True)`` starts the next fit of that model from
_WARM: dict[tuple, Any] = {}


def warm_call_id() -> str:
    """A new ``sample_many`` / ``sbc`` call's mark in its jobs' ``run["warm_start"]`` (the manifest keeps True): the
    worker's warm states are keyed by it, so a fit starts warm only from an earlier fit of the same call."""
    import uuid

    return uuid.uuid4().hex


def sampler_for(spec: ModelSpec, backend: str | None, data: Mapping[str, Any], *, fix: bool = True,
                float32: bool = False, engine: str = "auto",
                fit_kwargs: Mapping[str, Any] | None = None) -> tuple[Any, str, float]:
    """A :class:`~resilient.sampling.CompiledSampler` for ``data``: ``(sampler, how, seconds)``.

    ``how`` is ``"reused"`` (this data set was compiled before in this process), ``"first"`` (the
    first compile of this model here), ``"with-data"`` (the first compile's
    ``compiled.with_data(args, kwargs)`` gave the model for the new data: compile once, sample many)
    or ``"recompiled"`` (no adapter ``with_data``, or it refused the data set: compiled again). The
    NumPyro adapter's ``with_data`` reuses the jitted programs for data arrays of the same shapes and
    dtypes and the same other arguments; the last few compiled bases are asked, so data sets of a few
    shapes each compile once.

    A Bambi model (a template ``bmb.Model``'s recipe, or a function that builds one from a data frame) is built
    on each data set and its PyMC model compiled (Bambi writes each data set into the model as constants, so
    there is no ``with_data``); ``fit_kwargs`` are ``bmb.Model.fit``'s (``omit_offsets``, ...).
    """
    sampler, how, seconds, _ = prepared(spec, backend, data, fix=fix, float32=float32, engine=engine,
                                        fit_kwargs=fit_kwargs)
    return sampler, how, seconds


def prepared(spec: ModelSpec, backend: str | None, data: Mapping[str, Any], *, fix: bool = True,
             float32: bool = False, engine: str = "auto",
             fit_kwargs: Mapping[str, Any] | None = None) -> tuple[Any, str, float, Any]:
    """:func:`sampler_for` and how to shape its draws: ``(sampler, how, seconds, shaping)``; ``shaping`` is a Bambi
    model's ``BambiFit`` from the Bambi helper (the variables ``fit`` samples, and its
    post-processing), None for other models."""
    from resilient.backend import capabilities
    from resilient.engine import model_backend
    from resilient.model import Model, NativeModel
    from resilient.resolve import default_backend, resolve_model
    from resilient.sampling import CompiledSampler

    started = time.perf_counter()
    options = (bool(fix), bool(float32), engine, *sorted((k, repr(v)) for k, v in (fit_kwargs or {}).items()))
    key = (spec.key, backend, options, data_fingerprint(data))
    with _CACHE_LOCK:
        if key in _SAMPLERS:
            _SAMPLERS.move_to_end(key)
            sampler, shaping = _SAMPLERS[key]
            return sampler, "reused", time.perf_counter() - started, shaping
        bases = list(_BASES.get(key[:3], ()))
    function = spec.load()
    shaping = None
    if builds_bambi(function):
        shaping = _bambi_plan(function, data, engine, fit_kwargs)
        engine = shaping.engine
        resolved = resolve_model(shaping.pymc_model, (), {}, fix=fix, float32=float32)
    else:
        if DATA_FRAME in data:
            raise ResilientError(f"A data set that is a data frame is for a Bambi model; {spec.name} is not one. Give "
                                 "each data set as a dict of the model function's keyword arguments.")
        if fit_kwargs:
            raise ResilientError(f"`fit_kwargs` (bmb.Model.fit's arguments) is for a Bambi model; {spec.name} is not "
                                 "one.")
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
        _SAMPLERS[key] = (sampler, shaping)
        while len(_SAMPLERS) > _CACHE_SIZE:
            _SAMPLERS.popitem(last=False)
    return sampler, how, time.perf_counter() - started, shaping


def _bambi_plan(function: Any, data: Mapping[str, Any], engine: str, fit_kwargs: Mapping[str, Any] | None) -> Any:
    """The Bambi model for this data set (a data frame is the builder's one positional argument, a dict its
    keyword arguments), built, and fit's plan for it (the Bambi helper's ``plan_fit``)."""
    from resilient.backend import helper
    from resilient.resolve import is_bambi_model

    bambi = helper("pymc", "bambi")
    if is_bambi_model(function):  # a module-level bmb.Model in a model file: its recipe
        function = bambi.recipe_of(function)
    kwargs = dict(data)
    args = (kwargs.pop(DATA_FRAME),) if DATA_FRAME in kwargs else ()
    return bambi.plan_fit(bambi.built_model(function, args, kwargs), dict(fit_kwargs or {}), engine=engine)


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
        sampler, how, seconds, shaping = prepared(job.model, job.backend, data, fix=job.run.get("fix", True),
                                                  float32=job.run.get("float32", False),
                                                  engine=job.run.get("engine", "auto"),
                                                  fit_kwargs=job.run.get("fit_kwargs"))
        row.update(compile=how, compile_seconds=round(seconds, 4), backend=sampler.backend)
        warm_key = (job.model.key, job.backend, job.run.get("warm_start"))  # one call's fits of one model
        warm = _WARM.get(warm_key) if job.run.get("warm_start") else None
        data_tree = _sample(sampler, job, row, var_names=shaping.var_names if shaping is not None else None,
                            warm_start=warm if warm is not None else False)
        if job.run.get("warm_start") and data_tree is not None and row["status"] == "ok" and (
                "sampler_state" in data_tree.children):
            import xarray as xr

            for key in [k for k in _WARM if k[:2] == warm_key[:2]]:  # an earlier call's state of this model goes
                del _WARM[key]
            _WARM[warm_key] = xr.DataTree.from_dict({"sampler_state": data_tree["sampler_state"].to_dataset()})
        if shaping is not None:
            data_tree = _shaped(shaping, data_tree, row)
        if data_tree is not None and job.simulation is not None and row["status"] != "failed":
            result["records"] = job.simulation.records(job, data_tree, context)
    except Exception as error:  # noqa: BLE001 - recorded as this fit's failure, never raised into the batch
        row.update(status="failed", reason=reason_of(error))
    row["seconds"] = round(time.perf_counter() - started, 4)
    if data_tree is not None:
        _describe(data_tree, row)
        if job.keep_draws:
            result["netcdf"] = _netcdf_bytes(data_tree)
    return result


def _shaped(shaping: Any, data: Any, row: dict[str, Any]) -> Any:
    """A Bambi fit's draws shaped as ``bmb.Model.fit`` shapes them (partial draws of a failed fit too, where
    Bambi's post-processing takes them; else they are kept as sampled and the row says so)."""
    if data is None:
        return None
    try:
        return shaping.finish(data)
    except Exception as error:  # noqa: BLE001 - a failed fit's partial draws: kept unshaped, never lost
        if row["status"] == "ok":
            raise
        row["reason"] = f"{row['reason']} (draws kept as sampled: Bambi's post-processing raised {reason_of(error)})"
        return data


def _sample(sampler: Any, job: FitJob, row: dict[str, Any], var_names: Any = None, warm_start: Any = False) -> Any:
    """The loop on this data set; fills ``row``'s status and reason; the DataTree (partial draws of a
    failed fit too, when there are any) or None."""
    from resilient import record
    from resilient.errors import SamplingFailed

    run = dict(job.run)
    policy = run.get("policy") or Policy()
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught, ChildProcessesAllowed():
            warnings.simplefilter("always")
            data = sampler.sample(draws=run["draws"], tune=run["tune"], chains=run["chains"],
                                  target_accept=run.get("target_accept", 0.8), random_seed=job.random_seed,
                                  progressbar=False, max_tree_depth=run.get("max_tree_depth", 10), policy=policy,
                                  var_names=var_names, warm_start=warm_start)
    except SamplingFailed as error:
        row.update(status="failed", reason=reason_of(error), attempts=len(error.attempts))
        return error.partial
    run_info = record.read_run(data) or {}
    row["status"] = _RUN_STATUS.get(run_info.get("status", "ok"), "failed")
    row["attempts"] = len(record.read_attempts(data))
    notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if row["status"] != "ok":  # the loop's warning says it all when there is one; else the run's message
        row["reason"] = " ".join((notes[-1] if notes else run_info.get("message") or "").split())[:2000]
    return data


def reason_of(error: BaseException) -> str:
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
        netcdf.write(data, path)
        return Path(path).read_bytes()
    finally:
        os.unlink(path)
