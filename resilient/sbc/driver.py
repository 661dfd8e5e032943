""":func:`sbc`: simulation-based calibration of a model and Resilient's sampler on it, run on the batch
runner of :mod:`resilient.batch` (dask.distributed), read back by :func:`~resilient.sbc.analyse` and
reported by :func:`~resilient.sbc.write_sbc_report`.

Dependency rule: numpy and the standard library at import time; dask, the backends, scipy and matplotlib
inside functions.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from resilient.batch import (
    FitJob, FitStore, ModelSpec, data_fingerprint, execute, fit_seed, manifest_of, resolve_fit_timeout, run_settings,
)
from resilient.backend import DEFAULT_BACKEND
from resilient.errors import ResilientError
from resilient.options import RunOptions
from resilient.policy import Policy
from resilient.sbc.report import write_sbc_report
from resilient.sbc.results import SBCResult, analyse
from resilient.sbc.simulation import RANK_COLUMNS, Simulation, model_language, observed_arguments, prior_draw

__all__ = ["sbc"]

def sbc(model: Any, simulations: int = 100, *, data: Mapping[str, Any] | None = None, simulator: Any = None,
        observed: str | Sequence[str] | Mapping[str, str] | None = None, var_names: Sequence[str] | None = None,
        backend: str | None = None, draws: int = 500, tune: int = 500, chains: int = 2, rank_draws: int = 99,
        prob: float = 0.99, target_accept: float = 0.8, max_tree_depth: int = 10, random_seed: int = 0,
        policy: Policy | None = None, time_budget: float | None = None, max_attempts: int | None = None,
        out: str | os.PathLike | None = None, client: Any = None, workers: int | None = None,
        keep_draws: bool = True, report: bool = True, progressbar: bool = True, progress_lines: bool = False,
        fit_timeout: float | str | None = "auto", worker_timeout: float = 120.0, warm_start: bool = False) -> SBCResult:
    """Simulation-based calibration of ``model`` and Resilient's sampler on it.

    Each of ``simulations`` fits draws the parameters and the data from the prior predictive of
    ``simulator`` (default: ``model`` itself) with the backend's own forward sampler, fits ``model`` to
    the simulated data with the resilient loop, and ranks each true scalar parameter among
    ``rank_draws`` thinned posterior draws. The fits run on dask.distributed like :func:`sample_many`
    (``client``, ``workers``, ``out``, ``fit_timeout``, restart and failure handling are the same).

    ``model``: a shared-API function, a NumPyro function, or a PyMC builder (a function returning a
    ``pm.Model``), or a ``"file.py:name"`` reference. Its observed values come from arguments that
    default to ``None`` (``def model(N, y=None)``): ``data`` gives the others (``{"N": 20}``); the
    arguments left out are simulated (``observed`` names them when the site and argument names differ:
    ``{"y": "y_obs"}``). ``var_names``: the parameters to check (default: every latent and
    deterministic site the simulator draws that the posterior holds).

    Verdict per parameter: ``fail`` when the ECDF of its ranks leaves the ``prob`` simultaneous band
    (Säilynoja et al. 2022): a calibrated parameter fails with probability at most ``1 - prob``.
    Fits that did not finish ``ok`` (failed, exhausted, out of budget, lost) are not ranked: they are
    listed, with their reasons, in the result and the report, because dropping the hard fits silently
    biases the check. The report is ``out/sbc.html`` (and ``sbc.json``).

    ``warm_start=True``: as in :func:`sample_many`, each fit after the first on a worker starts from the
    adaptation of the last accepted fit there (a short, checked window instead of ``tune``; a full warm-up
    where the check fails). Each fit is still its own chains' NUTS run on its own data, so the ranks stay a test
    of calibration; but a fit's draws, and so its ranks, then depend on which fit ran before it on its worker:
    the same seed need not give the same ranks. Off by default for that reason.
    """
    from resilient.backend import require

    require("distributed", "resilient.sbc")
    if isinstance(simulations, bool) or not isinstance(simulations, int) or simulations < 1:
        raise ResilientError(f"`simulations` must be a positive integer, got {simulations!r}.")
    if isinstance(rank_draws, bool) or not isinstance(rank_draws, int) or rank_draws < 1:
        raise ResilientError(f"`rank_draws` must be a positive integer, got {rank_draws!r}.")
    options = RunOptions(draws=draws, tune=tune, chains=chains, target_accept=target_accept,
                         max_tree_depth=max_tree_depth, policy=policy, time_budget=time_budget,
                         max_attempts=max_attempts, progressbar=False)
    if rank_draws > chains * draws:
        raise ResilientError(f"`rank_draws` ({rank_draws}) must be at most chains x draws ({chains * draws}): "
                             "raise draws, or rank among fewer draws.")
    if not 0 < prob < 1:
        raise ResilientError(f"`prob` must be in (0, 1), got {prob!r}. Typical: 0.95 or 0.99.")
    spec = ModelSpec.of(model)
    simulator_spec = ModelSpec.of(simulator) if simulator is not None else spec
    data = {k: v for k, v in (data or {}).items()}
    simulation_backend, observed_map, parameters = _plan(spec, simulator_spec, backend, data, observed, var_names,
                                                         random_seed)
    run = run_settings(options, fix=True, float32=False)
    if warm_start is not False:  # only then in the manifest: a folder written before keeps its settings
        if warm_start is not True:
            raise ResilientError(f"`warm_start` must be True or False, got {warm_start!r}.")
        run["warm_start"] = True
    timeout = resolve_fit_timeout(fit_timeout, run["policy"])
    simulation = Simulation(simulator=simulator_spec, backend=simulation_backend, data=data, observed=observed_map,
                            parameters=parameters, rank_draws=rank_draws, random_seed=int(random_seed))
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="resilient-sbc-"))
    manifest = manifest_of("sbc", spec, backend, run, random_seed, keep_draws=keep_draws, sbc={
        "simulator": simulator_spec.key, "simulations": simulations, "rank_draws": rank_draws,
        "observed": observed_map, "parameters": list(parameters), "data": data_fingerprint(data),
        "simulation_backend": simulation_backend})
    manifest["sbc"].pop("simulations")  # more simulations into the same folder extend the run
    store = FitStore(out, manifest, records="ranks.csv", record_columns=RANK_COLUMNS)
    if run.get("warm_start"):  # this call's fits only: a long-lived worker keeps no warm state across calls
        from resilient.batch.worker import warm_call_id

        run = {**run, "warm_start": warm_call_id()}
    jobs = (FitJob(fit_id=f"sim-{index:05d}", index=index, model=spec, backend=backend, data=None, run=run,
                   random_seed=fit_seed(random_seed, index), keep_draws=keep_draws, simulation=simulation)
            for index in range(simulations))
    execute(jobs, store, total=simulations, client=client, workers=workers, progressbar=progressbar,
            progress_lines=progress_lines, description=f"SBC of {spec.name}", fit_timeout=timeout,
            worker_timeout=worker_timeout, max_in_flight=None, devices=run["chains"])
    result = analyse(out, prob=prob, requested=simulations)
    result.settings.update(simulations=simulations, rank_draws=rank_draws, simulator=simulator_spec.key,
                           observed=observed_map)
    if report:
        write_sbc_report(result)
    return result


def _plan(spec: ModelSpec, simulator_spec: ModelSpec, backend: str | None, data: Mapping[str, Any], observed: Any,
          var_names: Sequence[str] | None, random_seed: int) -> tuple[str, dict[str, str], tuple[str, ...]]:
    """Check the simulation here, once, before any fit runs: the backend that simulates, the
    simulated site -> argument map and the parameters to rank."""
    simulator = simulator_spec.load()
    fitted = spec.load()
    kind = model_language(simulator)  # None: the shared API
    fitted_kind = model_language(fitted)
    if backend is not None and kind is not None and backend != kind:
        raise ResilientError(f"The simulator is a native {kind} model, so `backend` must be {kind!r} or None, "
                             f"got {backend!r}.")
    # a shared-API simulator runs where asked, else in the fitted native model's language, else the default one
    simulation_backend = kind or backend or fitted_kind or DEFAULT_BACKEND
    observed_map = observed_arguments(simulator, data, observed)
    arguments = {**data, **{argument: None for argument in observed_map.values()}}
    try:
        draw = prior_draw(simulator, arguments, backend=simulation_backend, random_seed=random_seed)
    except ResilientError:
        raise
    except Exception as error:  # noqa: BLE001 - the simulator failed: say so before launching the fits
        raise ResilientError(f"Simulating from {simulator_spec.name} with {sorted(data)} as data failed: "
                             f"{type(error).__name__}: {error}. SBC calls the model with the data you give and "
                             "None for the observed arguments; check they default to None.") from error
    if observed is None:
        observed_map = {site: argument for site, argument in observed_map.items() if site in draw}
    missing = [site for site in observed_map if site not in draw]
    if missing or not observed_map:
        raise ResilientError(
            f"SBC simulates the observed sites and fits the model to them, so it must know which sites those "
            f"are. {'No argument of ' + simulator_spec.name + ' left out of `data` names a site' if not missing else 'The simulator drew no site named ' + ', '.join(missing)}; "
            f"it drew {', '.join(sorted(draw))}. Pass observed=['y'] (or {{'y': 'y_obs'}} when the argument is "
            "named otherwise), and give every other argument in `data`.")
    if var_names is not None:
        names = [var_names] if isinstance(var_names, str) else list(var_names)
        unknown = [n for n in names if n not in draw or n in observed_map]
        if unknown:
            raise ResilientError(f"`var_names` lists {unknown}, which the simulator does not draw as parameters; it "
                                 f"draws {', '.join(sorted(set(draw) - set(observed_map)))}.")
        parameters = tuple(names)
    else:
        parameters = tuple(name for name in draw if name not in observed_map)
    return simulation_backend, observed_map, parameters
