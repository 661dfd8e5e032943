"""float32 against float64 on a proportion_test-like NumPyro model (issue #16: "the float64 default doubles the
time of a 100k-row model, proportion_test 116 s vs 62 s raw float32"): a logistic regression of a 0/1 outcome on
an intercept and two 0/1 treatments, ``rows`` rows, sampled by ``resilient.sample`` with ``float32=True`` and
``float32=False`` (same seed, draws, chains). The time is NUTS's own (warm-up + sampling seconds from the attempt
log), without the compile; the wall time of the call (compile and preflight included) is recorded too
(``compile_seconds`` is the loop's own, near 0: preflight compiled the model before it). What ``float32="auto"``'s data-size threshold
(``resilient.precision.AUTO_FLOAT32_MIN_ELEMENTS``) rests on.

    python benchmarks/precision.py                         # rows 1e3, 1e4, 1e5; writes results/precision-<date>.json
    python benchmarks/precision.py --rows 100000 --draws 500

``--raw`` (issue #26, item 2: "float64 by default slows NumPyro models that raw NumPyro runs") times instead the
same call a user makes, raw against Resilient, each in a fresh interpreter (compile, preflight and everything
included: the wall time of the call): a logistic regression on an intercept and ``--predictors`` - 1 standard
normal predictors, raw ``MCMC(NUTS(model), chain_method="sequential")`` in NumPyro's default precision (as
benchmarks/gallery.py runs it; ``chain_method="parallel"`` too with ``--raw-parallel``) against
``resilient.sample`` with its default precision (``float32=None``: raw NumPyro's), with ``float32=False`` (the
default before issue #26) and with ``float32="auto"``. Sides alternate over ``--repeats`` rounds.

    python benchmarks/precision.py --raw --rows 100000 --predictors 5 --draws 500 --tune 500 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def proportion_data(rows: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    called = rng.integers(0, 2, rows)
    emailed = rng.integers(0, 2, rows)
    design = np.stack([np.ones(rows), called, emailed], axis=1).astype(float)
    logits = design @ np.array([-1.0, 0.3, 0.1])
    outcome = (rng.uniform(size=rows) < 1 / (1 + np.exp(-logits))).astype(float)
    return design, outcome


def proportion_model(design, outcome=None):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    beta = numpyro.sample("coefficients", dist.Normal(jnp.zeros(design.shape[-1]), 1.0).to_event(1))
    with numpyro.plate("data", design.shape[0]):
        numpyro.sample("obs", dist.Bernoulli(logits=design @ beta), obs=outcome)


def run(rows: int, float32: bool, draws: int, tune: int, chains: int, seed: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import resilient
    from resilient import record

    design, outcome = proportion_data(rows)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = resilient.sample(proportion_model, design, outcome, draws=draws, tune=tune, chains=chains,
                                random_seed=seed, progressbar=False, float32=float32, log_likelihood=False)
    wall = time.perf_counter() - started
    attempt = record.read_attempts(data)[-1]
    means = data.posterior["coefficients"].mean(("chain", "draw")).values.tolist()
    return {"rows": rows, "float32": float32, "nuts_seconds": attempt["warmup_seconds"] + attempt["sampling_seconds"],
            "compile_seconds": attempt["compile_seconds"], "wall_seconds": wall, "attempts": len(record.read_attempts(data)),
            "divergences": attempt["divergences"], "coefficient_means": means,
            "dtype": str(data.posterior["coefficients"].dtype)}


def logistic_data(rows: int, predictors: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    design = np.concatenate([np.ones((rows, 1)), rng.normal(size=(rows, predictors - 1))], axis=1)
    coefficients = np.linspace(-1.0, 1.0, predictors)
    outcome = (rng.uniform(size=rows) < 1 / (1 + np.exp(-design @ coefficients))).astype(float)
    return design, outcome


#: the sides ``--raw`` times: name -> resilient.sample's float32 (None: raw NumPyro, not Resilient)
SIDES = {"raw": None, "raw-parallel": None, "resilient-default": "default", "resilient-float64": False,
         "resilient-auto": "auto"}


def child(side: str, rows: int, predictors: int, draws: int, tune: int, chains: int, seed: int) -> dict:
    """One timed call in this (fresh) interpreter; the result as a dict."""
    design, outcome = logistic_data(rows, predictors)
    if side.startswith("raw"):
        import jax
        import numpyro
        from numpyro.infer import MCMC, NUTS

        if side == "raw-parallel":
            numpyro.set_host_device_count(chains)
        started = time.perf_counter()
        mcmc = MCMC(NUTS(proportion_model), num_warmup=tune, num_samples=draws, num_chains=chains,
                    chain_method="parallel" if side == "raw-parallel" else "sequential", progress_bar=False)
        mcmc.run(jax.random.PRNGKey(seed), design, outcome)
        samples = mcmc.get_samples(group_by_chain=True)["coefficients"]
        samples.block_until_ready()
        wall = time.perf_counter() - started
        return {"side": side, "wall_seconds": wall, "dtype": str(samples.dtype),
                "coefficient_means": [float(v) for v in samples.mean((0, 1))],
                "divergences": int(mcmc.get_extra_fields()["diverging"].sum())}
    sys.path.insert(0, str(ROOT))
    import resilient
    from resilient import record

    float32 = {"default": None, "auto": "auto"}.get(SIDES[side], SIDES[side])
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = resilient.sample(proportion_model, design, outcome, draws=draws, tune=tune, chains=chains,
                                random_seed=seed, progressbar=False, float32=float32, log_likelihood=False)
    wall = time.perf_counter() - started
    attempts = record.read_attempts(data)
    return {"side": side, "wall_seconds": wall, "dtype": str(data.posterior["coefficients"].dtype),
            "coefficient_means": data.posterior["coefficients"].mean(("chain", "draw")).values.tolist(),
            "nuts_seconds": sum(a["warmup_seconds"] + a["sampling_seconds"] for a in attempts),
            "attempts": len(attempts), "divergences": attempts[-1]["divergences"],
            "precision_reason": record.read_run(data).get("precision_reason")}


def compare_raw(args: argparse.Namespace) -> None:
    import statistics
    import subprocess

    sides = [s for s in SIDES if s != "raw-parallel" or args.raw_parallel]
    cases = []
    for rows in args.rows:
        for round_ in range(args.repeats):
            for side in sides:
                command = [sys.executable, __file__, "--child", side, "--rows", str(rows), "--predictors",
                           str(args.predictors), "--draws", str(args.draws), "--tune", str(args.tune),
                           "--chains", str(args.chains), "--seed", str(args.seed)]
                load = os.getloadavg()[0]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    print(f"{side} failed: {done.stderr[-2000:]}", flush=True)
                    continue
                result = {**json.loads(done.stdout.strip().splitlines()[-1]), "rows": rows, "round": round_,
                          "load_before": load}
                cases.append(result)
                print(f"rows={rows:>8} round {round_} {side:>18}: {result['wall_seconds']:7.2f} s ({result['dtype']}, "
                      f"load {load:.1f})", flush=True)
    summary = {}
    for rows in args.rows:
        medians = {side: statistics.median(c["wall_seconds"] for c in cases if c["rows"] == rows and c["side"] == side)
                   for side in sides if any(c["rows"] == rows and c["side"] == side for c in cases)}
        summary[str(rows)] = {"median_wall_seconds": medians,
                              "over_raw": {side: seconds / medians["raw"] for side, seconds in medians.items()}
                              if "raw" in medians else {}}
        print(f"rows={rows:>8} medians: " + ", ".join(f"{s} {v:.2f} s" for s, v in medians.items()), flush=True)
    out = {"benchmark": "precision-raw", "date": str(date.today()), "machine": platform.platform(),
           "cpus": os.cpu_count(), "predictors": args.predictors, "draws": args.draws, "tune": args.tune,
           "chains": args.chains, "repeats": args.repeats, "cases": cases, "summary": summary}
    path = args.out.with_name(args.out.name.replace("precision-", "precision-raw-"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", action="store_true", help="raw NumPyro against Resilient's precisions (issue #26)")
    parser.add_argument("--raw-parallel", action="store_true", help="with --raw: raw chain_method='parallel' too")
    parser.add_argument("--predictors", type=int, default=5, help="with --raw: columns of the design, intercept included")
    parser.add_argument("--repeats", type=int, default=1, help="with --raw: rounds of all sides")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--tune", type=int, default=300)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / f"precision-{date.today()}.json")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.rows[0], args.predictors, args.draws, args.tune, args.chains,
                               args.seed)))
        return
    if args.raw:
        compare_raw(args)
        return
    cases = []
    for rows in args.rows:
        pair = {}
        for float32 in (False, True):  # float64 first: the float32 run does not find a warm cache of its own
            result = run(rows, float32, args.draws, args.tune, args.chains, args.seed)
            pair[float32] = result
            cases.append(result)
            print(f"rows={rows:>7} {'float32' if float32 else 'float64'}: NUTS {result['nuts_seconds']:7.2f} s, "
                  f"wall {result['wall_seconds']:7.2f} s, "
                  f"means {[round(m, 3) for m in result['coefficient_means']]}", flush=True)
        ratio = pair[False]["nuts_seconds"] / pair[True]["nuts_seconds"]
        print(f"rows={rows:>7} float64 / float32 NUTS time: {ratio:.2f}", flush=True)
    summary = {}
    for rows in args.rows:
        f64, f32 = (next(c for c in cases if c["rows"] == rows and c["float32"] is p) for p in (False, True))
        summary[str(rows)] = {"float64_over_float32_nuts": f64["nuts_seconds"] / f32["nuts_seconds"],
                              "float64_over_float32_wall": f64["wall_seconds"] / f32["wall_seconds"]}
    out = {"benchmark": "precision", "date": str(date.today()), "machine": platform.platform(),
           "cpus": os.cpu_count(), "draws": args.draws, "tune": args.tune, "chains": args.chains,
           "cases": cases, "ratios": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
