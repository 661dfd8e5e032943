"""Fits per minute: ``resilient.sample_many`` on 1 and 2 local Dask workers against sequential loops of
``numpyro.infer.MCMC`` and ``pm.sample`` over the same data sets, and a sequential ``resilient.sample`` loop.

    python benchmarks/many.py                 # 24 data sets, every side, writes benchmarks/results/many-<date>.json
    python benchmarks/many.py --fits 8 --sides numpyro-mcmc resilient-numpyro-2
    python benchmarks/many.py --sides resilient-numpyro-1 with-data-numpyro --tag with-data   # many-<date>-with-data.json
    python benchmarks/many.py --model hierarchical --sides sbc-numpyro-1 sbc-numpyro-1-warm --draws 1000 --tune 1000

Each side runs in its own interpreter (no compiled code or imports carried over between sides) on the same
data sets (``examples.sbc_models.datasets``: ``mu ~ Normal(0, 1)``, ``sigma ~ HalfNormal(1)``, N
observations) with the same draws, warm-up and chains. ``--model hierarchical`` runs the ``sbc`` sides on
``examples.sbc_models.hierarchical`` instead (8 groups of ``--n`` observations, 11 latents): a model whose sampling
is most of a fit, where a warm start's shorter warm-up can show. The clock starts after the imports and before the
first fit, so each side pays its compiles; the Dask sides include starting the LocalCluster and the
workers' own imports. Fits per minute = fits / wall seconds * 60.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIDES = {
    "numpyro-mcmc": "sequential MCMC(NUTS).run per data set (jit_model_args=False, NumPyro's default)",
    "numpyro-mcmc-jit-args": "sequential MCMC(NUTS, jit_model_args=True).run: NumPyro compiles once",
    "pymc-sample": "sequential pm.sample per data set (model built per data set)",
    "resilient-sample-numpyro": "sequential resilient.sample per data set, one process (NumPyro)",
    "reuse-numpyro": "one resilient.compile, then .sample 24 times on the first data set, one process: the "
                     "ceiling compile-once (an adapter's with_data) could reach",
    "reuse-pymc": "as reuse-numpyro, on PyMC",
    "with-data-numpyro": "one resilient.compile on the first data set, then compiled.with_data and .sample per "
                         "data set, one process (NumPyro): compile once, sample many, without Dask",
    "resilient-numpyro-1": "resilient.sample_many, LocalCluster with 1 worker (NumPyro)",
    "resilient-numpyro-2": "resilient.sample_many, LocalCluster with 2 workers (NumPyro)",
    "resilient-pymc-1": "resilient.sample_many, LocalCluster with 1 worker (PyMC)",
    "resilient-pymc-2": "resilient.sample_many, LocalCluster with 2 workers (PyMC)",
    "resilient-numpyro-1-warm": "as resilient-numpyro-1, with warm_start=True (each fit after the first on the "
                                "worker starts from the last accepted fit's adaptation)",
    "resilient-pymc-1-warm": "as resilient-pymc-1, with warm_start=True",
    "sbc-numpyro-1": "resilient.sbc, `fits` simulations of the same model (prior draws of mu, sigma and N "
                     "observations), LocalCluster with 1 worker (NumPyro)",
    "sbc-numpyro-1-warm": "as sbc-numpyro-1, with warm_start=True",
}


def run_side(side: str, fits: int, n: int, draws: int, tune: int, chains: int, model: str = "normal") -> dict:
    sys.path.insert(0, str(ROOT))
    from examples import sbc_models

    datasets = sbc_models.datasets(fits, N=n, seed=0)
    extra: dict = {}
    if side.startswith("numpyro-mcmc"):
        import numpyro

        numpyro.set_host_device_count(chains)  # before jax starts: one device per chain, as Resilient's workers
        import jax
        from numpyro.infer import MCMC, NUTS

        from functools import partial

        numpyro.enable_x64()
        # N fixed (a plate size cannot be traced); the data y is the run's argument
        mcmc = MCMC(NUTS(partial(sbc_models.normal_numpyro, n)), num_warmup=tune, num_samples=draws, num_chains=chains,
                    chain_method="parallel", progress_bar=False, jit_model_args=side.endswith("jit-args"))
        started = time.perf_counter()
        for index, data in enumerate(datasets):
            mcmc.run(jax.random.PRNGKey(index), y=data["y"])
            jax.block_until_ready(mcmc.get_samples())
    elif side == "pymc-sample":
        import pymc as pm

        started = time.perf_counter()
        for index, data in enumerate(datasets):
            with sbc_models.normal_pymc(**data):
                pm.sample(draws=draws, tune=tune, chains=chains, random_seed=index, progressbar=False,
                          compute_convergence_checks=False)
    elif side == "resilient-sample-numpyro":
        import warnings

        import resilient

        started = time.perf_counter()
        for index, data in enumerate(datasets):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                resilient.sample(sbc_models.normal, backend="numpyro", draws=draws, tune=tune, chains=chains,
                                 random_seed=index, progressbar=False, **data)
    elif side.startswith("reuse-"):
        import warnings

        import resilient

        started = time.perf_counter()
        sampler = resilient.compile(sbc_models.normal, backend=side.split("-")[1], **datasets[0])
        for index in range(fits):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sampler.sample(draws=draws, tune=tune, chains=chains, random_seed=index, progressbar=False)
    elif side == "with-data-numpyro":
        import warnings

        import resilient

        started = time.perf_counter()
        first = resilient.compile(sbc_models.normal, backend="numpyro", **datasets[0])
        for index, data in enumerate(datasets):
            sampler = resilient.compile(sbc_models.normal, backend="numpyro", **data)
            sampler.cache[(sampler.backend, sampler.model)] = first.compiled.with_data((), data)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sampler.sample(draws=draws, tune=tune, chains=chains, random_seed=index, progressbar=False)
    elif side.startswith("sbc-"):
        from resilient.sbc import sbc

        _, backend, workers, *warm = side.split("-")
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            simulated, data = ((sbc_models.hierarchical, {"J": 8, "n": n}) if model == "hierarchical"
                               else (sbc_models.normal, {"N": n}))
            result = sbc(simulated, fits, data=data, out=out, backend=backend, workers=int(workers),
                         draws=draws, tune=tune, chains=chains, rank_draws=99, progressbar=False, report=False,
                         warm_start=bool(warm), random_seed=0)
            extra = {"used": result.used, "dropped": len(result.dropped), "verdict": result.verdict}
    else:
        from resilient.many import sample_many

        _, backend, workers, *warm = side.split("-")
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            result = sample_many(sbc_models.normal, datasets, out=out, backend=backend, workers=int(workers),
                                 draws=draws, tune=tune, chains=chains, progressbar=False,
                                 warm_start=bool(warm))
            summary = result.summary
            extra = {"counts": result.counts, "compile": summary["compile"].value_counts().to_dict(),
                     "median_fit_seconds": float(summary["seconds"].median())}
    seconds = time.perf_counter() - started
    return {"side": side, "fits": fits, "seconds": round(seconds, 2), "fits_per_minute": round(fits / seconds * 60, 1),
            **extra}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fits", type=int, default=24)
    parser.add_argument("--n", type=int, default=20, help="observations per data set")
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--tune", type=int, default=500)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--sides", nargs="+", default=list(SIDES), choices=list(SIDES))
    parser.add_argument("--side", help=argparse.SUPPRESS)  # internal: run one side in this process
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--tag", default="", help="appended to the result file's name: many-<date>-<tag>.json")
    parser.add_argument("--model", default="normal", choices=("normal", "hierarchical"),
                        help="the sbc sides' model (the other sides fit the normal model's data sets)")
    options = parser.parse_args(argv)
    if options.model != "normal" and not options.side and any(not s.startswith("sbc-") for s in options.sides):
        parser.error("--model hierarchical runs the sbc sides only (sbc-numpyro-1, sbc-numpyro-1-warm)")
    settings = {k: getattr(options, k) for k in ("fits", "n", "draws", "tune", "chains", "model")}
    if options.side:
        print(json.dumps(run_side(options.side, **settings)))
        return 0
    rows = []
    for side in options.sides:
        command = [sys.executable, __file__, "--side", side] + [f"--{k}={v}" for k, v in settings.items()]
        load_before = os.getloadavg()[0]
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=ROOT,
                              env={**os.environ, "CI": "true"})
        if done.returncode != 0:
            print(f"{side} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]  # other work on the machine
        rows.append(row)
        print(f"{side}: {row['seconds']} s, {row['fits_per_minute']} fits/min", flush=True)
    import numpy
    import numpyro
    import pymc

    import distributed

    record = {"date": str(date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "versions": {"python": platform.python_version(), "numpyro": numpyro.__version__,
                           "pymc": pymc.__version__, "distributed": distributed.__version__,
                           "numpy": numpy.__version__},
              "settings": settings, "rows": rows}
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"many-{record['date']}" + (f"-{options.tag}" if options.tag else "")
    (out / f"{name}.json").write_text(json.dumps(record, indent=2))
    print("\n| side | what | wall s | fits/min | load before/after |\n|---|---|---|---|---|")
    for row in rows:
        load = "/".join(str(x) for x in row["load_average_1min"])
        print(f"| {row['side']} | {SIDES[row['side']]} | {row['seconds']} | {row['fits_per_minute']} | {load} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
