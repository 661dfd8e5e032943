"""Time to 1,000 effective draws, engine against engine, in one run (issues #14, #24).

    python benchmarks/engines.py [--sides pymc,nutpie,numpyro,resilient-auto,resilient-nutpie] [--models ...]
                                 [--repeats 3]

For each model (the six posteriordb reference posteriors, P1 the motivating model, P5 centred eight
schools) and each side, one fresh interpreter runs the same call twice: the first call is *cold*
(nothing compiled in this process, and the on-disk compilation caches empty: each side gets its own new
PyTensor compiledir, with PyTensor's Numba cache in it, Numba cache and Resilient cache folder) and the
second *warm* (the model built again, as a user re-running a cell); ``resilient-auto`` makes a *third* call,
because its ski rental may pay nutpie's first compilation in the second. Then a *second process* runs the
call once more with the caches the first process filled (a new Python session on the same machine: PyTensor's
compiledir and Numba cache for PyMC and nutpie, Resilient's JAX persistent cache for NumPyro runs; raw NumPyro
keeps no cache unless its user sets one). Each call is 4 chains x (1000 warm-up + 1000 draws), seed 12345 (with
``--vary-seed``, 12345 + the repeat's number, the same for every side), on every core. The figure is the whole
call's wall time (compilation, preflight, warm-up, draws, conversion) times 1000 / min ESS-bulk over the model's
free variables: the seconds to 1,000 effective draws at this run length.
With ``--repeats``, each (model, side) runs that many times, the sides in turn (their order reversed every other
repeat, so load falls on all alike); the table gives medians. Sides:

* ``pymc``: ``pm.sample(nuts_sampler="pymc")``; ``nutpie``: ``nutpie.compile_pymc_model`` +
  ``nutpie.sample``; ``numpyro``: ``MCMC(NUTS)`` on the same model written for NumPyro;
* ``resilient-auto``: ``resilient.sample(pm_model)`` with ``engine="auto"``;
  ``resilient-nutpie``: the same with ``engine="nutpie"`` (Resilient's overhead over raw nutpie).
* not in the default set, for the ways nutpie runs that ``auto`` never picks: ``nutpie-jax``:
  ``nutpie.compile_pymc_model(model, backend="jax")``; ``resilient-jax``: ``resilient.sample(pm_model,
  backend="jax")``; ``resilient-nutpie-numpyro``: ``resilient.sample(numpyro_fn, engine="nutpie")`` (nutpie's
  function interface over NumPyro's log density); ``resilient-numpyro``: ``resilient.sample(pm_model,
  engine="numpyro")`` (NumPyro's NUTS over PyMC's JAX translation, opt-in).

Ratios are to the fastest raw side per model (medians; cold to cold, warm to warm, the second process to raw
nutpie's cold call: issue #24's goal is at most 0.8). Each row records the 1-minute load average before each
process. Results go to ``benchmarks/results/engines-<date>.json``; a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
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
EXTRA = ("nutpie-jax", "resilient-jax", "resilient-nutpie-numpyro", "resilient-numpyro")
#: calls per process: auto also makes a third (its ski rental may buy nutpie's compilation on the second).
PHASES = ("cold", "warm", "third")
#: the call of the second process (on the caches the first process filled)
SECOND = "second_process"


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
                       "resilient-jax": {"backend": "jax"}, "resilient-numpyro": {"engine": "numpyro"}}[side]
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


def _child(side: str, name: str, calls: str = "first", seed: str = str(SEED)) -> None:
    global SEED
    SEED = int(seed)
    if side in ("numpyro",) or side.startswith("resilient"):
        import resilient.adapters.numpyro  # noqa: F401  (one XLA device per chain, as Resilient sets it)
    rows = {}
    phases = (SECOND,) if calls == "second" else PHASES if side == "resilient-auto" else PHASES[:2]
    for phase in phases:
        try:
            rows[phase] = _call(side, name)
        except Exception as error:  # noqa: BLE001 - a side that fails is a measurement
            rows[phase] = {"error": f"{type(error).__name__}: {str(error)[:200]}"}
    print("RESULT " + json.dumps(rows))


def _cache_environment(folder: Path) -> dict[str, str]:
    """The environment of a side's processes: its own empty on-disk caches in ``folder`` (PyTensor's compiledir,
    which holds PyTensor's Numba cache; Numba's own cache; Resilient's cache root, with JAX's persistent cache)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}  # no cache of the caller's
    flags = [f for f in env.get("PYTENSOR_FLAGS", "").split(",") if f and not f.startswith("base_compiledir")]
    env["PYTENSOR_FLAGS"] = ",".join([*flags, f"base_compiledir={folder / 'pytensor'}"])
    env["NUMBA_CACHE_DIR"] = str(folder / "numba")
    env["RESILIENT_CACHE_DIR"] = str(folder / "resilient")
    env.pop("RESILIENT_CACHE", None)
    return env


def _process(side: str, name: str, calls: str, env: dict[str, str], seed: int = SEED) -> dict:
    process = subprocess.run([sys.executable, __file__, "--child", side, name, calls, str(seed)], capture_output=True,
                             text=True, timeout=1800, cwd=ROOT, env=env)
    line = next((l for l in process.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line:
        return json.loads(line[7:])
    return {"cold" if calls == "first" else SECOND: {"error": process.stderr[-300:]}}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise(results: list[dict]) -> dict:
    """Per (model, side, phase): the median seconds per 1,000 ESS over repeats (and the repeats counted), and
    Resilient's ratios to the fastest raw side's medians."""
    medians: dict = {}
    for row in results:
        for phase in (*PHASES, SECOND):
            value = row.get(phase, {}).get("seconds_per_1000_ess")
            if value is not None:
                medians.setdefault((row["model"], row["side"], phase), []).append(value)
    out = {}
    for (model, side, phase), values in medians.items():
        out.setdefault(model, {}).setdefault(side, {})[phase] = {"median": _median(values), "n": len(values),
                                                                 "values": values}
    for model, sides in out.items():
        for side, phases in sides.items():
            for phase, cell in phases.items():
                versus = {"third": "warm", SECOND: "cold"}.get(phase, phase)
                raw = [sides[r][versus]["median"] for r in RAW if r in sides and versus in sides[r]]
                if raw and phase != SECOND:
                    cell["ratio_to_fastest_raw"] = cell["median"] / min(raw)
                if phase == SECOND and "nutpie" in sides and "cold" in sides["nutpie"]:
                    cell["ratio_to_cold_raw_nutpie"] = cell["median"] / sides["nutpie"]["cold"]["median"]
                if phase == SECOND and raw:
                    cell["ratio_to_fastest_cold_raw"] = cell["median"] / min(raw)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeats", type=int, default=1, help="runs per (model, side); the table gives medians")
    parser.add_argument("--vary-seed", action="store_true",
                        help=f"repeat k runs every side with seed {SEED} + k, so the medians also average over the "
                             "effective sample size one seed happens to give (both sides get the same seeds)")
    parser.add_argument("--child", nargs="+", metavar="SIDE MODEL [first|second] [SEED]", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    path = Path(args.out) / f"engines-{datetime.date.today().isoformat()}.json"
    results = []
    sides = args.sides.split(",")
    planned = {(m, s) for m in args.models.split(",") for s in sides}
    # a partial rerun on the same day replaces its own (model, side) rows and keeps the others
    kept = [r for r in json.loads(path.read_text()).get("rows", []) if (r["model"], r["side"]) not in planned
            ] if path.exists() else []
    for repeat in range(args.repeats):
        seed = SEED + repeat if args.vary_seed else SEED
        for name in args.models.split(","):
            for side in sides if repeat % 2 == 0 else sides[::-1]:  # alternating: each side first as often
                folder = Path(tempfile.mkdtemp(prefix="engines-caches-"))
                try:
                    env = _cache_environment(folder)
                    load = os.getloadavg()[0]
                    rows = _process(side, name, "first", env, seed)
                    load_second = os.getloadavg()[0]
                    rows.update(_process(side, name, "second", env, seed))
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
                row = {"model": name, "side": side, "repeat": repeat, "seed": seed, "load_average_before": load,
                       "load_average_before_second_process": load_second, **rows}
                results.append(row)
                print(json.dumps(row), flush=True)
                _write(path, kept + results, args.repeats)
    print(markdown(kept + results))
    print(f"written {path}")
    return 0


def _write(path: Path, rows: list[dict], repeats: int) -> None:
    """The rows so far and their medians (written after each row: a run cut short keeps what it measured)."""
    import nutpie
    import numpyro
    import pymc

    out = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "pymc": pymc.__version__,
           "nutpie": nutpie.__version__, "numpyro": numpyro.__version__, "draws": DRAWS, "tune": TUNE,
           "chains": CHAINS, "seed": SEED, "repeats": repeats, "medians": summarise(rows), "rows": rows}
    path.write_text(json.dumps(out, indent=1))


def markdown(results: list[dict]) -> str:
    """Median seconds to 1,000 effective draws (cold / warm / auto's third / second process) per model and side,
    and Resilient auto's ratios."""
    summary = summarise(results)
    sides = list(dict.fromkeys(r["side"] for r in results))
    lines = ["| model | " + " | ".join(sides) + " | auto's engine (cold, warm, third) | auto / fastest raw "
             "(cold, warm, third against warm) | auto's second process / cold raw nutpie |",
             "|---|" + "---|" * (len(sides) + 3)]
    for name in dict.fromkeys(r["model"] for r in results):
        cells = []
        for side in sides:
            phases = summary.get(name, {}).get(side, {})
            parts = [f"{phases[p]['median']:.1f}" if p in phases else "err" for p in (*PHASES, SECOND)
                     if p != "third" or side == "resilient-auto"]
            cells.append(" / ".join(parts))
        auto = summary.get(name, {}).get("resilient-auto", {})
        ratio = ", ".join(f"{auto[p].get('ratio_to_fastest_raw', float('nan')):.2f}" for p in PHASES if p in auto)
        second = auto.get(SECOND, {}).get("ratio_to_cold_raw_nutpie")
        engines = []
        for phase in PHASES:
            used = [r.get(phase, {}).get("engine", "?") for r in results
                    if r["model"] == name and r["side"] == "resilient-auto" and phase in r]
            engines.append("/".join(sorted({{"pymc": "PyMC", "nutpie": "nutpie"}.get(u, u) for u in used})) or "?")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {', '.join(engines)} | {ratio} | "
                     + ("" if second is None else f"{second:.2f}") + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
