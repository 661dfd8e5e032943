"""What the persistent compilation caches save (issue #24 item 2): the same NumPyro model sampled by
``resilient.sample`` in fresh Python processes, one after another, with Resilient's JAX cache in a new empty
folder (the first process fills it, the next ones read it) and with the cache off (``RESILIENT_CACHE=off``),
alternating so that machine load falls on both alike. Prints each process's whole time (import to result)
and the time of the sample call, and the ratio of the medians.

    .venv/bin/python benchmarks/caches.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import time, json
start = time.perf_counter()
import numpy as np, warnings
import numpyro, numpyro.distributions as dist
import resilient

def model(x, y=None):
    alpha = numpyro.sample("alpha", dist.Normal(0, 5))
    beta = numpyro.sample("beta", dist.Normal(0, 2).expand([x.shape[1]]))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2))
    numpyro.sample("y", dist.Normal(alpha + x @ beta, sigma), obs=y)

rng = np.random.default_rng(0)
x = rng.normal(size=(200, 5)); y = x @ np.arange(5.0) + rng.normal(size=200)
call = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    resilient.sample(model, x, y, draws=500, tune=500, chains=2, random_seed=1, progressbar=False)
end = time.perf_counter()
print(json.dumps({"process": end - start, "sample_call": end - call}))
"""


def run(env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=900,
                          cwd=ROOT)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        on = dict(os.environ, RESILIENT_CACHE_DIR=folder, RESILIENT_CACHE="on")
        off = dict(os.environ, RESILIENT_CACHE="off")
        first = run(on)  # fills the empty cache
        print(f"cache on, first process (empty cache): {first['process']:.1f} s, sample call {first['sample_call']:.1f} s",
              flush=True)
        rows: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
        for _ in range(args.repeats):
            for name, env in (("off", off), ("on", on)):
                rows[name].append(run(env))
                print(f"cache {name}: {rows[name][-1]['process']:.1f} s, sample call {rows[name][-1]['sample_call']:.1f} s",
                      flush=True)
        files = sum(1 for _ in Path(folder).rglob("*") if _.is_file())
    for key in ("process", "sample_call"):
        on_median = statistics.median(r[key] for r in rows["on"])
        off_median = statistics.median(r[key] for r in rows["off"])
        print(f"{key}: cache on {on_median:.1f} s, off {off_median:.1f} s, on/off {on_median / off_median:.2f}")
    print(f"cache entries written: {files}; load average at the end {os.getloadavg()[0]:.1f}; "
          f"{time.strftime('%Y-%m-%d')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
