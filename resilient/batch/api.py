""":func:`sample_many`: one resilient fit per data set on dask.distributed, and :class:`ManyResult`, what
it left in its output folder.

Dependency rule: numpy and the standard library at import time; dask.distributed, pandas, xarray and the
backends are imported inside functions.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from resilient import netcdf
from resilient.batch.cluster import execute
from resilient.batch.spec import (
    DATA_FRAME, FIT_STATUSES, SUMMARY_COLUMNS, FitJob, ModelSpec, builds_bambi, fit_seed, is_data_frame, manifest_of,
    resolve_fit_timeout, run_settings,
)
from resilient.batch.store import FitStore, read_summary
from resilient.errors import ResilientError
from resilient.options import RunOptions
from resilient.policy import Policy

__all__ = ["sample_many", "ManyResult"]

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
        name = fit_id if isinstance(fit_id, str) else f"fit-{int(fit_id):05d}"
        path = self.out / "fits" / f"{name}.nc"
        if not path.is_file():
            raise ResilientError(f"No draws for {name} in {self.out / 'fits'}: see its row in summary.csv for why.")
        return netcdf.open_tree(path)

    @property
    def failed(self) -> list[dict[str, str]]:
        """The rows of fits that are not ``ok``, with their reasons."""
        return [r for r in read_summary(self.out) if r["status"] != "ok"]


def sample_many(model: Any, datasets: Iterable[Mapping[str, Any]], *, out: str | os.PathLike | None = None,
                backend: str | None = None, engine: str = "auto", client: Any = None, workers: int | None = None,
                draws: int = 1000, tune: int = 1000, chains: int = 4, target_accept: float = 0.8, max_tree_depth: int = 10,
                random_seed: int = 0, policy: Policy | None = None, time_budget: float | None = None,
                max_attempts: int | None = None, fix: bool = True, float32: bool = False, keep_draws: bool = True,
                ids: Sequence[str] | None = None, progressbar: bool = True, progress_lines: bool = False,
                fit_timeout: float | str | None = "auto", worker_timeout: float = 120.0,
                max_in_flight: int | None = None, fit_kwargs: Mapping[str, Any] | None = None,
                warm_start: bool = False) -> ManyResult:
    """One resilient fit per data set, on dask.distributed; results stream to ``out`` as they finish.

    ``model``: a model function (shared API, NumPyro, or a function that builds and returns a
    ``pm.Model``) or a ``"file.py:name"`` / ``"package.module:name"`` reference that workers load
    themselves. ``datasets``: an iterable of the function's keyword arguments, one dict per fit (read
    lazily: a generator of thousands is fine).

    Bambi: ``model`` is a ``bmb.Model`` (a template, built again on each data set with its formula, family,
    priors and options; Bambi's default priors are scaled to each data set, as ``bmb.Model`` scales them) or a
    function that builds and returns one (``def build(data): return bmb.Model("y ~ x", data)``), and each data set
    is a pandas DataFrame with the columns the formula uses (or a dict of the builder's keyword arguments). Each
    fit is what ``bmb.Model(formula, data).fit(...)`` returns, with Bambi's names and dims, so
    ``bmb.Model(formula, data).predict(result.fit(i))`` works. ``fit_kwargs``: ``bmb.Model.fit``'s
    ``omit_offsets``, ``include_response_params`` and ``inference_method`` (``"pymc"`` or ``"nutpie"``, as
    ``engine``). ``engine`` is what runs NUTS, as for :func:`resilient.sample`
    (``"auto"``, ``"numpyro"``, ``"pymc"``, ``"nutpie"``). Every fit runs under the same :class:`Policy`
    (``time_budget`` and ``max_attempts`` override it) with ``draws``/``tune``/``chains`` as in
    :func:`resilient.sample`; fit ``i``'s seed comes from ``random_seed`` and ``i``.

    ``warm_start=True``: each fit after the first on a worker starts from the adaptation of the last accepted fit
    of the same model on that worker (a checked window instead of ``tune``, falling back to the full warm-up;
    the fits have other data, so the window estimates the mass matrix again; on PyMC's NUTS, which cannot, the
    fit warms up in full; see :mod:`resilient.warm_start`). Off by default: a fit's draws then depend on which fit ran
    before it on its worker, so the same seed no longer gives the same draws in every run.

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
    bambi = spec.reference is None and builds_bambi(spec.obj)
    if fit_kwargs is not None:
        if spec.reference is None and not bambi:
            raise ResilientError(f"`fit_kwargs` (bmb.Model.fit's arguments) is for a Bambi model; {spec.name} is not "
                                 "one.")
        from resilient.backend import helper

        fit_kwargs, engine = helper("pymc", "bambi").many_fit_options(
            fit_kwargs, engine, own=tuple(sample_many.__kwdefaults__))
    options = RunOptions(draws=draws, tune=tune, chains=chains, target_accept=target_accept,
                         max_tree_depth=max_tree_depth, policy=policy, time_budget=time_budget,
                         max_attempts=max_attempts, progressbar=False)
    engine, backend = resolve_engine(engine, None, backend)
    if bambi:
        from resilient.backend import helper

        helper("pymc", "bambi").check_many_engine(engine, backend)
    run = run_settings(options, fix=fix, float32=float32, engine=engine)
    if fit_kwargs:  # only then: a run folder written without them keeps its manifest
        run["fit_kwargs"] = dict(fit_kwargs)
    if warm_start is not False:  # likewise
        if warm_start is not True:
            raise ResilientError(f"`warm_start` must be True or False, got {warm_start!r}.")
        run["warm_start"] = True
    resolve_fit_timeout(fit_timeout, run["policy"])
    id_list = list(ids) if ids is not None else None
    if id_list is not None and len(set(id_list)) != len(id_list):
        raise ResilientError("`ids` must be unique: each names one fit's file and row.")
    total = len(datasets) if hasattr(datasets, "__len__") else None  # type: ignore[arg-type]
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="resilient-many-"))
    store = FitStore(out, manifest_of("sample_many", spec, backend, run, random_seed, keep_draws=keep_draws))

    if run.get("warm_start"):  # this call's fits only: a long-lived worker keeps no warm state across calls
        from resilient.batch.worker import warm_call_id

        run = {**run, "warm_start": warm_call_id()}

    def jobs() -> Iterator[FitJob]:
        for index, data in enumerate(datasets):
            if is_data_frame(data) and (bambi or spec.reference is not None):  # (a reference: its worker checks)
                data = {DATA_FRAME: data}
            elif not isinstance(data, Mapping):
                raise ResilientError(f"Each data set must be a dict of the model's keyword arguments"
                                     f"{' (or a data frame, for a Bambi model)' if not bambi else ''}; data set "
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
