"""The same model sampled again in one process (issue #24, the warm case): what keeping the compiled sampler
saves. For each reference posterior, one ``pm.Model`` object (and one NumPyro function with one data set) is
sampled again and again in this process, alternating three sides per round:

* ``raw``: ``pm.sample(model=...)`` as PyMC 6 runs it (nutpie when installed), or NumPyro's ``MCMC(NUTS)``
  built and run again, as a user re-running a cell does;
* ``kept``: ``resilient.sample(model, ...)``, which reuses the compiled sampler of the earlier call
  (``resilient.caches.kept_sampler``);
* ``fresh``: the same call after ``resilient.caches.clear_kept()``, which compiles again (Resilient before).

Every call is 4 chains x (1000 + 1000), seed 12345 (the same seed every call: ``kept`` must give the draws
``fresh`` gives). A first call of each side warms the process (imports, Numba's machinery, PyTensor's and
JAX's caches) and is not counted; then ``--repeats`` rounds. Prints the median seconds per call and the
ratios, and writes ``benchmarks/results/kept-<date>.json``.

    .venv/bin/python benchmarks/kept.py --repeats 3
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

SEED = 12345
DRAWS, TUNE, CHAINS = 1000, 1000, 4
MODELS = ("eight_schools-eight_schools_noncentered", "kidiq-kidscore_momiq", "sblrc-blr")
SIDES = ("raw", "kept", "fresh")


def _call(side: str, dialect: str, model, data: dict) -> tuple[float, np.ndarray]:
    """Seconds of one call and the first free variable's draws (to check kept against fresh)."""
    import resilient
    from resilient import caches

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if side == "fresh":
            caches.clear_kept()
        if side == "raw" and dialect == "pymc":
            import pymc as pm

            result = pm.sample(DRAWS, tune=TUNE, chains=CHAINS, random_seed=SEED, progressbar=False,
                               compute_convergence_checks=False, model=model)
            first = model.free_RVs[0].name
            draws = result["posterior"][first].values
        elif side == "raw":
            import jax
            from numpyro.infer import MCMC, NUTS

            method = "parallel" if jax.local_device_count() >= CHAINS else "vectorized"
            mcmc = MCMC(NUTS(model), num_warmup=TUNE, num_samples=DRAWS, num_chains=CHAINS, chain_method=method,
                        progress_bar=False)
            mcmc.run(jax.random.PRNGKey(SEED), **data)
            samples = mcmc.get_samples(group_by_chain=True)
            draws = np.asarray(samples[sorted(samples)[0]])
        else:
            result = resilient.sample(model, draws=DRAWS, tune=TUNE, chains=CHAINS, random_seed=SEED,
                                      progressbar=False, **({} if dialect == "pymc" else data))
            names = sorted(result["posterior"].data_vars)
            first = model.free_RVs[0].name if dialect == "pymc" else names[0]
            draws = result["posterior"][first].values
    return time.perf_counter() - started, draws


def main(argv=None) -> int:
    from benchmarks.native_models import numpyro_models, pymc_model
    from examples import reference_models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--dialects", default="pymc,numpyro")
    args = parser.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        data = reference_models.load(name)[1]
        for dialect in args.dialects.split(","):
            model = pymc_model(name, data) if dialect == "pymc" else numpyro_models()[name]
            times: dict[str, list[float]] = {side: [] for side in SIDES}
            draws: dict[str, np.ndarray] = {}
            for side in SIDES:  # warm the process: not counted
                _call(side, dialect, model, data)
            load = os.getloadavg()[0]
            for _ in range(args.repeats):
                for side in SIDES:
                    seconds, draws[side] = _call(side, dialect, model, data)
                    times[side].append(seconds)
            median = {side: statistics.median(values) for side, values in times.items()}
            row = {"model": name, "dialect": dialect, "seconds": times, "median": median,
                   "kept_over_fresh": median["kept"] / median["fresh"], "kept_over_raw": median["kept"] / median["raw"],
                   "kept_equals_fresh": bool(np.array_equal(draws["kept"], draws["fresh"])),
                   "load_average": load}
            rows.append(row)
            print(f"{name} {dialect}: raw {median['raw']:.2f} s, kept {median['kept']:.2f} s, fresh "
                  f"{median['fresh']:.2f} s; kept/fresh {row['kept_over_fresh']:.2f}, kept/raw "
                  f"{row['kept_over_raw']:.2f}; kept == fresh: {row['kept_equals_fresh']} (load {load:.1f})",
                   flush=True)
    path = ROOT / "benchmarks" / "results" / f"kept-{datetime.date.today().isoformat()}.json"
    path.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "repeats": args.repeats,
                                "draws": DRAWS, "tune": TUNE, "chains": CHAINS, "rows": rows}, indent=1))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
