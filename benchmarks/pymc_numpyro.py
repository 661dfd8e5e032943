"""A pm.Model on NumPyro's NUTS (PyMC's JAX translation) against PyMC's NUTS and nutpie, through Resilient and raw
(issue #24, item 3: should ``engine="auto"`` weigh it?).

    python benchmarks/pymc_numpyro.py [--sides ...] [--models ...] [--repeats 3]

For each model and side, one fresh interpreter makes two calls: *cold* (nothing compiled in this process) and *warm*
(the model built again). Sides: ``resilient-numpyro`` (``resilient.sample(pm_model, engine="numpyro")``),
``resilient-pymc``, ``resilient-nutpie``, ``raw-numpyro`` (``pm.sample(nuts_sampler="numpyro")``). Each call is
4 chains x (1000 + 1000), the figure the whole call's seconds per 1,000 effective draws (min ESS-bulk over the free
variables), as ``benchmarks/engines.py`` measures them. Sides alternate within a repeat; medians are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIDES = ("resilient-numpyro", "resilient-pymc", "resilient-nutpie", "raw-numpyro")
MODELS = ("eight_schools-eight_schools_noncentered", "kidiq-kidscore_momiq", "sblrc-blr")


def _call(side: str, name: str) -> dict:
    from benchmarks.engines import CHAINS, DRAWS, SEED, TUNE, _data, _min_ess
    from benchmarks.native_models import pymc_model

    model = pymc_model(name, _data(name))
    free = [rv.name for rv in model.free_RVs]
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if side == "raw-numpyro":
            import jax
            import pymc as pm

            before = bool(jax.config.jax_enable_x64)
            result = pm.sample(DRAWS, tune=TUNE, chains=CHAINS, random_seed=SEED, progressbar=False, model=model,
                               compute_convergence_checks=False, nuts_sampler="numpyro")
            jax.config.update("jax_enable_x64", before)
        else:
            import resilient

            engine = side.split("-", 1)[1]
            result = resilient.sample(model, engine=engine, draws=DRAWS, tune=TUNE, chains=CHAINS, random_seed=SEED,
                                      progressbar=False)
    seconds = time.perf_counter() - started
    ess = _min_ess({k: result["posterior"][k].values for k in free}, free)
    return {"seconds": seconds, "min_ess_bulk": ess, "seconds_per_1000_ess": seconds * 1000 / ess}


def _child(side: str, name: str) -> None:
    import resilient.adapters.numpyro  # noqa: F401  (one XLA device per core, as Resilient sets it)

    print("RESULT " + json.dumps({phase: _call(side, name) for phase in ("cold", "warm")}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    rows: dict[tuple[str, str], list[dict]] = {}
    for repeat in range(args.repeats):
        for name in args.models.split(","):
            for side in args.sides.split(","):
                load = os.getloadavg()[0]
                process = subprocess.run([sys.executable, __file__, "--child", side, name], capture_output=True,
                                         text=True, timeout=1800, cwd=ROOT)
                line = next((l for l in process.stdout.splitlines() if l.startswith("RESULT ")), None)
                result = json.loads(line[7:]) if line else {"error": process.stderr[-300:]}
                result["load"] = load
                rows.setdefault((name, side), []).append(result)
                print(json.dumps({"repeat": repeat, "model": name, "side": side, **result}), flush=True)
    print("| model | side | cold s/1000 ESS | warm s/1000 ESS | cold s | warm s |")
    print("|---|---|---|---|---|---|")
    for (name, side), results in rows.items():
        ok = [r for r in results if "cold" in r]
        median = {(phase, key): float(np.median([r[phase][key] for r in ok])) if ok else float("nan")
                  for phase in ("cold", "warm") for key in ("seconds_per_1000_ess", "seconds")}
        print(f"| {name} | {side} | {median['cold', 'seconds_per_1000_ess']:.2f} | "
              f"{median['warm', 'seconds_per_1000_ess']:.2f} | {median['cold', 'seconds']:.1f} | "
              f"{median['warm', 'seconds']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
