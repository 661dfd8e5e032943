"""What one ``resilient.sample`` call compiles, and where (issue #24 item 1: compile once).

    python benchmarks/compiles.py [--engines pymc,nutpie,auto,numpyro] [--model kidiq-kidscore_momiq]

Each engine runs in a fresh interpreter (nothing compiled in the process; the on-disk caches as the machine has
them), one ``resilient.sample`` call, 4 chains x (1000 + 1000), seed 12345, counting:

* PyTensor function compilations (each ``FunctionMaker``: graph rewriting, then linking), with the linker;
* Numba compilations (top-level ``numba:compile`` events; PyTensor's Numba linker and nutpie compile through it);
* XLA compilations (``/jax/core/compile/backend_compile_duration`` events; a persistent-cache hit has none);

in forked chain workers too (they append to the same log). Each is attributed to the phase of the call it ran in
(``preflight: points``, ``preflight: evaluations``, ``engine choice: gradient timing``, ``engine``, ``other``:
building the model) and to the function it compiled, so a graph compiled twice shows as a repeated name.
Preflight's parts are timed (seconds, compilations included). Prints a table per engine; ``--json`` writes the
events too; ``--verbose`` lists every compilation.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENGINES = ("pymc", "nutpie", "auto", "numpyro")
DRAWS, TUNE, CHAINS, SEED = 1000, 1000, 4, 12345

_phase = ["other"]
_log: list = []


def _emit(kind: str, what: str, seconds: float, **extra) -> None:
    outer = next((p for p in _phase if p != "other"), "other")
    record = {"pid": os.getpid(), "kind": kind, "phase": outer, "inner": _phase[-1], "what": what,
              "seconds": round(seconds, 4),
              **extra}
    path = os.environ.get("COMPILES_LOG")
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def _caller() -> str:
    """Who asked for the compilation: the innermost frame of Resilient's, and the innermost of PyMC's or
    nutpie's below it (the library function that compiled on our behalf)."""
    import traceback

    ours = theirs = None
    for frame in reversed(traceback.extract_stack()[:-3]):
        path = frame.filename
        if "/benchmarks/compiles.py" in path or "/pytensor/" in path:
            continue
        label = f"{Path(path).name}:{frame.name}"
        if theirs is None and ours is None and ("/pymc/" in path or "/nutpie/" in path or "/numpyro/" in path):
            theirs = label
        if ours is None and ("/adapters/" in path or "/resilient/" in path):
            ours = label
            break
    return " < ".join(part for part in (theirs, ours) if part) or "?"


def install_counters() -> None:
    """Count PyTensor, Numba and XLA compilations from here on (this process and its forks)."""
    import pytensor.compile.maker as types

    original_init = types.FunctionMaker.__init__
    original_create = types.FunctionMaker.create

    def init(self, inputs, outputs=None, *args, **kwargs):
        started = time.perf_counter()
        original_init(self, inputs, outputs, *args, **kwargs)
        self._counted_rewrite = time.perf_counter() - started
        self._counted_copy = bool(kwargs.get("no_fgraph_prep"))  # Function.copy: linked again, not rewritten

    def create(self, *args, **kwargs):
        started = time.perf_counter()
        function = original_create(self, *args, **kwargs)
        linker = type(self.linker).__name__
        names = [str(getattr(o.variable, "name", None) or type(o.variable.owner.op).__name__
                     if o.variable.owner is not None else o.variable) for o in self.outputs][:4]
        kind = "pytensor-copy" if getattr(self, "_counted_copy", False) else "pytensor"
        _emit(kind, f"{_caller()} -> {linker} [{', '.join(names)}]",
              getattr(self, "_counted_rewrite", 0.0) + time.perf_counter() - started, linker=linker)
        return function

    types.FunctionMaker.__init__ = init
    types.FunctionMaker.create = create

    from numba.core import event

    depth = collections.Counter()
    starts: dict = {}

    class Listener(event.Listener):
        def on_start(self, ev):
            key = os.getpid()
            if depth[key] == 0:
                starts[key] = (time.perf_counter(), str(ev.data.get("dispatcher", "?")) if ev.data else "?")
            depth[key] += 1

        def on_end(self, ev):
            key = os.getpid()
            depth[key] -= 1
            if depth[key] == 0 and key in starts:
                began, name = starts.pop(key)
                _emit("numba", f"{_caller()} -> {name[:80]}", time.perf_counter() - began)

    event.register("numba:compile", Listener())

    import logging

    import jax
    import jax.monitoring

    class JaxCompiles(logging.Handler):
        """JAX's ``jax_log_compiles`` records: one per XLA compilation, naming the function and its shapes."""

        def emit(self, record):
            message = record.getMessage()
            if message.startswith("Compiling "):
                _emit("xla", f"{_caller()} -> {message[10:110]}", 0.0)

    jax.config.update("jax_log_compiles", True)
    handler = JaxCompiles(level=logging.DEBUG)
    for name in ("jax._src.interpreters.pxla", "jax._src.dispatch", "jax._src.pjit"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False  # not printed on stderr

    def on_duration(name, seconds, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            _emit("xla-seconds", "backend compile", seconds)
        elif name == "/jax/compilation_cache/cache_retrieval_time_sec":
            _emit("xla-cache-hit", _caller(), seconds)

    jax.monitoring.register_event_duration_secs_listener(on_duration)


def _phased(owner, attribute: str, phase: str) -> None:
    function = getattr(owner, attribute)

    def wrapper(*args, **kwargs):
        _phase.append(phase)
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            _phase.pop()
            _emit("phase", phase, time.perf_counter() - started)

    setattr(owner, attribute, wrapper)


def _phased_property(owner, attribute: str, phase: str) -> None:
    getter = getattr(owner, attribute).fget
    holder = type("Holder", (), {attribute: staticmethod(getter)})
    _phased(holder, attribute, phase)
    setattr(owner, attribute, property(getattr(holder, attribute)))


def install_phases() -> None:
    import resilient.checks as checks
    import resilient.engine as engine
    from resilient.adapters.numpyro.compiled import NumPyroCompiledModel
    from resilient.adapters.nutpie.compiled import NutpieCompiledModel
    from resilient.adapters.pymc.compiled import PyMCCompiledModel

    _phased(checks, "run_preflight", "preflight")
    _phased(checks, "_points", "preflight: points")
    _phased(checks, "_finite_difference", "preflight: finite differences")
    _phased(checks, "_improper_findings", "preflight: improper check")
    _phased(engine, "_gradient_seconds", "engine choice: gradient timing")
    _phased_property(PyMCCompiledModel, "_value_grad_fn", "compile: PyMC log density and gradient")
    _phased_property(NutpieCompiledModel, "nutpie_model", "compile: nutpie")
    _phased(NumPyroCompiledModel, "log_density_and_gradient", "NumPyro log density and gradient")
    for cls in (PyMCCompiledModel, NutpieCompiledModel, NumPyroCompiledModel):
        _phased(cls, "run_nuts", "engine")


def _child(engine: str, model_name: str) -> None:
    install_counters()
    import warnings

    import resilient
    from benchmarks.engines import _data
    from benchmarks.native_models import numpyro_models, pymc_model
    from resilient import record

    install_phases()
    if os.environ.get("COMPILES_FREEZE_ANY_ORDER"):  # --freeze-any-order: a frozen model listing them in another order
        import resilient.adapters.pymc.adapter as adapter

        adapter._same_names = lambda model, frozen: all(
            sorted(v.name for v in getattr(model, g)) == sorted(v.name for v in getattr(frozen, g))
            for g in ("free_RVs", "observed_RVs", "deterministics", "potentials"))
    data = _data(model_name)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        options = dict(draws=DRAWS, tune=TUNE, chains=CHAINS, random_seed=SEED, progressbar=False)
        if engine == "numpyro":
            result = resilient.sample(numpyro_models()[model_name], **options, **data)
        else:
            result = resilient.sample(model=pymc_model(model_name, data), engine=engine, **options)
    run = record.read_run(result) or {}
    attempts = len(record.read_attempts(result) or ())
    _emit("call", f"engine used: {run.get('backend')}, {attempts} attempt(s)", time.perf_counter() - started)


def summarise(events: list[dict]) -> dict:
    """Per phase and kind: count and seconds; the functions compiled more than once."""
    compiles = [e for e in events if e["kind"] in ("pytensor", "pytensor-copy", "numba", "xla")]
    table: dict = collections.defaultdict(lambda: {"count": 0, "seconds": 0.0})
    for e in compiles:
        phase = "preflight" if e["phase"].startswith("preflight") else e["phase"]
        cell = table[(phase, e["kind"])]
        cell["count"] += 1
        cell["seconds"] += e["seconds"]
    for e in events:
        if e["kind"] == "xla-seconds":
            phase = "preflight" if e["phase"].startswith("preflight") else e["phase"]
            table[(phase, "xla")]["seconds"] += e["seconds"]
    repeated = collections.Counter((e["kind"], e["what"]) for e in compiles)
    phases = collections.defaultdict(float)
    for e in events:
        if e["kind"] == "phase":
            phases[e["what"]] += e["seconds"]
    call = next((e for e in events if e["kind"] == "call"), {})
    return {"by_phase": {f"{p} / {k}": v for (p, k), v in sorted(table.items())},
            "twice": {f"{k}: {w}": n for (k, w), n in repeated.items() if n > 1},
            "phase_seconds": dict(phases), "call_seconds": call.get("seconds"), "engine_used": call.get("what"),
            "cache_hits": sum(e["kind"] == "xla-cache-hit" for e in events)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--model", default="kidiq-kidscore_momiq")
    parser.add_argument("--json", help="write the events and summaries here")
    parser.add_argument("--verbose", action="store_true", help="print every compilation")
    parser.add_argument("--freeze-any-order", action="store_true",
                        help="accept PyMC's frozen model when it lists the same variables in another order (what "
                             "adapters/pymc/adapter.py's _same_names refuses today): its cached functions then apply")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    out = {}
    for engine in args.engines.split(","):
        with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as log:
            load = os.getloadavg()[0]
            process = subprocess.run([sys.executable, __file__, "--child", engine, args.model], cwd=ROOT,
                                     env={**os.environ, "COMPILES_LOG": log.name,
                                          **({"COMPILES_FREEZE_ANY_ORDER": "1"} if args.freeze_any_order else {})},
                                     capture_output=True, text=True)
            events = [json.loads(line) for line in Path(log.name).read_text().splitlines() if line.strip()]
        if process.returncode:
            print(f"{engine}: failed\n{process.stderr[-2000:]}")
            continue
        summary = summarise(events)
        summary["load_average_before"] = load
        out[engine] = {"summary": summary, "events": events}
        print(f"\n## {engine} ({summary['engine_used']}; call {summary['call_seconds']:.2f} s, load {load:.2f})")
        print("| phase / kind | compilations | seconds |\n|---|---|---|")
        for key, cell in summary["by_phase"].items():
            print(f"| {key} | {cell['count']} | {cell['seconds']:.2f} |")
        print("phases (s, compilations included): " + ", ".join(
            f"{k} {v:.2f}" for k, v in summary["phase_seconds"].items()))
        if summary["cache_hits"]:
            print(f"XLA persistent-cache hits: {summary['cache_hits']}")
        print("compiled more than once: " + ("; ".join(f"{k} x{n}" for k, n in summary["twice"].items()) or "none"))
        if args.verbose:
            for e in events:
                if e["kind"] not in ("phase", "call", "xla-seconds"):
                    print(f"   [{e['pid']}] {e['inner']:<40} {e['kind']:<8} {e['seconds']:7.3f} {e['what']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
