"""float32 against float64 on a proportion_test-like NumPyro model (issue #16: "the float64 default doubles the
time of a 100k-row model, proportion_test 116 s vs 62 s raw float32"): a logistic regression of a 0/1 outcome on
an intercept and two 0/1 treatments, ``rows`` rows, sampled by ``resilient.sample`` with ``float32=True`` and
``float32=False`` (same seed, draws, chains). The time is NUTS's own (warm-up + sampling seconds from the attempt
log), without the compile; the wall time of the call (compile and preflight included) is recorded too
(``compile_seconds`` is the loop's own, near 0: preflight compiled the model before it). What ``float32="auto"``'s data-size threshold
(``resilient.precision.AUTO_FLOAT32_MIN_ELEMENTS``) rests on.

    python benchmarks/precision.py                         # rows 1e3, 1e4, 1e5; writes results/precision-<date>.json
    python benchmarks/precision.py --rows 100000 --draws 500
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--tune", type=int, default=300)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / f"precision-{date.today()}.json")
    args = parser.parse_args()
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
