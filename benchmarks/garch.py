"""Compile + preflight time of GARCH(1,1) over 200 steps: the unrolled Python loop ("before") against
``resilient.math.scan`` ("after"), on PyMC and on NumPyro (``examples/garch.py``).

    python benchmarks/garch.py                       # every case, writes benchmarks/results/garch-<date>.json
    python benchmarks/garch.py --cases pymc:scan --limit 400

Each case runs in its own interpreter (no compiled code carried over) and reports: ``build`` seconds (the
adapter traces the shared-API function into the backend's model), ``preflight`` seconds (the checks, which
include compiling the log density and its gradient: PyTensor's rewrites and its Numba/C compile, XLA's jit)
and ``gradient_ms``, the median of 200 log-density-and-gradient evaluations afterwards (what one leapfrog step
costs while sampling). PyMC's cases share a fresh PyTensor base compile directory (its C and Numba caches),
first warmed by an unrelated small model, so neither form finds its own graph cached.
A case still running after ``--limit`` seconds is stopped and recorded as ``> limit s, stopped``.
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
CASES = ("pymc:scan", "pymc:unrolled", "numpyro:scan", "numpyro:unrolled")


def run_case(case: str, steps: int) -> dict:
    """One case in this interpreter: times of build, preflight and one gradient."""
    import warnings

    import numpy as np

    sys.path.insert(0, str(ROOT))
    from functools import partial

    from examples import garch as example
    from resilient.checks import check_compiled, compile_model
    from resilient.resolve import resolve_model

    backend, form = case.split(":")
    if backend == "numpyro":
        import resilient.adapters.numpyro  # noqa: F401  (sets the XLA device count before jax starts)
    if form == "warmup":
        from resilient.distributions import HalfNormal, Normal
        from resilient.model import sample

        def function(y):
            mu = sample("mu", Normal(0, 1))
            sigma = sample("sigma", HalfNormal(1))
            sample("y", Normal(mu, sigma), obs=y)

        arguments = {"y": np.array([0.1, -0.3, 0.8])}
    else:
        function = example.garch if form == "scan" else example.garch_unrolled
        arguments = example.simulate(T=steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        resolved = resolve_model(partial(function, **arguments), (), {}, fix=True, float32=False)
        compiled = compile_model(resolved, backend)
        built = time.perf_counter()
        report = check_compiled(compiled, resolved, backend)
        checked = time.perf_counter()
        x = compiled.initial_point("default", 1)
        times = []
        for _ in range(200):
            begin = time.perf_counter()
            compiled.log_density_and_gradient(x)
            times.append(time.perf_counter() - begin)
        gradient = float(np.median(times))
    return {"build_seconds": built - start, "preflight_seconds": checked - built,
            "compile_and_preflight_seconds": checked - start, "gradient_ms_median_of_200": 1e3 * gradient,
            "preflight_status": report.status}


def measure(case: str, steps: int, limit: float, env: dict) -> dict:
    load = [os.getloadavg()[0]]
    start = time.perf_counter()
    command = [sys.executable, __file__, "--run-case", case, "--steps", str(steps)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        wall = time.perf_counter() - start
        load.append(os.getloadavg()[0])
        print(f"{case}: > {limit:.0f} s, stopped", flush=True)
        return {"case": case, "stopped_after_seconds": round(wall, 1), "result": f"> {limit:.0f} s, stopped",
                "load_average_1min": load}
    wall = time.perf_counter() - start
    load.append(os.getloadavg()[0])
    if done.returncode != 0:
        print(f"{case}: failed\n{done.stderr[-3000:]}", flush=True)
        return {"case": case, "result": "failed", "error": done.stderr.strip().splitlines()[-1][:500],
                "load_average_1min": load}
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row = {"case": case, **{k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()},
           "process_seconds": round(wall, 1), "load_average_1min": load}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--limit", type=float, default=400.0, help="seconds after which a case is stopped")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / f"garch-{date.today()}.json"))
    parser.add_argument("--run-case", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.run_case:
        print(json.dumps(run_case(options.run_case, options.steps)))
        return

    import numpy
    import numpyro
    import pymc
    import pytensor

    compiledir = tempfile.mkdtemp(prefix="garch-pytensor-")
    env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={compiledir}"}
    if any(case.startswith("pymc") for case in options.cases):
        measure("pymc:warmup", options.steps, options.limit, env)
    rows = [measure(case, options.steps, options.limit, env) for case in options.cases]
    results = {
        "date": str(date.today()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other work; see load averages)",
        "versions": {"python": platform.python_version(), "numpyro": numpyro.__version__, "pymc": pymc.__version__,
                     "pytensor": pytensor.__version__, "numpy": numpy.__version__},
        "settings": {"steps": options.steps, "limit_seconds": options.limit,
                     "model": "examples/garch.py: garch (scan) and garch_unrolled, data simulate(T=steps)",
                     "pytensor_base_compiledir": "fresh per run (C and Numba caches), warmed by a 2-parameter Normal model"},
        "rows": rows,
    }
    Path(options.out).parent.mkdir(parents=True, exist_ok=True)
    Path(options.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {options.out}")


if __name__ == "__main__":
    main()
