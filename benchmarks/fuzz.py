"""The model fuzzer at scale (issue #22): N random models through Resilient and through the raw backend.

Each model (a spec from ``tests/fuzz_models.py``, in one of five dialects: shared API on NumPyro or PyMC,
native PyMC with or without dims, native NumPyro) runs through ``resilient.sample`` and through raw
``pm.sample`` (PyMC dialects and shared-pymc's native twin) or ``MCMC(NUTS)`` (NumPyro dialects), each
with draws=100, tune=100, chains=2 under the same hard outer limit (Resilient's time budget + grace),
in worker processes that sample many models in sequence. Prints the table of outcomes and writes
``benchmarks/results/fuzz-<date>.json``.

    .venv/bin/python benchmarks/fuzz.py --n 1000 --workers 2
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import platform
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import fuzz_models as fm  # noqa: E402

COLUMNS = [("correct", "sampled, correct"), ("sampled", "sampled (no known answer)"),
           ("wrong", "sampled but silently wrong"), ("warned", "sampled, warned it is wrong"), ("named_error", "error naming a site"),
           ("unnamed_error", "Resilient error naming no site"),
           ("budget", "budget ran out, no draws (warned)"), ("crash", "backend traceback"),
           ("hang", "hang"), ("build_error", "model not buildable")]


def table(models: list[dict], sides: list[str]) -> str:
    rows = ["| side | models | " + " | ".join(words for _, words in COLUMNS) + " |",
            "|---|---:|" + "---:|" * len(COLUMNS)]
    for side in sides:
        counts = collections.Counter(m["results"][side]["outcome"] for m in models if side in m["results"])
        total = sum(counts.values())
        rows.append(f"| {side} | {total} | " + " | ".join(str(counts.get(key, 0)) for key, _ in COLUMNS) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="models (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="Hypothesis seed for the models")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (each samples models in turn)")
    parser.add_argument("--sides", default="resilient,raw")
    parser.add_argument("--grace", type=float, default=40.0, help="seconds past the time budget before a hang")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    sides = args.sides.split(",")
    started = time.time()
    specs = fm.generate(args.n, args.seed)
    print(f"{len(specs)} models generated in {time.time() - started:.0f} s", flush=True)
    models = [{"spec": s, "model": fm.describe(s), "expect": fm.expectation(s), "truth": fm.truth(s), "results": {}}
              for s in specs]
    lock = threading.Lock()
    done = [0]
    date = datetime.date.today().isoformat()
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"fuzz-{date}.json"

    def save(final: bool) -> str:
        finished = [m for m in models if all(side in m["results"] for side in sides)]
        text = table(finished, sides)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "date": date, "n": len(finished), "generated": len(models), "complete": final, "seed": args.seed,
            "workers": args.workers, "sides": sides,
            "run": dict(fm.RUN, time_budget=fm.TIME_BUDGET, outer_limit=fm.TIME_BUDGET + args.grace),
            "machine": {"platform": platform.platform(), "python": platform.python_version()},
            "wall_seconds": round(time.time() - started), "table": text, "models": finished}, indent=1, default=str))
        return text

    def log(index, job, result):
        with lock:
            done[0] += 1
            print(f"[{done[0]}/{len(specs) * len(sides)}] {job['side']:9s} {result['outcome']:13s} "
                  f"{result.get('seconds')}s {fm.describe(job['spec'])[:110]}", flush=True)
            by_spec[id(job["spec"])]["results"][job["side"]] = result
            if done[0] % 6 == 0:
                save(False)  # partial results survive an interrupted run

    by_spec: dict[int, dict] = {}

    def work(part: list[int]) -> None:
        jobs = [{"spec": models[i]["spec"], "side": side} for i in part for side in sides]
        for job in jobs:
            by_spec[id(job["spec"])] = models[[m["spec"] is job["spec"] for m in models].index(True)]
        results = fm.run_batch(jobs, limit=fm.TIME_BUDGET + args.grace, log=log)
        for job_index, result in enumerate(results):
            models[part[job_index // len(sides)]]["results"][jobs[job_index]["side"]] = result

    threads = [threading.Thread(target=work, args=(list(range(k, len(models), args.workers)),))
               for k in range(args.workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    text = save(True)
    print(text)
    for side in sides:
        bad = [m for m in models if m["results"].get(side, {}).get("outcome") in ("crash", "hang", "wrong")]
        print(f"\n{side}: {len(bad)} crash/hang/wrong")
        for m in bad:
            print(f"  {m['results'][side]['outcome']}: {m['model']}\n      {m['results'][side].get('detail', '')[:300]}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
