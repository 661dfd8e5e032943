"""Resilient against the raw backends, side by side, in one process run.

    python benchmarks/run.py [--quick] [--repeats N] [--backends numpyro,pymc]

Runs A/B in alternating order (raw first on even repeats, Resilient first on odd ones) to
cancel drift, and prints medians with min/max of:

1. overhead on the six reference posteriors: wall time of resilient.sample (preflight
   included) / the raw call (numpyro.infer.MCMC(NUTS) or pm.sample) with the same model,
   draws, chains and seed (seed 12345 + repeat, shared by both sides); ESS-bulk per second
   for both; Resilient's own split into preflight, compile, warm-up and sampling seconds;
   and the ratio of leapfrog steps taken while sampling, which says whether both sides did
   the same work (far from 1, a wall ratio is the chains' luck rather than overhead);
2. sick models, each repeat with the same seeds as above: P1 (the motivating model) time to a
   usable answer vs what the raw backend does, and P5 (centred eight schools) min ESS-bulk/s
   and divergence rate, raw centred vs Resilient;
3. preflight cost in units of one log-density-and-gradient evaluation.

Results go to benchmarks/results/<date>.json and a Markdown table to benchmarks/results/latest.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import resilient.adapters.numpyro  # noqa: E402,F401  (sets the host device count before jax starts, for both sides)
import resilient  # noqa: E402
from benchmarks.native_models import numpyro_models, pymc_model  # noqa: E402
from examples import reference_models  # noqa: E402
from resilient import record  # noqa: E402

SEED = 12345


def min_ess_bulk(posterior: dict[str, np.ndarray]) -> float:
    from arviz_stats.base import array_stats

    values = []
    for array in posterior.values():
        array = np.asarray(array, float)
        flat = array.reshape(array.shape[0], array.shape[1], -1)
        for i in range(flat.shape[2]):
            if np.ptp(flat[:, :, i]) > 0:
                values.append(float(array_stats.ess(flat[:, :, i], chain_axis=0, draw_axis=1, method="bulk")))
    return min(values) if values else float("nan")


def posterior_dict(data) -> dict[str, np.ndarray]:
    return {name: data.posterior[name].values for name in data.posterior.data_vars}


def raw_numpyro(function, data, draws, tune, chains, seed=SEED):
    import jax
    import numpyro
    from numpyro.infer import MCMC, NUTS

    method = "parallel" if jax.local_device_count() >= chains else "vectorized"  # as the adapter chooses
    start = time.perf_counter()
    with jax.enable_x64(True):
        mcmc = MCMC(NUTS(function), num_warmup=tune, num_samples=draws, num_chains=chains,
                    chain_method=method, progress_bar=False)
        mcmc.run(jax.random.PRNGKey(seed), extra_fields=("diverging", "num_steps"), **data)
        # MCMC.run returns before XLA has finished (asynchronous dispatch): stop the clock only
        # once the draws are in host memory, as Resilient's are when resilient.sample returns.
        samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
        fields = {k: np.asarray(v) for k, v in mcmc.get_extra_fields(group_by_chain=True).items()}
    seconds = time.perf_counter() - start
    del numpyro
    return seconds, samples, float(fields["diverging"].mean()), int(np.sum(fields["num_steps"]))


def raw_pymc(name, data, draws, tune, chains, seed=SEED):
    import pymc as pm

    start = time.perf_counter()
    model = pymc_model(name, data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = pm.sample(draws, tune=tune, chains=chains, cores=min(chains, os.cpu_count() or 1), random_seed=seed,
                           nuts_sampler="pymc",
                           progressbar=False, compute_convergence_checks=False, model=model)
    seconds = time.perf_counter() - start
    return (seconds, posterior_dict(result), float(result.sample_stats["diverging"].values.mean()),
            int(result.sample_stats["n_steps"].values.sum()))


def with_resilient(backend, name, data, draws, tune, chains, native=True, seed=SEED):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if backend == "numpyro":
            model = numpyro_models()[name] if native else reference_models.LOADERS[name][0]
            result = resilient.sample(model, backend="numpyro", draws=draws, tune=tune, chains=chains,
                                      random_seed=seed, progressbar=False, **data)
        else:
            result = resilient.sample(model=pymc_model(name, data), draws=draws, tune=tune, chains=chains,
                                      random_seed=seed, progressbar=False, engine="pymc")
    seconds = time.perf_counter() - start
    attempts = record.read_attempts(result)
    split = {key: sum(a.get(key, 0.0) or 0.0 for a in attempts)
             for key in ("compile_seconds", "warmup_seconds", "sampling_seconds")}
    split["preflight_seconds"] = (record.read_preflight(result) or {}).get("seconds", 0.0)
    split["steps"] = int(result.sample_stats["n_steps"].values.sum())
    return seconds, posterior_dict(result), float(result.sample_stats["diverging"].values.mean()), split, attempts


def summarise(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def overhead(backends, names, draws, tune, chains, repeats):
    rows = []
    for name in names:
        _, data, _ = reference_models.load(name)
        for backend in backends:
            raw_times, res_times, raw_ess, res_ess, splits, steps = [], [], [], [], [], []
            for repeat in range(repeats):
                # One seed per repeat, shared by both sides: a single seed would compare one pair of
                # chains (their warm-up lengths differ by luck) however many repeats ran.
                seed = SEED + repeat
                order = ["raw", "resilient"] if repeat % 2 == 0 else ["resilient", "raw"]
                for side in order:
                    if side == "raw":
                        if backend == "numpyro":
                            seconds, posterior, _, raw_steps = raw_numpyro(numpyro_models()[name], data, draws, tune,
                                                                           chains, seed)
                        else:
                            seconds, posterior, _, raw_steps = raw_pymc(name, data, draws, tune, chains, seed)
                        raw_times.append(seconds)
                        raw_ess.append(min_ess_bulk(posterior) / seconds)
                    else:
                        seconds, posterior, _, split, _ = with_resilient(backend, name, data, draws, tune, chains,
                                                                         seed=seed)
                        res_times.append(seconds)
                        res_ess.append(min_ess_bulk(posterior) / seconds)
                        splits.append(split)
                steps.append(split["steps"] / raw_steps)
            ratios = [r / a for r, a in zip(res_times, raw_times)]
            row = {"model": name, "backend": backend, "ratio": summarise(ratios), "raw_seconds": summarise(raw_times),
                   "resilient_seconds": summarise(res_times), "raw_ess_per_second": summarise(raw_ess),
                   "resilient_ess_per_second": summarise(res_ess), "steps_ratio": summarise(steps),
                   "resilient_split": {k: statistics.median(s[k] for s in splits) for k in splits[0]}}
            rows.append(row)
            print(f"{name:42s} {backend:8s} ratio {row['ratio']['median']:.2f} "
                  f"(raw {row['raw_seconds']['median']:.1f} s, resilient {row['resilient_seconds']['median']:.1f} s, "
                  f"leapfrog steps x{row['steps_ratio']['median']:.2f})",
                  flush=True)
    return rows


def p1_once(backend, draws, tune, chains, seed):
    """P1, the motivating model written natively: what the raw backend does, and Resilient's time
    to a usable answer."""
    start = time.perf_counter()
    try:
        if backend == "numpyro":
            _, _, divergent, _ = raw_numpyro(numpyro_models()["motivating"], {}, draws, tune, chains, seed)
        else:
            _, _, divergent, _ = raw_pymc("motivating", {}, draws, tune, chains, seed)
        raw_outcome = f"sampled, {100 * divergent:.2f}% divergent"
    except Exception as error:  # the raw backend's failure is the measurement
        raw_outcome = f"{type(error).__name__}: {str(error)[:80]}"
    raw_seconds = time.perf_counter() - start
    seconds, _, divergent, _, attempts = with_resilient(backend, "motivating", {}, draws, tune, chains, seed=seed)
    return {"raw_outcome": raw_outcome, "raw_seconds": raw_seconds, "resilient_seconds": seconds,
            "resilient_divergent": divergent, "attempts": len(attempts)}


def p5_once(backend, data, draws, tune, chains, seed):
    """P5, centred eight schools: min ESS-bulk/s and divergence rate, raw centred vs Resilient."""
    if backend == "numpyro":
        raw_seconds, posterior, raw_div, _ = raw_numpyro(numpyro_models()["eight_schools_centered"], data, draws,
                                                      tune, chains, seed)
    else:
        raw_seconds, posterior, raw_div, _ = raw_pymc("eight_schools_centered", data, draws, tune, chains, seed)
    raw_ess = min_ess_bulk({k: v for k, v in posterior.items() if k in ("mu", "tau", "theta")}) / raw_seconds
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = resilient.sample(reference_models.eight_schools_centered, backend=backend, draws=draws,
                                  tune=tune, chains=chains, random_seed=seed, progressbar=False, **data)
    seconds = time.perf_counter() - start
    res_ess = min_ess_bulk({k: result.posterior[k].values for k in ("mu", "tau", "theta")}) / seconds
    return {"raw_ess_per_second": raw_ess, "raw_divergent": raw_div, "resilient_ess_per_second": res_ess,
            "resilient_divergent": float(result.sample_stats["diverging"].values.mean()),
            "ess_ratio": res_ess / raw_ess, "attempts": len(record.read_attempts(result))}


def sick(backends, draws, tune, chains, repeats):
    """P1 and P5 on each backend, ``repeats`` times with seed SEED + repeat: medians [min-max]."""
    rows = []
    _, data, _ = reference_models.load("eight_schools-eight_schools_noncentered")
    for backend in backends:
        for case, once in (("P1", lambda seed: p1_once(backend, draws, tune, chains, seed)),
                           ("P5", lambda seed: p5_once(backend, data, draws, tune, chains, seed))):
            runs = [once(SEED + repeat) for repeat in range(repeats)]
            row = {"case": case, "backend": backend, "runs": runs}
            for key in runs[0]:
                if key == "raw_outcome":
                    row[key] = sorted({run[key] for run in runs})
                elif key == "attempts":
                    row[key] = [run[key] for run in runs]
                else:
                    row[key] = summarise([run[key] for run in runs])
            rows.append(row)
            if case == "P1":
                print(f"P1 {backend}: raw {'; '.join(row['raw_outcome'])} after {row['raw_seconds']['median']:.1f} s; "
                      f"resilient {row['resilient_seconds']['median']:.1f} s, attempts {row['attempts']}", flush=True)
            else:
                print(f"P5 {backend}: min ESS/s x{row['ess_ratio']['median']:.1f} "
                      f"[{row['ess_ratio']['min']:.1f}-{row['ess_ratio']['max']:.1f}], divergent raw "
                      f"{100 * row['raw_divergent']['median']:.2f}% vs resilient "
                      f"{100 * row['resilient_divergent']['median']:.2f}%", flush=True)
    return rows


def preflight_cost(backends, names, repeats=5):
    from resilient.backend import get_adapter
    from resilient.checks import check_compiled
    from resilient.model import Model

    rows = []
    for name in names:
        function, data, _ = reference_models.load(name)
        for backend in backends:
            model = Model(function, (), data)
            compiled = get_adapter(backend).compile(model)
            x = compiled.initial_point("default", 0)
            compiled.log_density_and_gradient(x)
            check_compiled(compiled, model, backend)  # compile what preflight uses
            evals = []
            for _ in range(200):
                start = time.perf_counter()
                compiled.log_density_and_gradient(x)
                evals.append(time.perf_counter() - start)
            checks = []
            for _ in range(repeats):
                start = time.perf_counter()
                check_compiled(compiled, model, backend)
                checks.append(time.perf_counter() - start)
            gradient = statistics.median(evals)
            rows.append({"model": name, "backend": backend, "gradient_seconds": gradient,
                         "preflight_seconds": statistics.median(checks),
                         "preflight_in_gradients": statistics.median(checks) / gradient})
            print(f"preflight {name:42s} {backend:8s} {rows[-1]['preflight_in_gradients']:.1f} gradient evaluations "
                  f"({1e3 * statistics.median(checks):.2f} ms)", flush=True)
    return rows


def _span(summary, spec) -> str:
    """``median [min-max]``, or one number when every repeat gave it."""
    median, low, high = (format(summary[k], spec) for k in ("median", "min", "max"))
    return median if low == high else f"{median} [{low}-{high}]"


def _outcomes(row) -> str:
    """The raw backend's P1 outcomes; runs that all sampled as one range of divergence rates."""
    outcomes = row["raw_outcome"]
    if len(outcomes) > 1 and all(o.startswith("sampled, ") for o in outcomes):
        rates = sorted(float(o.removeprefix("sampled, ").removesuffix("% divergent")) for o in outcomes)
        return f"sampled, {rates[0]:.2f}-{rates[-1]:.2f}% divergent"
    return "; ".join(outcomes)


def _attempts(row) -> str:
    return "/".join(str(a) for a in row["attempts"])


def _steps(row) -> str:
    return _span(row["steps_ratio"], ".2f") if "steps_ratio" in row else "-"


def markdown(results) -> str:
    lines = [f"Measured {results['date']} on {results['machine']} (Python {results['python']}, "
             + ", ".join(f"{k} {v}" for k, v in results["versions"].items())
             + f"); draws={results['settings']['draws']}, tune={results['settings']['tune']}, "
             f"chains={results['settings']['chains']}, {results['settings']['repeats']} repeat(s), medians [min-max].", "",
             "| model | backend | wall ratio resilient/raw | raw s | resilient s (preflight incl. compile / recompile / warm-up incl. JIT / sampling) | leapfrog steps resilient/raw | ESS-bulk/s raw | ESS-bulk/s resilient |",
             "|---|---|---|---|---|---|---|---|"]
    for row in results["overhead"]:
        split = row["resilient_split"]
        lines.append(
            f"| {row['model']} | {row['backend']} | {_span(row['ratio'], '.2f')} "
            f"| {row['raw_seconds']['median']:.1f} | {row['resilient_seconds']['median']:.1f} "
            f"({split['preflight_seconds']:.1f} / {split['compile_seconds']:.1f} / {split['warmup_seconds']:.1f} / {split['sampling_seconds']:.1f}) "
            f"| {_steps(row)} | {row['raw_ess_per_second']['median']:.0f} | {row['resilient_ess_per_second']['median']:.0f} |")
    lines += ["", "| sick model | backend | raw backend | Resilient |", "|---|---|---|---|"]
    for row in results["sick"]:
        if row["case"] == "P1":
            lines.append(f"| P1 motivating | {row['backend']} | {_outcomes(row)} "
                         f"({_span(row['raw_seconds'], '.1f')} s) | usable answer in "
                         f"{_span(row['resilient_seconds'], '.1f')} s, attempts {_attempts(row)}, "
                         f"{_span(row['resilient_divergent'], '.2%')} divergent |")
        else:
            lines.append(f"| P5 centred eight schools | {row['backend']} | min ESS-bulk/s "
                         f"{_span(row['raw_ess_per_second'], '.1f')}, {_span(row['raw_divergent'], '.2%')} divergent "
                         f"| min ESS-bulk/s {_span(row['resilient_ess_per_second'], '.1f')} "
                         f"(x{_span(row['ess_ratio'], '.1f')}), {_span(row['resilient_divergent'], '.2%')} divergent, "
                         f"attempts {_attempts(row)} |")
    lines += ["", "| model | backend | preflight in gradient evaluations | preflight ms |", "|---|---|---|---|"]
    for row in results["preflight"]:
        lines.append(f"| {row['model']} | {row['backend']} | {row['preflight_in_gradients']:.1f} | "
                     f"{1e3 * row['preflight_seconds']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, 500 draws: a smoke run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--backends", default="numpyro,pymc")
    parser.add_argument("--models", default=",".join(reference_models.NAMES))
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: overhead,sick,preflight")
    options = parser.parse_args(argv)
    repeats, draws = (1, 500) if options.quick else (options.repeats, options.draws)
    tune, chains = draws, 4
    backends = options.backends.split(",")
    names = options.models.split(",")
    skip = set(options.skip.split(",")) - {""}
    import importlib.metadata as metadata

    results = {
        "date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "versions": {p: metadata.version(p) for p in ("numpyro", "jax", "pymc", "arviz")},
        "settings": {"draws": draws, "tune": tune, "chains": chains, "repeats": repeats},
        "overhead": [] if "overhead" in skip else overhead(backends, names, draws, tune, chains, repeats),
        "sick": [] if "sick" in skip else sick(backends, draws, tune, chains, repeats),
        "preflight": [] if "preflight" in skip else preflight_cost(backends, names),
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{results['date']}{'-quick' if options.quick else ''}.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (out / ("latest-quick.md" if options.quick else "latest.md")).write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
