"""SBC's part of each fit, run on the worker (:class:`Simulation`): one draw of the parameters and the data
from the prior predictive, by the backend's own forward sampler (:func:`prior_draw`, through
:func:`resilient.backend.simulate_prior`: NumPyro's effect handlers, ``pm.draw``), the simulated
observations handed to the fit as data, and the ranks of the true values among the posterior draws
afterwards (:func:`rank_rows`).

Ranks. From each fit's ``chains x draws`` posterior draws, ``rank_draws`` (L) evenly spaced draws are
kept (thinning by ``chains * draws / L``); the rank of the true value is the number of kept draws below
it (ties broken at random), a value in 0..L. Each rank row records the fit's bulk ESS, and the report
counts the fits whose ESS was below L.

Dependency rule: numpy and the standard library at import time; the backends (through the registry) and
arviz-stats are imported inside functions.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from resilient.batch import FitJob, ModelSpec, fit_seed
from resilient.errors import ResilientError

__all__ = ["RANK_COLUMNS", "prior_draw", "Simulation", "rank_rows", "observed_arguments", "model_language"]

#: columns of ``ranks.csv``: one row per fit and scalar parameter.
RANK_COLUMNS = ("fit_id", "index", "parameter", "rank", "rank_draws", "true_value", "posterior_mean",
                "posterior_sd", "ess_bulk", "thinned_by")


def model_language(function: Any) -> str | None:
    """The language ``function`` is written in: ``"numpyro"`` (a NumPyro model function), ``"pymc"`` (a builder
    returning a ``pm.Model``), or None (the shared API, which either backend runs)."""
    from resilient.resolve import is_numpyro_function, is_pymc_function, is_pymc_model

    if is_pymc_model(function):
        raise ResilientError(
            "SBC needs the model as a function: a pm.Model holds one data set. Write a builder "
            "(def model(N, y=None): with pm.Model() as m: ...; return m) whose observed variables take "
            "their values from arguments that default to None.")
    if not callable(function):
        raise ResilientError(f"`model` must be a model function, got {type(function).__name__}.")
    if is_numpyro_function(function):
        return "numpyro"
    if is_pymc_function(function):
        return "pymc"
    return None


def prior_draw(function: Any, kwargs: Mapping[str, Any], *, backend: str | None = None,
               random_seed: int) -> dict[str, np.ndarray]:
    """One joint draw of every unobserved site (latent, deterministic, and the sites whose data
    arguments are None) of ``function(**kwargs)``, by the backend's forward sampler: a native model's own
    backend's, else ``backend``'s (the language it runs; an engine's name gives its language's)."""
    from resilient.backend import simulate_prior

    language = model_language(function)
    from resilient.backend import DEFAULT_BACKEND

    return simulate_prior(language or backend or DEFAULT_BACKEND, function, kwargs, native=language is not None,
                          random_seed=random_seed)


def observed_arguments(function: Any, data: Mapping[str, Any], observed: Any) -> dict[str, str]:
    """Site name -> argument name of the sites SBC simulates and hands to the fit as data."""
    if observed is not None:
        if isinstance(observed, str):
            return {observed: observed}
        if isinstance(observed, Mapping):
            return {str(k): str(v) for k, v in observed.items()}
        return {str(name): str(name) for name in observed}
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        parameters = {}
    left = {name: p for name, p in parameters.items()
            if name not in data and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    required = [name for name, p in left.items() if p.default is inspect.Parameter.empty]
    if required:
        raise ResilientError(
            f"{getattr(function, '__name__', 'the model')}() takes {', '.join(f'`{n}`' for n in required)} without a "
            "default and `data` does not give it. SBC simulates the arguments that default to None (the observed "
            "values) and needs every other one in `data`, e.g. data={'N': 20}; or name the simulated sites with "
            "observed=[...].")
    return {name: name for name, p in left.items() if p.default is None}


@dataclass(frozen=True)
class Simulation:
    """SBC's part of a fit, run on the worker: simulate before the fit, rank after it.

    ``simulator``: the model whose prior predictive draws the data (usually the fitted model itself);
    ``observed``: simulated site -> the fitted model's argument that receives it; ``parameters``: the
    sites whose ranks are computed.
    """

    simulator: ModelSpec
    backend: str
    data: Mapping[str, Any]
    observed: Mapping[str, str]
    parameters: tuple[str, ...]
    rank_draws: int
    random_seed: int

    def simulate(self, job: FitJob) -> tuple[dict[str, Any], dict[str, Any]]:
        function = self.simulator.load()
        arguments = {**self.data, **{argument: None for argument in self.observed.values()}}
        draw = prior_draw(function, arguments, backend=self.backend,
                          random_seed=fit_seed(self.random_seed, job.index, stream=1))
        missing = [site for site in self.observed if site not in draw]
        if missing:
            raise ResilientError(f"The simulator drew no site named {', '.join(missing)}; it drew "
                                 f"{', '.join(sorted(draw))}.")
        fit_data = {**self.data, **{argument: draw[site] for site, argument in self.observed.items()}}
        truth = {name: draw[name] for name in self.parameters}
        return fit_data, {"truth": truth}

    def records(self, job: FitJob, data: Any, context: Mapping[str, Any]) -> list[dict[str, Any]]:
        posterior = data["posterior"].to_dataset()
        draws = {name: np.asarray(posterior[name]) for name in self.parameters if name in posterior}
        return rank_rows(job.fit_id, job.index, context["truth"], draws, self.rank_draws,
                         random_seed=fit_seed(self.random_seed, job.index, stream=2))


def _labels(name: str, shape: tuple[int, ...]) -> list[str]:
    if not shape:
        return [name]
    return [f"{name}[{','.join(map(str, index))}]" for index in np.ndindex(*shape)]


def rank_rows(fit_id: str, index: int, truth: Mapping[str, Any], draws: Mapping[str, np.ndarray], rank_draws: int,
              *, random_seed: int = 0) -> list[dict[str, Any]]:
    """The rank of each scalar true value among ``rank_draws`` evenly spaced posterior draws.

    ``draws[name]`` has shape ``(chain, draw, *shape)``; ``truth[name]`` has ``shape``. Ties (a stuck
    chain repeats a value) are broken uniformly at random, so ranks stay uniform under calibration.
    """
    from arviz_stats.base import array_stats

    rng = np.random.default_rng(random_seed)
    rows = []
    for name, values in draws.items():
        true = np.asarray(truth[name], dtype=float)
        values = np.asarray(values, dtype=float)
        if values.shape[2:] != true.shape:
            raise ResilientError(f"`{name}` has shape {true.shape} in the simulation but {values.shape[2:]} in the "
                                 "posterior: the simulator and the fitted model must declare the same parameters.")
        chains, count = values.shape[:2]
        total = chains * count
        if rank_draws > total:
            raise ResilientError(f"`rank_draws` ({rank_draws}) must be at most chains x draws ({total}).")
        keep = np.floor(np.arange(rank_draws) * (total / rank_draws)).astype(int)
        flat = values.reshape(chains, count, -1)
        for k, label in enumerate(_labels(name, true.shape)):
            series = flat[:, :, k]
            pooled = series.reshape(-1)  # chain after chain
            kept = pooled[keep]
            target = true.reshape(-1)[k]
            below = int(np.sum(kept < target))
            ties = int(np.sum(kept == target))
            rank = below + (int(rng.integers(0, ties + 1)) if ties else 0)
            ess = float("nan")
            if count >= 4 and np.ptp(series) > 0 and np.all(np.isfinite(series)):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ess = float(array_stats.ess(series, chain_axis=0, draw_axis=1, method="bulk"))
            rows.append({"fit_id": fit_id, "index": index, "parameter": label, "rank": rank,
                         "rank_draws": int(rank_draws), "true_value": float(target),
                         "posterior_mean": float(np.mean(pooled)), "posterior_sd": float(np.std(pooled)),
                         "ess_bulk": round(ess, 1) if math.isfinite(ess) else None,
                         "thinned_by": round(total / rank_draws, 3)})
    return rows
