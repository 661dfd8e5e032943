"""Gallery benchmark: models nobody here wrote (examples/gallery: PyMC's example gallery and NumPyro's
examples), each run raw and through Resilient at the same settings, each side in its own process.

* raw PyMC: ``pm.sample(draws=500, tune=500, chains=2, random_seed=S, cores=1)``;
* raw NumPyro: ``MCMC(NUTS(model), num_warmup=500, num_samples=500, num_chains=2,
  chain_method="sequential")`` in NumPyro's default precision (float32, as a user runs it; ``--raw-x64``
  for float64, Resilient's default);
* Resilient: ``resilient.sample(model, draws=500, tune=500, chains=2, random_seed=S, cores=1)``.

For each side: outcome, wall time, worst R-hat (rank-normalised split R-hat) and smallest bulk ESS over
the model's own variables (free and deterministic, scalar components that vary), divergences; for
Resilient also the engine, the number of attempts and each attempt's remedy, failure and outcome
(``resilient.record.read_attempts``). Each side of a model runs in its own child process (both start cold:
neither warms the other's imports or compilation caches) under its own hard time limit, so a side that hangs
loses nothing the other side finished.

Results go to ``benchmarks/results/gallery-<date>.json`` (a rerun of some models or sides replaces only
those rows); a Markdown table is printed. ``python benchmarks/gallery.py --sides raw`` runs the raw side
only; ``--models pymc-ar2,numpyro-gp`` a subset; ``--table FILE`` prints the table of a results file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEED = 20
DRAWS, TUNE, CHAINS = 500, 500, 2
SIDES = ("raw", "resilient")
RAW_X64 = False  # raw NumPyro in its own default precision (float32), as a user runs it; --raw-x64 for float64
TIME_BUDGET = None  # resilient.sample's time_budget (--budget): None, its default
LIMIT = 420  # seconds per model and side before the child is killed
USABLE_RHAT = 1.01
#: "no worse on R-hat" with an MCSE-like slack: R-hat from 2 x 500 draws moves by some thousandths between
#: runs on a healthy posterior, and by a share of its distance from 1 on a poorly mixed one; the smallest bulk
#: ESS over many components of 1,000 draws by some tens of percent (0.83 x between two healthy runs seen here).
RHAT_SLACK, RHAT_RELATIVE, ESS_RATIO = 0.01, 1.25, 0.7


def rhat_worse(raw: float, res: float) -> bool:
    """Resilient's worst R-hat is worse than raw's beyond sampling noise."""
    return res - 1 > RHAT_RELATIVE * (raw - 1) + RHAT_SLACK


# ---------------------------------------------------------------- diagnostics


def diagnostics(posterior: dict[str, np.ndarray]) -> dict:
    """Worst rank-normalised split R-hat and smallest bulk ESS over the varying scalar components of
    ``posterior`` (name -> array of shape (chain, draw, ...)); the variables they come from."""
    from arviz_stats.base import array_stats

    worst_rhat, worst_at, min_ess, min_at = -np.inf, None, np.inf, None
    for name, values in posterior.items():
        array = np.asarray(values, float)
        flat = array.reshape(array.shape[0], array.shape[1], -1)
        for i in range(flat.shape[2]):
            column = flat[:, :, i]
            if not np.all(np.isfinite(column)):
                return {"worst_rhat": float("inf"), "worst_rhat_at": name, "min_ess_bulk": 0.0, "min_ess_at": name}
            if np.ptp(column) <= 1e-12 * max(1.0, float(np.abs(column).max())):
                continue
            rhat = float(array_stats.rhat(column, chain_axis=0, draw_axis=1, method="rank"))
            ess = float(array_stats.ess(column, chain_axis=0, draw_axis=1, method="bulk"))
            label = name if flat.shape[2] == 1 else f"{name}[{i}]"
            if rhat > worst_rhat:
                worst_rhat, worst_at = rhat, label
            if ess < min_ess:
                min_ess, min_at = ess, label
    return {"worst_rhat": worst_rhat, "worst_rhat_at": worst_at, "min_ess_bulk": min_ess, "min_ess_at": min_at}


def usable(row: dict) -> bool:
    """The issue's 'usable answer': it returned draws, worst R-hat <= 1.01 and no divergences."""
    return row.get("outcome") == "ok" and row.get("worst_rhat", np.inf) <= USABLE_RHAT and row.get("divergences") == 0


def _names(entry, built) -> list[str]:
    """The model's own variable names (free and deterministic), as the raw tool names them."""
    if entry.dialect == "pymc":
        return [v.name for v in built.free_RVs] + [v.name for v in built.deterministics]
    import jax
    from numpyro import handlers
    from numpyro.infer import init_to_uniform
    from numpyro.infer.util import _guess_max_plate_nesting  # noqa: F401 (only checks numpyro is whole)

    fn, args = built
    with jax.enable_x64(True), handlers.block(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from numpyro.contrib.funsor import config_enumerate, enum  # noqa: F401
            trace = handlers.trace(handlers.substitute(handlers.seed(fn, 0), substitute_fn=init_to_uniform)
                                   ).get_trace(*args)
        except Exception:  # noqa: BLE001 - an enumerated model cannot be traced plainly; fall back
            return []
    return [n for n, s in trace.items()
            if (s["type"] == "sample" and not s["is_observed"]
                and not s.get("infer", {}).get("enumerate")) or s["type"] == "deterministic"]


# ---------------------------------------------------------------- the two sides


def run_raw(entry, built) -> dict:
    started = time.perf_counter()
    if entry.dialect == "pymc":
        import pymc as pm

        idata = pm.sample(draws=DRAWS, tune=TUNE, chains=CHAINS, random_seed=SEED, cores=1, progressbar=False,
                          model=built)
        seconds = time.perf_counter() - started
        posterior = {k: idata.posterior[k].values for k in idata.posterior.data_vars}
        divergences = int(idata.sample_stats["diverging"].values.sum())
        depth = _depth_share(idata.sample_stats)
        engine = idata.posterior.attrs.get("inference_library", "pymc")
    else:
        import jax
        from numpyro.infer import MCMC, NUTS

        fn, args = built
        with jax.enable_x64(RAW_X64):
            mcmc = MCMC(NUTS(fn), num_warmup=TUNE, num_samples=DRAWS, num_chains=CHAINS,
                        chain_method="sequential", progress_bar=False)
            mcmc.run(jax.random.PRNGKey(SEED), *args, extra_fields=("diverging", "num_steps"))
            seconds = time.perf_counter() - started
            posterior = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
            extra = mcmc.get_extra_fields()
            divergences = int(np.asarray(extra["diverging"]).sum())
            steps = np.asarray(extra["num_steps"])
            depth = float(np.mean(steps >= 2**10 - 1))
            engine = "numpyro"
    return {"outcome": "ok", "seconds": seconds, "divergences": divergences, "max_depth_share": depth,
            "engine": engine, "_posterior": posterior}


def _depth_share(stats) -> float | None:
    """Share of draws that hit the maximum tree depth (10), whichever engine's names the stats use."""
    for key in ("maxdepth_reached", "reached_max_treedepth"):
        if key in stats:
            return float(np.mean(np.asarray(stats[key].values, bool)))
    if "tree_depth" in stats:
        return float(np.mean(np.asarray(stats["tree_depth"].values) >= 10))
    return None


def run_resilient(entry, built) -> dict:
    import resilient
    from resilient import record
    from resilient.errors import SamplingFailed

    kwargs = dict(draws=DRAWS, tune=TUNE, chains=CHAINS, random_seed=SEED, progressbar=False, cores=1)
    if TIME_BUDGET is not None:
        kwargs["time_budget"] = TIME_BUDGET
    started = time.perf_counter()
    try:
        if entry.dialect == "pymc":
            data = resilient.sample(model=built, **kwargs)
        else:
            fn, args = built
            data = resilient.sample(fn, *args, **kwargs)
    except SamplingFailed as error:
        attempts = [a.to_dict() if hasattr(a, "to_dict") else a for a in (error.attempts or ())]
        return {"outcome": "failed", "seconds": time.perf_counter() - started, "message": str(error)[:600],
                "attempts": _attempts(attempts)}
    seconds = time.perf_counter() - started
    run = record.read_run(data) or {}
    posterior = {k: data["posterior"][k].values for k in data["posterior"].data_vars}
    stats = data["sample_stats"]
    divergences = int(stats["diverging"].values.sum()) if "diverging" in stats else None
    depth = _depth_share(stats)
    return {"outcome": "ok", "seconds": seconds, "divergences": divergences, "max_depth_share": depth,
            "time_budget": TIME_BUDGET, "engine": run.get("backend"), "status": run.get("status"),
            "returned_attempt": run.get("returned_attempt"), "message": (run.get("message") or "")[:600],
            "attempts": _attempts(record.read_attempts(data)), "_posterior": posterior}


def _attempts(attempts: list[dict]) -> list[dict]:
    """The attempt log, less the sampler state: what each attempt changed, why it ended, what it gave."""
    keep = ("attempt", "backend", "remedy", "failure", "outcome", "message", "seconds", "draws", "divergences",
            "rhat", "ess_bulk", "compile_seconds")
    out = []
    for a in attempts:
        row = {k: a.get(k) for k in keep if k in a}
        if isinstance(row.get("message"), str):
            row["message"] = row["message"][:300]
        settings = a.get("settings") or {}
        row["settings"] = {k: v for k, v in settings.items()
                           if isinstance(v, (int, float, str, bool, type(None))) or k in ("reparameterised",)}
        out.append(row)
    return out


# ---------------------------------------------------------------- child and parent


def child(name: str, sides: list[str]) -> None:
    from examples.gallery import MODELS

    warnings.simplefilter("ignore")
    import logging

    logging.getLogger("pymc").setLevel(logging.ERROR)
    entry = MODELS[name]
    if entry.dialect == "numpyro" and "resilient" in sides:
        import resilient.adapters.numpyro  # noqa: F401 (devices as Resilient sets them, before jax starts)
    names = None
    for side in sides:
        built = entry.build()  # a fresh model per side
        if names is None:
            names = _names(entry, built)
        try:
            row = run_raw(entry, built) if side == "raw" else run_resilient(entry, built)
        except Exception as error:  # noqa: BLE001 - a side that fails is a measurement
            row = {"outcome": "error", "message": f"{type(error).__name__}: {str(error)[:500]}"}
        posterior = row.pop("_posterior", None)
        if posterior is not None:
            chosen = {k: v for k, v in posterior.items() if not names or k in names}
            row.update(diagnostics(chosen or posterior))
        row["attempts_count"] = len(row.get("attempts", [])) if side == "resilient" else None
        print("RESULT " + json.dumps({"model": name, "side": side, **row}, default=_jsonable), flush=True)


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def run_model(name: str, sides: list[str], limit: float) -> list[dict]:
    """``sides`` of one model in a child process, killed (its process group) after ``limit`` seconds."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, __file__, "--child", name, "--sides", ",".join(sides)]
                               + (["--raw-x64"] if RAW_X64 else [])
                               + ([] if TIME_BUDGET is None else ["--budget", str(TIME_BUDGET)]),
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=limit)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        timed_out = True
    rows = [json.loads(line[7:]) for line in (out or "").splitlines() if line.startswith("RESULT ")]
    done = {r["side"] for r in rows}
    for side in sides:
        if side not in done:
            why = (f"timeout: killed after {limit:.0f} s for the model" if timed_out
                   else f"child exited {process.returncode}: {(err or '')[-400:]}")
            rows.append({"model": name, "side": side, "outcome": "timeout" if timed_out else "crash",
                         "seconds": time.perf_counter() - started if timed_out else None, "message": why})
    return rows


def main(argv=None) -> int:
    from examples.gallery import MODELS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--limit", type=float, default=LIMIT, help="seconds per model and side")
    parser.add_argument("--raw-x64", action="store_true", help="raw NumPyro in float64 (Resilient's default)")
    parser.add_argument("--budget", type=float, help="resilient.sample's time_budget in seconds (default: none)")
    parser.add_argument("--child", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--table", metavar="FILE", help="print the Markdown table of a results file and stop")
    args = parser.parse_args(argv)
    sides = args.sides.split(",")
    global RAW_X64, TIME_BUDGET
    RAW_X64, TIME_BUDGET = args.raw_x64, args.budget
    if args.child:
        child(args.child, sides)
        return 0
    path = Path(args.out) / f"gallery-{datetime.date.today().isoformat()}.json"
    if args.table:
        rows = json.loads(Path(args.table).read_text())["rows"]
        print(markdown(rows))
        for name, why in worse(rows):
            print(f"\nWORSE {name}: {why}")
            res = next(r for r in rows if r["model"] == name and r["side"] == "resilient")
            print(f"  run: {res.get('status')}: {res.get('message', '')}")
            for a in res.get("attempts") or []:
                print(f"  {json.dumps(a)}")
        return 0
    results = []
    for name in args.models.split(","):
        load = os.getloadavg()[0]
        for side in sides:  # each side in its own process, under its own limit: neither warms the other's caches
            for row in run_model(name, [side], args.limit):
                row["load_average_before"] = load
                results.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "attempts"}), flush=True)
            load = os.getloadavg()[0]
        merged = save(path, results, args.limit)  # after each model: a run cut short keeps what finished
    print(markdown(merged))
    print(f"written {path}")
    return 0


def save(path: Path, results: list[dict], limit: float) -> list[dict]:
    """Write ``results`` to ``path``, replacing the rows of the same (model, side) and keeping the others."""
    from examples.gallery import MODELS

    rows = list(results)
    if path.exists():
        done = {(r["model"], r["side"]) for r in rows}
        rows = [r for r in json.loads(path.read_text())["rows"] if (r["model"], r["side"]) not in done] + rows
    order = {n: i for i, n in enumerate(MODELS)}
    rows.sort(key=lambda r: (order.get(r["model"], 999), SIDES.index(r["side"]) if r["side"] in SIDES else 9))
    import numpyro
    import pymc

    git = subprocess.run(["git", "log", "-1", "--format=%h %s", "--", "resilient/loop.py"], cwd=ROOT,
                         capture_output=True, text=True).stdout.strip()[:120]
    out = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "pymc": pymc.__version__,
           "numpyro": numpyro.__version__, "loop_commit": git, "draws": DRAWS, "tune": TUNE, "chains": CHAINS,
           "seed": SEED, "limit_s": limit, "raw_numpyro_x64": RAW_X64, "rows": rows}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=_jsonable))
    return rows


def _cell(row: dict | None) -> list[str]:
    if row is None:
        return ["-"] * 5
    if row.get("outcome") != "ok":
        return [row.get("outcome", "?"), _num(row.get("seconds"), "{:.1f}"), "", "", ""]
    verdict = "usable" if usable(row) else "not usable"
    return [verdict, _num(row.get("seconds"), "{:.1f}"), _num(row.get("worst_rhat"), "{:.3f}"),
            _num(row.get("min_ess_bulk"), "{:.0f}"), str(row.get("divergences"))]


def _num(value, fmt: str) -> str:
    return "" if value is None else fmt.format(value)


def remedies(row: dict | None) -> str:
    if not row or not row.get("attempts"):
        return ""
    parts = []
    for a in row["attempts"]:
        parts.append(f"{a.get('remedy') or 'first'} -> {a.get('outcome')}"
                     + (f" ({a['failure']})" if a.get("failure") else ""))
    return "; ".join(parts)


def worse(results: list[dict]) -> list[tuple[str, str]]:
    """(model, why) for each model where Resilient did worse than raw by the issue's invariants: raw
    usable and Resilient not; Resilient's worst R-hat worse than raw's (:func:`rhat_worse`); (raw usable)
    Resilient's smallest bulk ESS under ESS_RATIO x raw's; Resilient gave no answer where raw gave one."""
    out = []
    for name in dict.fromkeys(r["model"] for r in results):
        raw = next((r for r in results if r["model"] == name and r["side"] == "raw"), None)
        res = next((r for r in results if r["model"] == name and r["side"] == "resilient"), None)
        if raw is None or res is None or raw.get("outcome") != "ok":
            continue
        if res.get("outcome") != "ok":
            out.append((name, f"Resilient {res.get('outcome')} where raw returned draws: "
                               f"{res.get('message', '')[:200]}"))
            continue
        why = []
        if usable(raw) and not usable(res):
            why.append("raw usable, Resilient not")
        if rhat_worse(raw["worst_rhat"], res["worst_rhat"]):
            why.append(f"worst R-hat {res['worst_rhat']:.3f} ({res.get('worst_rhat_at')}) "
                       f"vs raw {raw['worst_rhat']:.3f}")
        if usable(raw) and res["min_ess_bulk"] < ESS_RATIO * raw["min_ess_bulk"]:
            why.append(f"min bulk ESS {res['min_ess_bulk']:.0f} vs raw {raw['min_ess_bulk']:.0f}")
        if why:
            out.append((name, "; ".join(why)))
    return out


def markdown(results: list[dict]) -> str:
    """One line per model: raw and Resilient outcome, seconds, worst R-hat, smallest bulk ESS,
    divergences; Resilient's engine, attempts and remedies."""
    lines = ["| model | raw | s | R-hat | ESS | div | Resilient | s | R-hat | ESS | div | engine | attempts | "
             "remedies (attempt -> outcome (failure)) |", "|---|" + "---|" * 13]
    for name in dict.fromkeys(r["model"] for r in results):
        raw = next((r for r in results if r["model"] == name and r["side"] == "raw"), None)
        res = next((r for r in results if r["model"] == name and r["side"] == "resilient"), None)
        returned = ("" if res is None or res.get("returned_attempt") is None
                    else f" (returned {res['returned_attempt']})")
        extra = ["", "", ""] if res is None else [str(res.get("engine") or ""),
                                                  str(res.get("attempts_count") or "") + returned,
                                                  remedies(res).replace("|", "/")]
        lines.append(f"| {name} | " + " | ".join(_cell(raw) + _cell(res) + extra) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
