"""Time to 1,000 effective draws, engine against engine, in one run (issue #14).

    python benchmarks/engines.py [--sides pymc,nutpie,numpyro,resilient-auto,resilient-nutpie] [--models ...]

For each model (the six posteriordb reference posteriors, P1 the motivating model, P5 centred eight
schools) and each side, one fresh interpreter runs the same call twice: the first call is *cold*
(nothing compiled in this process; PyTensor's and JAX's on-disk caches as the machine has them) and
the second *warm* (the model built again, as a user re-running a cell); ``resilient-auto`` makes a
*third* call, because its ski rental may pay nutpie's first compilation in the second. Each call is 4 chains x
(1000 warm-up + 1000 draws), seed 12345, on every core. The figure is the whole call's wall time
(compilation, preflight, warm-up, draws, conversion) times 1000 / min ESS-bulk over the model's
free variables: the seconds to 1,000 effective draws at this run length. Sides:

* ``pymc``: ``pm.sample(nuts_sampler="pymc")``; ``nutpie``: ``nutpie.compile_pymc_model`` +
  ``nutpie.sample``; ``numpyro``: ``MCMC(NUTS)`` on the same model written for NumPyro;
* ``resilient-auto``: ``resilient.sample(pm_model)`` with ``engine="auto"``;
  ``resilient-nutpie``: the same with ``engine="nutpie"`` (Resilient's overhead over raw nutpie).
* not in the default set, for the ways nutpie runs that ``auto`` never picks: ``nutpie-jax``:
  ``nutpie.compile_pymc_model(model, backend="jax")``; ``resilient-jax``: ``resilient.sample(pm_model,
  backend="jax")``; ``resilient-nutpie-numpyro``: ``resilient.sample(numpyro_fn, engine="nutpie")`` (nutpie's
  function interface over NumPyro's log density).

Ratios are to the fastest raw side per model (cold to cold, warm to warm). Results go to
``benchmarks/results/engines-<date>.json``; a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEED = 12345
DRAWS, TUNE, CHAINS = 1000, 1000, 4
MODELS = ("eight_schools-eight_schools_noncentered", "kidiq-kidscore_momiq", "arK-arK", "sblrc-blr",
          "mesquite-logmesquite", "earnings-logearn_height", "motivating", "eight_schools_centered")
RAW = ("pymc", "nutpie", "numpyro")
SIDES = (*RAW, "resilient-auto", "resilient-nutpie")
EXTRA = ("nutpie-jax", "resilient-jax", "resilient-nutpie-numpyro")
#: calls per process: auto also makes a third (its ski rental may buy nutpie's compilation on the second).
PHASES = ("cold", "warm", "third")


def _data(name: str) -> dict:
    from examples import reference_models

    if name == "motivating":
        return {}
    if name == "eight_schools_centered":
        name = "eight_schools-eight_schools_noncentered"
    return reference_models.load(name)[1]


def _min_ess(posterior: dict[str, np.ndarray], names: list[str]) -> float:
    from arviz_stats.base import array_stats

    values = []
    for name in names:
        array = np.asarray(posterior[name], float)
        flat = array.reshape(array.shape[0], array.shape[1], -1)
        for i in range(flat.shape[2]):
            if np.ptp(flat[:, :, i]) > 0:
                values.append(float(array_stats.ess(flat[:, :, i], chain_axis=0, draw_axis=1, method="bulk")))
    return min(values) if values else float("nan")


def _call(side: str, name: str) -> dict:
    """One call of ``side`` on model ``name``: seconds, min ESS-bulk, divergences, engine used."""
    from benchmarks.native_models import numpyro_models, pymc_model

    data = _data(name)
    started = time.perf_counter()
    engine = side
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if side == "resilient-nutpie-numpyro":
            import resilient
            from resilient import record

            result = resilient.sample(numpyro_models()[name], engine="nutpie", draws=DRAWS, tune=TUNE, chains=CHAINS,
                                      random_seed=SEED, progressbar=False, **data)
            engine = f"{(record.read_run(result) or {}).get('backend')}"
            free = sorted(_numpyro_latents(numpyro_models()[name], data))
            posterior = {k: result["posterior"][k].values for k in free}
            divergent = int(result["sample_stats"]["diverging"].values.sum())
        elif side == "numpyro":
            import jax
            from numpyro.infer import MCMC, NUTS

            with jax.enable_x64(True):
                method = "parallel" if jax.local_device_count() >= CHAINS else "vectorized"
                mcmc = MCMC(NUTS(numpyro_models()[name]), num_warmup=TUNE, num_samples=DRAWS, num_chains=CHAINS,
                            chain_method=method, progress_bar=False)
                mcmc.run(jax.random.PRNGKey(SEED), extra_fields=("diverging",), **data)
                posterior = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
                divergent = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
            free = sorted(posterior)
        else:
            model = pymc_model(name, data)
            free = [rv.name for rv in model.free_RVs]
            if side == "pymc":
                import pymc as pm

                result = pm.sample(DRAWS, tune=TUNE, chains=CHAINS, random_seed=SEED, progressbar=False,
                                   compute_convergence_checks=False, model=model, nuts_sampler="pymc")
            elif side in ("nutpie", "nutpie-jax"):
                import nutpie

                compiled = nutpie.compile_pymc_model(model, backend="jax" if side == "nutpie-jax" else "numba")
                result = nutpie.sample(compiled, draws=DRAWS, tune=TUNE, chains=CHAINS, seed=SEED, progress_bar=False)
            else:
                import resilient
                from resilient import record

                how = {"resilient-auto": {"engine": "auto"}, "resilient-nutpie": {"engine": "nutpie"},
                       "resilient-jax": {"backend": "jax"}}[side]
                result = resilient.sample(model=model, draws=DRAWS, tune=TUNE, chains=CHAINS, random_seed=SEED,
                                          progressbar=False, **how)
                run = record.read_run(result) or {}
                engine = f"{run.get('backend')}"
            posterior = {k: result["posterior"][k].values for k in free}
            divergent = int(result["sample_stats"]["diverging"].values.sum())
    seconds = time.perf_counter() - started
    ess = _min_ess(posterior, free)
    return {"seconds": seconds, "min_ess_bulk": ess, "seconds_per_1000_ess": seconds * 1000 / ess,
            "divergences": divergent, "engine": engine}


def _numpyro_latents(model, data: dict) -> list[str]:
    """The free (sampled, not observed) sites of a NumPyro model, as raw NumPyro's get_samples names them."""
    import jax
    from numpyro import handlers

    from numpyro.infer import init_to_uniform

    with jax.enable_x64(True):  # values from init_to_uniform: an improper prior cannot be drawn from
        trace = handlers.trace(handlers.substitute(handlers.seed(model, 0), substitute_fn=init_to_uniform)
                               ).get_trace(**data)
    return [n for n, site in trace.items() if site["type"] == "sample" and not site["is_observed"]]


def _child(side: str, name: str) -> None:
    if side in ("numpyro",) or side.startswith("resilient"):
        import resilient.adapters.numpyro  # noqa: F401  (one XLA device per chain, as Resilient sets it)
    rows = {}
    for phase in PHASES if side == "resilient-auto" else PHASES[:2]:
        try:
            rows[phase] = _call(side, name)
        except Exception as error:  # noqa: BLE001 - a side that fails is a measurement
            rows[phase] = {"error": f"{type(error).__name__}: {str(error)[:200]}"}
    print("RESULT " + json.dumps(rows))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "MODEL"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    results = []
    for name in args.models.split(","):
        for side in args.sides.split(","):
            load = os.getloadavg()[0]
            process = subprocess.run([sys.executable, __file__, "--child", side, name], capture_output=True,
                                     text=True, timeout=1800, cwd=ROOT)
            line = next((l for l in process.stdout.splitlines() if l.startswith("RESULT ")), None)
            rows = json.loads(line[7:]) if line else {"cold": {"error": process.stderr[-300:]},
                                                       "warm": {"error": "no result"}}
            row = {"model": name, "side": side, "load_average_before": load, **rows}
            results.append(row)
            print(json.dumps(row), flush=True)
    path = Path(args.out) / f"engines-{datetime.date.today().isoformat()}.json"
    if path.exists():  # a partial rerun replaces its own rows and keeps the others
        done = {(r["model"], r["side"]) for r in results}
        results = [r for r in json.loads(path.read_text())["rows"] if (r["model"], r["side"]) not in done] + results
    for row in results:
        for phase in PHASES:
            if phase not in row:
                continue
            versus = "warm" if phase == "third" else phase
            raw = [r[versus]["seconds_per_1000_ess"] for r in results
                   if r["model"] == row["model"] and r["side"] in RAW and "seconds_per_1000_ess" in r[versus]]
            if raw and "seconds_per_1000_ess" in row[phase]:
                row[phase]["ratio_to_fastest_raw"] = row[phase]["seconds_per_1000_ess"] / min(raw)
    import nutpie
    import pymc
    import numpyro

    out = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "pymc": pymc.__version__,
           "nutpie": nutpie.__version__, "numpyro": numpyro.__version__, "draws": DRAWS, "tune": TUNE,
           "chains": CHAINS, "seed": SEED, "rows": results}
    path.write_text(json.dumps(out, indent=1))
    print(markdown(results))
    print(f"written {path}")
    return 0


def markdown(results: list[dict]) -> str:
    """Seconds to 1,000 effective draws (cold / warm, and auto's third call) per model and side, and
    Resilient auto's ratios."""
    sides = list(dict.fromkeys(r["side"] for r in results))
    lines = ["| model | " + " | ".join(sides) + " | auto's engine (cold, warm, third) | auto / fastest raw "
             "(cold, warm, third against warm) |",
             "|---|" + "---|" * (len(sides) + 2)]
    for name in dict.fromkeys(r["model"] for r in results):
        cells, auto = [], None
        for side in sides:
            row = next((r for r in results if r["model"] == name and r["side"] == side), None)
            parts = []
            for phase in PHASES:
                if phase == "third" and phase not in (row or {}):
                    continue
                value = (row or {}).get(phase, {}).get("seconds_per_1000_ess")
                parts.append("err" if value is None else f"{value:.1f}")
            cells.append(" / ".join(parts))
            if side == "resilient-auto":
                auto = row
        ratio = "" if auto is None else ", ".join(
            f"{auto[p].get('ratio_to_fastest_raw', float('nan')):.2f}" for p in PHASES if p in auto)
        engine = "" if auto is None else ", ".join(
            {"pymc": "PyMC", "nutpie": "nutpie"}.get(auto.get(p, {}).get("engine", ""), "?") for p in PHASES if p in auto)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {engine} | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
