"""What `checkpoint=` costs: chunk files per engine, and whole runs with and without a checkpoint.

    python benchmarks/checkpoint.py [--quick] [--repeats N] [--draws N]

1. one chunk file (4 chains x 100 draws of blr: 6 latents, 7 statistics), written and read
   back through Resilient's Checkpoint with the netCDF3 engine it uses (scipy) and the
   netCDF4 one it used before (h5netcdf, in the `test` extra since the core moved to netCDF4);
2. resilient.sample on blr with no checkpoint, a netCDF3 one and a netCDF4 one, in rotating
   order per repeat (after one untimed run), same seed: wall time and the ratio to the run
   without a checkpoint.

Results go to benchmarks/results/checkpoint-<date>.json and a Markdown table on stdout.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import resilient.adapters.numpyro  # noqa: E402,F401  (sets the host device count before jax starts)
import resilient  # noqa: E402
from examples import reference_models  # noqa: E402
from resilient import checkpoint  # noqa: E402
from resilient.backend import STAT_NAMES, Chunk  # noqa: E402

ENGINES = ("scipy", "h5netcdf")


def _chunk(rng: np.random.Generator, start: int) -> Chunk:
    stats = {name: rng.normal(size=(4, 100)) for name in STAT_NAMES}
    stats["diverging"] = rng.random((4, 100)) < 0.01
    stats["tree_depth"] = rng.integers(1, 6, size=(4, 100))
    return Chunk((0, 1, 2, 3), start, False, {"beta": rng.normal(size=(4, 100, 5)), "sigma": rng.random((4, 100))},
                 stats)


def chunk_files(files: int) -> list[dict]:
    rng = np.random.default_rng(0)
    chunks = [_chunk(rng, 100 * i) for i in range(files)]
    rows = []
    for engine in ENGINES:
        checkpoint.CHUNK_ENGINE = engine
        with tempfile.TemporaryDirectory() as folder:
            store = checkpoint.Checkpoint(folder, {})
            store.start_attempt(1)
            start = time.perf_counter()
            for chunk in chunks:
                store.write_chunk(chunk)
            written = time.perf_counter()
            checkpoint.read_checkpoint(folder)
            read = time.perf_counter()
        rows.append({"engine": engine, "write_ms": 1000 * (written - start) / files,
                     "read_ms": 1000 * (read - written) / files})
    checkpoint.CHUNK_ENGINE = ENGINES[0]
    return rows


def runs(backends: list[str], draws: int, repeats: int) -> list[dict]:
    _, data, _ = reference_models.load("sblrc-blr")
    variants = ("none",) + ENGINES
    rows = []
    for backend in backends:
        with warnings.catch_warnings():  # first-call costs (imports, caches) are not the checkpoint's
            warnings.simplefilter("ignore")
            resilient.sample(reference_models.blr, backend=backend, draws=200, tune=200, chains=4,
                             random_seed=1, progressbar=False, **data)
        seconds: dict[str, list[float]] = {v: [] for v in variants}
        for repeat in range(repeats):
            order = variants[repeat % len(variants):] + variants[:repeat % len(variants)]
            for variant in order:
                with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    checkpoint.CHUNK_ENGINE = ENGINES[0] if variant == "none" else variant
                    start = time.perf_counter()
                    resilient.sample(reference_models.blr, backend=backend, draws=draws, tune=500, chains=4,
                                     random_seed=12345 + repeat, progressbar=False,
                                     checkpoint=None if variant == "none" else folder, **data)
                    seconds[variant].append(time.perf_counter() - start)
        checkpoint.CHUNK_ENGINE = ENGINES[0]
        for variant in variants:
            ratios = [s / n for s, n in zip(seconds[variant], seconds["none"])]
            rows.append({"backend": backend, "checkpoint": variant, "seconds": seconds[variant],
                         "median_seconds": statistics.median(seconds[variant]),
                         "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
                         "ratio_max": max(ratios)})
    return rows


def markdown(results: dict) -> str:
    lines = [f"Checkpoint cost, {results['date']}, {results['machine']}, Python {results['python']}, "
             f"blr, 4 chains, {results['settings']['draws']} draws, {results['settings']['repeats']} repeat(s)", "",
             "| chunk file engine | write, ms | read, ms |", "|---|---|---|"]
    lines += [f"| {r['engine']} | {r['write_ms']:.1f} | {r['read_ms']:.1f} |" for r in results["files"]]
    lines += ["", "| backend | checkpoint | wall s (median) | ratio to none, median [min-max] |", "|---|---|---|---|"]
    lines += [f"| {r['backend']} | {r['checkpoint']} | {r['median_seconds']:.1f} | "
              f"{r['ratio_median']:.2f} [{r['ratio_min']:.2f}-{r['ratio_max']:.2f}] |" for r in results["runs"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, 2000 draws: a smoke run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--draws", type=int, default=20000)
    parser.add_argument("--backends", default="numpyro,pymc")
    options = parser.parse_args(argv)
    repeats, draws = (1, 2000) if options.quick else (options.repeats, options.draws)
    import importlib.metadata as metadata

    results = {
        "date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "versions": {p: metadata.version(p) for p in ("numpyro", "jax", "pymc", "xarray", "h5netcdf", "scipy")},
        "settings": {"draws": draws, "repeats": repeats},
        "files": chunk_files(20 if options.quick else 100),
        "runs": runs(options.backends.split(","), draws, repeats),
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    name = f"checkpoint-{results['date']}{'-quick' if options.quick else ''}.json"
    (out / name).write_text(json.dumps(results, indent=2))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
