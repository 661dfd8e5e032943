"""Simulation-based calibration: :func:`sbc` draws parameters and data from the prior, fits each data
set with the resilient loop (on dask.distributed, through :mod:`resilient.many`), and checks that the
ranks of the true values among the posterior draws are uniform (Talts et al. 2018; Modrák et al. 2023).

Pieces, each usable alone:

* :class:`Simulation` (runs on workers): one prior draw with the backend's own forward sampler
  (NumPyro's effect handlers, ``pm.draw``), the simulated observations handed to the fit as data, and
  the ranks of the true values afterwards (:func:`rank_rows`);
* :func:`uniformity_test`: the ECDF of the ranks against the simultaneous confidence band of
  Säilynoja, Bürkner and Vehtari (2022), with a stated false-alarm rate per parameter;
* :func:`analyse` reads an output folder back (also after a crash) and :func:`write_sbc_report`
  writes ``sbc.html`` (ECDF-difference plots with their bands, rank histograms, the dropped fits and
  why) and ``sbc.json``.

Ranks. From each fit's ``chains x draws`` posterior draws, ``rank_draws`` (L) evenly spaced draws are
kept (thinning by ``chains * draws / L``); the rank of the true value is the number of kept draws below
it (ties broken at random), a value in 0..L. With the defaults (2 chains x 500 draws, L = 99) every
10th draw is kept. Thinning is meant to leave roughly independent draws: each rank row records the
fit's bulk ESS, and the report counts the fits whose ESS was below L (their ranks may be too
concentrated in the middle or the ends: raise ``draws`` there).

Dependency rule: numpy and the standard library at import time; scipy, matplotlib, jinja2, the
backends and dask are imported inside functions.
"""

from __future__ import annotations

import base64
import csv
import inspect
import io
import json
import math
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from resilient.errors import ResilientError
from resilient.many import (
    FitJob, FitStore, ModelSpec, execute, fit_seed, manifest_of, read_summary, resolve_fit_timeout, run_settings,
)
from resilient.options import RunOptions
from resilient.policy import Policy

__all__ = [
    "sbc", "SBCResult", "ParameterCheck", "Simulation", "uniformity_test", "analyse", "write_sbc_report",
    "rank_rows", "RANK_COLUMNS", "prior_draw",
]

#: columns of ``ranks.csv``: one row per fit and scalar parameter.
RANK_COLUMNS = ("fit_id", "index", "parameter", "rank", "rank_draws", "true_value", "posterior_mean",
                "posterior_sd", "ess_bulk", "thinned_by")


# ------------------------------------------------------------------------------------------------
# Simulating from the prior, with the backend's own forward sampler
# ------------------------------------------------------------------------------------------------

def _kind(function: Any) -> str:
    """``"numpyro"``, ``"pymc"`` (a builder returning a pm.Model) or ``"shared"``."""
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
    return "shared"


def prior_draw(function: Any, kwargs: Mapping[str, Any], *, backend: str, random_seed: int) -> dict[str, np.ndarray]:
    """One joint draw of every unobserved site (latent, deterministic, and the sites whose data
    arguments are None) of ``function(**kwargs)``, by the backend's forward sampler."""
    kind = _kind(function)
    if kind == "pymc" or (kind == "shared" and backend == "pymc"):
        return _pymc_draw(function, kwargs, kind, random_seed)
    return _numpyro_draw(function, kwargs, kind, random_seed)


def _numpyro_draw(function: Any, kwargs: Mapping[str, Any], kind: str, random_seed: int) -> dict[str, np.ndarray]:
    import resilient.adapters.numpyro as adapter  # first: it sets the XLA device count
    import jax
    import numpyro
    from numpyro import handlers

    if kind == "shared":
        from resilient.model import Model, Trace

        model = Model(function, (), dict(kwargs))

        class Handler:
            math = adapter.JAX_MATH

            def sample_site(self, name: str, record: Any, observed: Any) -> Any:
                return numpyro.sample(name, adapter.to_numpyro(record), obs=observed)

            def deterministic_site(self, name: str, value: Any) -> Any:
                return numpyro.deterministic(name, value)

            def factor_site(self, name: str, log_density: Any) -> None:
                numpyro.factor(name, log_density)

        def numpyro_model() -> None:
            Trace(model, Handler()).run()
    else:
        def numpyro_model() -> None:
            function(**kwargs)

    with jax.enable_x64(True):
        trace = handlers.trace(handlers.seed(numpyro_model, rng_seed=int(random_seed))).get_trace()
    return {name: np.asarray(site["value"]) for name, site in trace.items()
            if (site["type"] == "sample" and not site["is_observed"]) or site["type"] == "deterministic"}


_PYMC_MODELS: dict[tuple, Any] = {}


def _pymc_draw(function: Any, kwargs: Mapping[str, Any], kind: str, random_seed: int) -> dict[str, np.ndarray]:
    import pymc as pm

    from resilient.many import data_fingerprint

    key = (id(function), data_fingerprint(kwargs))
    model = _PYMC_MODELS.get(key)
    if model is None:
        if kind == "shared":
            from resilient.adapters.pymc import PyMCSiteHandler
            from resilient.model import Model, Trace

            with pm.Model() as model:
                Trace(Model(function, (), dict(kwargs)), PyMCSiteHandler()).run()
        else:
            model = function(**kwargs)
        _PYMC_MODELS.clear()  # one simulator per worker at a time: models are not small
        _PYMC_MODELS[key] = (function, model)
    else:
        model = model[1]
    variables = list(model.free_RVs) + list(model.deterministics) + list(model.observed_RVs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = pm.draw(variables, random_seed=int(random_seed))
    return {var.name: np.asarray(value) for var, value in zip(variables, values)}


def _observed_arguments(function: Any, data: Mapping[str, Any], observed: Any) -> dict[str, str]:
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


# ------------------------------------------------------------------------------------------------
# The uniformity test (Säilynoja, Bürkner and Vehtari 2022)
# ------------------------------------------------------------------------------------------------

_NULL: dict[tuple, np.ndarray] = {}


def _ecdf_counts(ranks: np.ndarray, rank_draws: int) -> np.ndarray:
    """``c[i-1] = #{rank < i}`` for i = 1..L: the ECDF of the fractional ranks at z_i = i / (L + 1)."""
    ranks = np.asarray(ranks, dtype=int)
    histogram = np.bincount(ranks, minlength=rank_draws + 1)
    return np.cumsum(histogram)[:rank_draws]


def _statistic(counts: np.ndarray, n: int, z: np.ndarray) -> np.ndarray:
    """1 - 2 min over i of the binomial tail probabilities of the ECDF counts (the smallest level of a
    pointwise band that still contains the ECDF). ``counts``: (..., L)."""
    from scipy.special import bdtr

    lower = np.min(bdtr(counts, n, z), axis=-1)
    upper = np.min(_at_least(counts, n, z), axis=-1)
    return 1.0 - 2.0 * np.minimum(lower, upper)


def null_statistics(n: int, rank_draws: int, simulations: int = 10000, random_seed: int = 20220) -> np.ndarray:
    """The statistic of :func:`_statistic` for ``simulations`` sets of ``n`` uniform ranks (cached)."""
    key = (n, rank_draws, simulations, random_seed)
    if key not in _NULL:
        rng = np.random.default_rng(random_seed)
        z = np.arange(1, rank_draws + 1) / (rank_draws + 1)
        out = np.empty(simulations)
        step = max(1, 2_000_000 // max(n * (rank_draws + 1), 1))
        for start in range(0, simulations, step):
            stop = min(start + step, simulations)
            ranks = rng.integers(0, rank_draws + 1, size=(stop - start, n))
            offsets = ranks + (rank_draws + 1) * np.arange(stop - start)[:, None]
            histogram = np.bincount(offsets.ravel(), minlength=(stop - start) * (rank_draws + 1))
            counts = np.cumsum(histogram.reshape(stop - start, rank_draws + 1), axis=1)[:, :rank_draws]
            out[start:stop] = _statistic(counts, n, z)
        _NULL[key] = out
    return _NULL[key]


def _at_least(counts: np.ndarray, n: int, z: np.ndarray) -> np.ndarray:
    """P(Binomial(n, z) >= counts); 1 where counts is 0 (scipy's bdtr is NaN below 0)."""
    from scipy.special import bdtr

    counts = np.asarray(counts)
    return np.where(counts > 0, 1.0 - bdtr(np.maximum(counts - 1, 0), n, z), 1.0)


def _band(n: int, z: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """ECDF bounds (as fractions of ``n``) of the pointwise band of marginal level ``level`` at ``z``:
    the counts c with both binomial tails at least (1 - level) / 2, the band the statistic measures."""
    from scipy.special import bdtr

    tail = (1.0 - level) / 2.0
    c = np.arange(n + 1)[:, None]
    inside = (bdtr(c, n, z[None, :]) >= tail) & (_at_least(c, n, z[None, :]) >= tail)
    lower = np.where(inside.any(axis=0), np.argmax(inside, axis=0), 0)
    upper = np.where(inside.any(axis=0), n - np.argmax(inside[::-1], axis=0), n)
    return lower / n, upper / n


@dataclass(frozen=True)
class ParameterCheck:
    """One parameter's calibration verdict: ``pass`` when the ECDF of its ranks stays inside the
    simultaneous ``prob`` band (a calibrated parameter fails with probability at most ``1 - prob``)."""

    parameter: str
    fits: int
    rank_draws: int
    verdict: str  # "pass", "fail", or "n/a" (too few fits to test)
    p_value: float | None
    prob: float
    max_deviation: float | None  # largest |ECDF - uniform CDF| over the evaluation points
    low_ess_fits: int = 0  # fits whose bulk ESS was below rank_draws
    shape: str = ""  # "too many high ranks" ...: what the ECDF says, in words
    z: list[float] = field(default_factory=list, repr=False)
    ecdf: list[float] = field(default_factory=list, repr=False)
    lower: list[float] = field(default_factory=list, repr=False)
    upper: list[float] = field(default_factory=list, repr=False)
    ranks: list[int] = field(default_factory=list, repr=False)

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        values = asdict(self)
        if not arrays:
            for key in ("z", "ecdf", "lower", "upper", "ranks"):
                values.pop(key)
        return values


def uniformity_test(ranks: Sequence[int], rank_draws: int, *, prob: float = 0.99, simulations: int = 10000,
                    parameter: str = "", random_seed: int = 20220) -> ParameterCheck:
    """Test that ``ranks`` (each in 0..rank_draws) are uniform: the simultaneous band of Säilynoja et al.

    The ECDF of the fractional ranks is evaluated at z_i = i / (L + 1), i = 1..L. The band is the
    pointwise binomial band whose marginal level is raised until ``prob`` of ``simulations`` uniform
    rank sets stay inside it everywhere (the simulation method of the paper, as
    ``arviz_stats.ecdf_utils.simulate_confidence_bands`` does for continuous PIT values; here with
    discrete uniform ranks, whose ECDF at z_i has exactly the binomial law). ``p_value``: the fraction
    of uniform sets that leave a band as narrow as the observed ECDF needs.
    """
    ranks = np.asarray(ranks, dtype=int)
    n = int(ranks.size)
    if not 0 < prob < 1:
        raise ResilientError(f"`prob` must be in (0, 1), got {prob!r}. Typical: 0.95 or 0.99.")
    if n and (ranks.min() < 0 or ranks.max() > rank_draws):
        raise ResilientError(f"ranks must lie in 0..{rank_draws}, got {ranks.min()}..{ranks.max()}.")
    if n < 2:
        return ParameterCheck(parameter, n, rank_draws, "n/a", None, prob, None, ranks=ranks.tolist())
    z = np.arange(1, rank_draws + 1) / (rank_draws + 1)
    counts = _ecdf_counts(ranks, rank_draws)
    observed = float(_statistic(counts, n, z))
    null = null_statistics(n, rank_draws, simulations, random_seed)
    level = float(np.quantile(null, prob, method="higher"))
    lower, upper = _band(n, z, level)
    ecdf = counts / n
    outside = bool(np.any(ecdf < lower - 1e-12) or np.any(ecdf > upper + 1e-12))
    p_value = float((1 + np.sum(null >= observed - 1e-12)) / (1 + null.size))
    deviation = ecdf - z
    return ParameterCheck(parameter, n, rank_draws, "fail" if outside else "pass", p_value, prob,
                          float(np.max(np.abs(deviation))), shape=_shape(ecdf, z) if outside else "",
                          z=z.tolist(), ecdf=ecdf.tolist(), lower=lower.tolist(), upper=upper.tolist(),
                          ranks=ranks.tolist())


def _shape(ecdf: np.ndarray, z: np.ndarray) -> str:
    """What a failing ECDF suggests (Talts et al. 2018, figure 5): an ECDF above the uniform CDF early
    and below it late is a U-shaped histogram (too narrow), the mirror image a hump (too wide), one on
    one side throughout a shift (a bias)."""
    difference = np.asarray(ecdf) - np.asarray(z)
    shift = float(np.mean(difference))
    spread = float(np.mean(difference[z < 0.5]) - np.mean(difference[z > 0.5]))
    if abs(shift) > abs(spread):
        if shift > 0:
            return "too many low ranks: the posterior sits above the true values (biased high)"
        return "too many high ranks: the posterior sits below the true values (biased low)"
    if spread > 0:
        return "too many ranks at both ends (U shape): the posterior is too narrow (overconfident)"
    return "too many ranks in the middle (hump): the posterior is too wide (underconfident)"


# ------------------------------------------------------------------------------------------------
# Reading a run back, and the report
# ------------------------------------------------------------------------------------------------

@dataclass
class SBCResult:
    """An SBC run: a verdict per parameter, the fits used, the fits dropped and why."""

    out: Path
    checks: list[ParameterCheck]
    simulations: int
    used: int
    dropped: list[dict[str, str]]
    settings: dict[str, Any]
    report: Path | None = None

    @property
    def passed(self) -> bool:
        """No parameter outside its band (a run with dropped fits can pass: see :attr:`dropped`)."""
        return all(c.verdict != "fail" for c in self.checks) and bool(self.checks)

    @property
    def verdict(self) -> str:
        if not self.checks or all(c.verdict == "n/a" for c in self.checks):
            return "n/a"
        if not self.passed:
            return "fail"
        return "warn" if self.dropped else "pass"

    @property
    def ranks(self) -> Any:
        """``ranks.csv`` of the fits used, as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(_used_rank_rows(self.out, self.simulations)[0])

    @property
    def summary(self) -> Any:
        import pandas as pd

        return pd.DataFrame(read_summary(self.out))

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "simulations": self.simulations, "used": self.used,
                "dropped": self.dropped, "dropped_by_status": _count_by(self.dropped, "status"),
                "parameters": [c.to_dict() for c in self.checks], "settings": self.settings}


def _count_by(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[key]] = counts.get(row[key], 0) + 1
    return counts


def _used_rank_rows(out: Path, simulations: int | None = None
                    ) -> tuple[list[dict[str, Any]], list[dict[str, str]], list[dict[str, str]]]:
    """Rank rows of the fits that were accepted, the summary rows of the fits that were not, and all
    (only simulations ``0..simulations-1`` when given: a folder may hold a longer earlier run)."""
    from resilient.many import _read_rows

    summary = [row for row in read_summary(out) if simulations is None or int(row["index"]) < simulations]
    ok = {row["fit_id"] for row in summary if row["status"] == "ok"}
    dropped = [{"fit_id": r["fit_id"], "index": r["index"], "status": r["status"], "reason": r["reason"]}
               for r in summary if r["status"] != "ok"]
    rows = _read_rows(out / "ranks.csv", RANK_COLUMNS, key=("fit_id", "parameter"))
    used = []
    for row in rows.values():
        if row["fit_id"] in ok:
            used.append({**row, "index": int(row["index"]), "rank": int(row["rank"]),
                         "rank_draws": int(row["rank_draws"]), "true_value": float(row["true_value"]),
                         "posterior_mean": float(row["posterior_mean"]), "posterior_sd": float(row["posterior_sd"]),
                         "ess_bulk": float(row["ess_bulk"]) if row["ess_bulk"] else float("nan"),
                         "thinned_by": float(row["thinned_by"])})
    return used, dropped, summary


def _parameter_order(names: Sequence[str]) -> list[str]:
    def key(label: str) -> tuple:
        base, _, rest = label.partition("[")
        numbers = tuple(int(x) for x in rest.rstrip("]").split(",") if x.strip().isdigit()) if rest else ()
        return (base, numbers)

    return sorted(set(names), key=key)


def analyse(out: str | os.PathLike, *, prob: float = 0.99, simulations: int = 10000,
            requested: int | None = None) -> SBCResult:
    """The verdicts of the SBC run in ``out`` (``ranks.csv`` and ``summary.csv``; a killed run too)."""
    out = Path(out)
    if not (out / "summary.csv").is_file():
        raise ResilientError(f"{out} holds no SBC run (no summary.csv). Run resilient.sbc(..., out={str(out)!r}).")
    manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}
    used, dropped, summary = _used_rank_rows(out, requested)
    by_parameter: dict[str, list[dict[str, Any]]] = {}
    for row in used:
        by_parameter.setdefault(row["parameter"], []).append(row)
    checks = []
    for name in _parameter_order(by_parameter):
        rows = by_parameter[name]
        rank_draws = rows[0]["rank_draws"]
        if any(r["rank_draws"] != rank_draws for r in rows):
            raise ResilientError(f"{out}/ranks.csv mixes rank_draws for {name}: it holds more than one run.")
        check = uniformity_test([r["rank"] for r in rows], rank_draws, prob=prob, simulations=simulations,
                                parameter=name)
        low = sum(1 for r in rows if math.isfinite(r["ess_bulk"]) and r["ess_bulk"] < rank_draws)
        checks.append(ParameterCheck(**{**asdict(check), "low_ess_fits": low}))
    settings = {**manifest.get("run", {}), **manifest.get("sbc", {}), "prob": prob,
                "band_simulations": simulations, "backend": manifest.get("backend"),
                "model": manifest.get("model"), "random_seed": manifest.get("random_seed"),
                "policy": manifest.get("policy")}
    total = requested if requested is not None else manifest.get("sbc", {}).get("simulations", len(summary))
    return SBCResult(out=out, checks=checks, simulations=int(total), used=len({r["fit_id"] for r in used}),
                     dropped=dropped, settings=settings)


def _figure_png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _plots(check: ParameterCheck) -> dict[str, str]:
    """The ECDF difference with its simultaneous band, and the rank histogram, as base64 PNG."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figures are left alone
    from scipy.stats import binom

    colour = "#b2182b" if check.verdict == "fail" else "#2166ac"
    z = np.concatenate([[0.0], check.z, [1.0]])
    ecdf = np.concatenate([[0.0], check.ecdf, [1.0]])
    lower = np.concatenate([[0.0], check.lower, [1.0]])
    upper = np.concatenate([[0.0], check.upper, [1.0]])
    fig = Figure(figsize=(4.2, 2.8))
    axis = fig.subplots()
    axis.fill_between(z, lower - z, upper - z, step="post", color="#cccccc", lw=0)
    axis.step(z, ecdf - z, where="post", color=colour, lw=1.5)
    axis.axhline(0, color="black", lw=0.5)
    axis.set_xlabel("fractional rank")
    axis.set_ylabel("ECDF - uniform CDF")
    p_value = "" if check.p_value is None else f", p = {check.p_value:.3g}"
    axis.set_title(f"{check.parameter}: {check.verdict}{p_value} (grey: {check.prob:.0%} simultaneous band)",
                   fontsize=9)
    ecdf_png = _figure_png(fig)

    length = check.rank_draws + 1
    bins = next(b for b in (20, 25, 10, 16, 8, 5, 4, 2, 1) if length % b == 0 and b <= length)
    counts = np.bincount(np.asarray(check.ranks, dtype=int) // (length // bins), minlength=bins)[:bins]
    n = len(check.ranks)
    low, high = binom.ppf([0.005, 0.995], n, 1 / bins)
    fig = Figure(figsize=(4.2, 2.8))
    axis = fig.subplots()
    axis.axhspan(low, high, color="#cccccc", lw=0)
    axis.bar(np.arange(bins), counts, width=0.9, color=colour)
    axis.axhline(n / bins, color="black", lw=0.5)
    axis.set_xlabel(f"rank ({bins} bins of {length // bins} ranks)")
    axis.set_ylabel("fits")
    axis.set_title(f"{check.parameter}: ranks of {n} fits (grey: 99% range per bin if uniform)", fontsize=9)
    return {"ecdf": ecdf_png, "histogram": _figure_png(fig)}


def write_sbc_report(result: SBCResult, out: str | os.PathLike | None = None) -> dict[str, Path]:
    """``sbc.html`` (self-contained: plots embedded) and ``sbc.json`` in ``out`` (default: the run's folder)."""
    import jinja2

    folder = Path(out) if out is not None else result.out
    folder.mkdir(parents=True, exist_ok=True)
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                                     autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True,
                                     lstrip_blocks=True)
    template = environment.get_template("sbc.html.j2")
    figures = {check.parameter: _plots(check) for check in result.checks if check.verdict != "n/a"}
    reasons: dict[str, int] = {}
    for row in result.dropped:
        text = row["reason"] or row["status"]
        reasons[text[:300]] = reasons.get(text[:300], 0) + 1
    html = template.render(result=result, figures=figures, reasons=sorted(reasons.items(), key=lambda kv: -kv[1]),
                           dropped_by_status=_count_by(result.dropped, "status"),
                           generated=time.strftime("%Y-%m-%d %H:%M:%S"), css=_css())
    paths = {"html": folder / "sbc.html", "json": folder / "sbc.json"}
    paths["html"].write_text(html)
    paths["json"].write_text(json.dumps(result.to_dict(), indent=2, default=str, allow_nan=False)
                             if _finite(result.to_dict()) else json.dumps(_nulls(result.to_dict()), indent=2,
                                                                           default=str))
    result.report = paths["html"]
    return paths


def _css() -> str:
    path = Path(__file__).parent / "templates" / "sbc.css"
    return path.read_text() if path.is_file() else ""


def _finite(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False, default=str)
        return True
    except ValueError:
        return False


def _nulls(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nulls(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nulls(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------------
# sbc
# ------------------------------------------------------------------------------------------------

def sbc(model: Any, simulations: int = 100, *, data: Mapping[str, Any] | None = None, simulator: Any = None,
        observed: str | Sequence[str] | Mapping[str, str] | None = None, var_names: Sequence[str] | None = None,
        backend: str | None = None, draws: int = 500, tune: int = 500, chains: int = 2, rank_draws: int = 99,
        prob: float = 0.99, target_accept: float = 0.8, max_tree_depth: int = 10, random_seed: int = 0,
        policy: Policy | None = None, time_budget: float | None = None, max_attempts: int | None = None,
        out: str | os.PathLike | None = None, client: Any = None, workers: int | None = None,
        keep_draws: bool = True, report: bool = True, progressbar: bool = True, progress_lines: bool = False,
        fit_timeout: float | str | None = "auto", worker_timeout: float = 120.0) -> SBCResult:
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
    timeout = resolve_fit_timeout(fit_timeout, run["policy"])
    simulation = Simulation(simulator=simulator_spec, backend=simulation_backend, data=data, observed=observed_map,
                            parameters=parameters, rank_draws=rank_draws, random_seed=int(random_seed))
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="resilient-sbc-"))
    from resilient.many import data_fingerprint

    manifest = manifest_of("sbc", spec, backend, run, random_seed, keep_draws=keep_draws, sbc={
        "simulator": simulator_spec.key, "simulations": simulations, "rank_draws": rank_draws,
        "observed": observed_map, "parameters": list(parameters), "data": data_fingerprint(data),
        "simulation_backend": simulation_backend})
    manifest["sbc"].pop("simulations")  # more simulations into the same folder extend the run
    store = FitStore(out, manifest, records="ranks.csv", record_columns=RANK_COLUMNS)
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
    kind = _kind(simulator)
    fitted_kind = _kind(fitted)
    if backend is not None and kind != "shared" and backend != kind:
        raise ResilientError(f"The simulator is a native {kind} model, so `backend` must be {kind!r} or None, "
                             f"got {backend!r}.")
    simulation_backend = kind if kind != "shared" else (backend or ("pymc" if fitted_kind == "pymc" else "numpyro"))
    observed_map = _observed_arguments(simulator, data, observed)
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
