"""Warm start (issue #23.3): the second and later calls of one compiled model, with and without warm start,
against the raw engine's own re-run, in one process, alternating.

    python benchmarks/warm_start.py [--models ...] [--engines numpyro,nutpie,pymc] [--rounds 3]

For each reference posterior and engine, one process compiles the model once (``resilient.compile``) and
prepares the raw engine's run once (NumPyro: one ``MCMC(NUTS(...))`` object; nutpie: one
``nutpie.compile_pymc_model``; PyMC: one ``pm.Model``), makes one cold call of each (not counted), then
``--rounds`` rounds of three calls, their order rotated each round so no side always runs first:

* ``warm``: ``sampler.sample(...)`` with ``warm_start="auto"`` (the last accepted call's adaptation, a
  150-iteration checked window instead of the 1000-iteration warm-up);
* ``cold``: ``sampler.sample(..., warm_start=False)``: the same compiled model, the full warm-up;
* ``raw``: the raw engine's re-run: ``mcmc.run`` again, ``nutpie.sample(compiled, ...)`` again,
  ``pm.sample(model=...)`` again, each warming up in full as it always does.

Engine ``auto`` (not in the default set) is ``resilient.compile(pm_model)`` with ``engine="auto"`` (a default-size
run: NumPyro's NUTS over PyMC's JAX translation in a fresh process), its raw side ``pm.sample(model=pm_model)`` as
PyMC 6 runs it by default (nutpie where installed, compiling the model on each call).

Each call is 4 chains x (1000 warm-up + 1000 draws) (the warm call: 150 + 1000), a new seed per round. The
figure is the call's wall time (preflight, warm-up, draws, conversion) times 1000 / the smallest bulk ESS
over the model's free variables: seconds per 1,000 effective draws. The summary takes each side's median over
the rounds and prints warm / cold, warm / raw (the same engine) and warm / the fastest raw engine's warm call
(issue #23's goal: at most 0.6). Results go to ``benchmarks/results/warm_start-<date>.json`` with the load
average before and after (other work on the machine slows every side alike only roughly: read ratios from a
quiet machine).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEED = 20261206
DRAWS, TUNE, CHAINS = 1000, 1000, 4
MODELS = ("eight_schools-eight_schools_noncentered", "kidiq-kidscore_momiq", "sblrc-blr")
ENGINES = ("numpyro", "nutpie")
SIDES = ("warm", "cold", "raw")


def _min_ess(posterior, names) -> float:
    from benchmarks.engines import _min_ess as min_ess

    return min_ess({name: np.asarray(posterior[name]) for name in names}, list(names))


class _Model:
    """One posterior on one engine: the compiled sampler and the raw engine's prepared run."""

    def __init__(self, name: str, engine: str) -> None:
        import resilient
        from examples import reference_models

        self.name, self.engine = name, engine
        function, self.data, _ = reference_models.load(name)
        if engine == "auto":  # a native pm.Model, engine="auto" (a default-size run: NumPyro's NUTS cold)
            from benchmarks.native_models import pymc_model

            self.sampler = resilient.compile(pymc_model(name, self.data))
        else:
            backend = "numpyro" if engine == "numpyro" else "pymc"
            self.sampler = resilient.compile(function, backend=backend, engine=engine, **self.data)
        self.free = list(self.sampler.compiled.latent_names)
        self.raw_run = self._raw()

    def _raw(self):
        from benchmarks.native_models import numpyro_models, pymc_model

        if self.engine == "numpyro":
            import jax
            from numpyro.infer import MCMC, NUTS

            method = "parallel" if jax.local_device_count() >= CHAINS else "vectorized"
            mcmc = MCMC(NUTS(numpyro_models()[self.name]), num_warmup=TUNE, num_samples=DRAWS, num_chains=CHAINS,
                        chain_method=method, progress_bar=False)

            def run(seed: int) -> dict:
                with jax.enable_x64(True):
                    mcmc.run(jax.random.PRNGKey(seed), **self.data)
                    return {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
            return run
        model = pymc_model(self.name, self.data)
        if self.engine == "nutpie":
            import nutpie

            compiled = nutpie.compile_pymc_model(model)

            def run(seed: int) -> dict:
                trace = nutpie.sample(compiled, draws=DRAWS, tune=TUNE, chains=CHAINS, seed=seed, progress_bar=False)
                return {k: trace.posterior[k].values for k in self.free}
            return run
        import pymc as pm

        def run(seed: int) -> dict:  # auto's raw side: pm.sample as it runs by default (PyMC 6: nutpie where installed)
            sampler = {} if self.engine == "auto" else {"nuts_sampler": "pymc"}
            trace = pm.sample(DRAWS, tune=TUNE, chains=CHAINS, random_seed=seed, progressbar=False,
                              compute_convergence_checks=False, model=model, **sampler)
            return {k: trace.posterior[k].values for k in self.free}
        return run

    def call(self, side: str, seed: int) -> dict:
        from resilient import record

        warm = None
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if side == "raw":
                posterior = self.raw_run(seed)
            else:
                result = self.sampler.sample(draws=DRAWS, tune=TUNE, chains=CHAINS, random_seed=seed,
                                             progressbar=False, warm_start="auto" if side == "warm" else False)
                posterior = {k: result["posterior"][k].values for k in self.free}
                attempts = record.read_attempts(result)
                warm = attempts[0]["settings"].get("warm_start") if attempts else None
        seconds = time.perf_counter() - started
        ess = _min_ess(posterior, self.free)
        row = {"seconds": seconds, "min_ess_bulk": ess, "seconds_per_1000_ess": seconds * 1000 / ess}
        if side != "raw":
            row["attempts"] = len(attempts)
        if warm is not None:
            row["warm_start"] = {k: warm.get(k) for k in ("used", "passed", "found", "why", "window_seconds")
                                 if k in warm}
        return row


def _median(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if key in r and np.isfinite(r[key])]
    return float(np.median(values)) if values else float("nan")


def summarise(rows: list[dict]) -> list[dict]:
    """Per model and engine: each side's median seconds per 1,000 ESS over the rounds, and the ratios."""
    found = []
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        fastest_raw = min((_median([r for r in mine if r["engine"] == e and r["side"] == "raw"],
                                   "seconds_per_1000_ess"), e) for e in dict.fromkeys(r["engine"] for r in mine))
        for engine in dict.fromkeys(r["engine"] for r in mine):
            medians = {side: _median([r for r in mine if r["engine"] == engine and r["side"] == side],
                                     "seconds_per_1000_ess") for side in SIDES}
            warm_rows = [r for r in mine if r["engine"] == engine and r["side"] == "warm"]
            found.append({
                "model": name, "engine": engine, **{f"{side}_seconds_per_1000_ess": v for side, v in medians.items()},
                "warm_over_cold": medians["warm"] / medians["cold"], "warm_over_raw": medians["warm"] / medians["raw"],
                "fastest_raw_engine": fastest_raw[1], "warm_over_fastest_raw": medians["warm"] / fastest_raw[0],
                "warm_checks_passed": sum(bool((r.get("warm_start") or {}).get("passed")) for r in warm_rows),
                "warm_calls": len(warm_rows)})
    return found


def markdown(summary: list[dict]) -> str:
    lines = ["| model | engine | warm | cold (warm_start=False) | raw re-run | warm / cold | warm / raw | "
             "warm / fastest raw | checks passed |", "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['model']} | {s['engine']} | {s['warm_seconds_per_1000_ess']:.2f} | "
                     f"{s['cold_seconds_per_1000_ess']:.2f} | {s['raw_seconds_per_1000_ess']:.2f} | "
                     f"{s['warm_over_cold']:.2f} | {s['warm_over_raw']:.2f} | {s['warm_over_fastest_raw']:.2f} "
                     f"({s['fastest_raw_engine']}) | {s['warm_checks_passed']}/{s['warm_calls']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    if "numpyro" in args.engines:
        import resilient.adapters.numpyro  # noqa: F401  (one XLA device per chain, as Resilient sets it)
    load_before = os.getloadavg()
    rows = []
    for name in args.models.split(","):
        for engine in args.engines.split(","):
            model = _Model(name, engine)
            first = {side: model.call(side, SEED) for side in ("cold", "raw")}  # compile, and a state to start from
            print(json.dumps({"model": name, "engine": engine, "first_calls": first}), flush=True)
            for round_ in range(args.rounds):
                order = SIDES[round_ % 3:] + SIDES[:round_ % 3]
                for side in order:
                    row = {"model": name, "engine": engine, "round": round_, "side": side,
                           **model.call(side, SEED + 1 + round_)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    summary = summarise(rows)
    import nutpie
    import numpyro
    import pymc

    out = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "pymc": pymc.__version__,
           "nutpie": nutpie.__version__, "numpyro": numpyro.__version__, "draws": DRAWS, "tune": TUNE,
           "chains": CHAINS, "seed": SEED, "rounds": args.rounds, "load_average_before": load_before,
           "load_average_after": os.getloadavg(), "summary": summary, "rows": rows}
    path = Path(args.out) / f"warm_start-{datetime.date.today().isoformat()}.json"
    path.write_text(json.dumps(out, indent=1))
    print(markdown(summary))
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
