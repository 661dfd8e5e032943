"""What stopping a run and resuming it costs against running it through (issue #23, figures): blr, 2 chains x
(1000 warm-up + 4000 draws), per engine, in one process, alternating, after one untimed call of each kind.

* ``through``: ``resilient.sample(..., checkpoint=folder)`` to the end;
* ``stopped + resumed``: the same call with ``time_budget`` set to half of ``through``'s last time (it stops
  mid-sampling, its finished chunks and sampler state on disk), then ``resilient.resume(folder, ...)`` to the
  same draws; the figure is the two calls' seconds added.

A time budget stops the run as SIGKILL would, less the chunk in flight (``tests/test_resume.py`` kills real
processes). Prints the median seconds and the ratio, and writes ``benchmarks/results/resume-<date>.json``.

    .venv/bin/python benchmarks/resume.py --repeats 3
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DRAWS, TUNE, CHAINS, SEED = 4000, 1000, 2, 11
ENGINES = (("numpyro", "numpyro"), ("pymc", "pymc"), ("pymc", "nutpie"))


def _through(backend: str, engine: str, data: dict, folder: str) -> float:
    import resilient
    from examples import reference_models

    started = time.perf_counter()
    resilient.sample(reference_models.blr, backend=backend, engine=engine, draws=DRAWS, tune=TUNE, chains=CHAINS,
                     random_seed=SEED, progressbar=False, checkpoint=folder,
                     policy=resilient.Policy(max_attempts=1), **data)
    return time.perf_counter() - started


def _stopped_and_resumed(backend: str, engine: str, data: dict, folder: str, budget: float) -> tuple[float, int]:
    import resilient
    from examples import reference_models

    started = time.perf_counter()
    first = resilient.sample(reference_models.blr, backend=backend, engine=engine, draws=DRAWS, tune=TUNE,
                             chains=CHAINS, random_seed=SEED, progressbar=False, checkpoint=folder,
                             policy=resilient.Policy(max_attempts=1, time_budget=budget), **data)
    done = int(first.posterior.sizes["draw"])
    resumed = resilient.resume(folder, reference_models.blr, draws=DRAWS, progressbar=False, **data)
    assert resumed.posterior.sizes["draw"] == DRAWS, resumed.posterior.sizes
    return time.perf_counter() - started, done


def main(argv=None) -> int:
    from examples import reference_models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    data = reference_models.load("sblrc-blr")[1]
    rows = []
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as root:
        warnings.simplefilter("ignore")
        for backend, engine in ENGINES:
            through: list[float] = []
            both: list[float] = []
            stopped_at: list[int] = []
            last = _through(backend, engine, data, f"{root}/{engine}-warm")  # untimed: compiles
            _stopped_and_resumed(backend, engine, data, f"{root}/{engine}-warm-2", last / 2)
            load = os.getloadavg()[0]
            for repeat in range(args.repeats):
                last = _through(backend, engine, data, f"{root}/{engine}-t{repeat}")
                through.append(last)
                seconds, done = _stopped_and_resumed(backend, engine, data, f"{root}/{engine}-s{repeat}", last / 2)
                both.append(seconds)
                stopped_at.append(done)
            row = {"engine": engine, "through": through, "stopped_and_resumed": both, "stopped_at_draw": stopped_at,
                   "ratio": statistics.median(both) / statistics.median(through), "load_average": load}
            rows.append(row)
            print(f"{engine}: through {statistics.median(through):.2f} s, stopped + resumed "
                  f"{statistics.median(both):.2f} s (stopped at draws {stopped_at}), ratio {row['ratio']:.2f} "
                  f"(load {load:.1f})", flush=True)
    path = ROOT / "benchmarks" / "results" / f"resume-{datetime.date.today().isoformat()}.json"
    path.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "draws": DRAWS, "tune": TUNE,
                                "chains": CHAINS, "repeats": args.repeats, "rows": rows}, indent=1))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
