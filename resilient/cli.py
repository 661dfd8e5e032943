"""The ``resilient`` command: ``preflight``, ``sample`` and ``report``. Thin: parses, then calls the library."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any, Sequence

from resilient.errors import ModelError, ResilientError, SamplingFailed, UnsupportedModelError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_WARN = 0, 1, 2, 3

EPILOG_MAIN = """\
examples:
  resilient preflight examples/pathologies.py:motivating --backend both
  resilient sample examples/reference_models.py:blr --data blr.json --out run.nc --report report/
  resilient report run.nc --out report/ --format html,md,json

exit codes: 0 ok, 1 a blocking problem (or a failed verdict), 2 usage error, 3 warnings with --strict
"""


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


def load_model(spec: str) -> tuple[Any, dict]:
    """``path.py[:name]`` -> the model object and the module's ``data`` dict (if any)."""
    path_text, _, name = spec.partition(":")
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"model file {path_text!r} does not exist. Give MODEL.py or MODEL.py:function.")
    module_name = f"resilient_user_model_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    sys.path.insert(0, str(path.resolve().parent))
    try:
        module_spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    data = getattr(module, "data", None)
    data = dict(data) if isinstance(data, dict) else {}
    if name:
        if not hasattr(module, name):
            raise UsageError(f"{path} defines no {name!r}. It defines: {', '.join(_candidates(module, module_name)) or 'nothing usable'}.")
        return getattr(module, name), data
    candidates = _candidates(module, module_name)
    if "model" in candidates:
        return getattr(module, "model"), data
    if len(candidates) == 1:
        return getattr(module, candidates[0]), data
    raise UsageError(
        f"{path} defines {len(candidates)} candidate models ({', '.join(candidates) or 'none'}); "
        f"pick one with {path}:NAME."
    )


def _candidates(module: types.ModuleType, module_name: str) -> list[str]:
    from resilient.resolve import is_pymc_model

    names = []
    for key, value in vars(module).items():
        if key.startswith("_"):
            continue
        if is_pymc_model(value):
            names.append(key)
        elif isinstance(value, types.FunctionType) and value.__module__ == module_name:
            names.append(key)
    return names


def read_data(path: str | None) -> dict:
    if path is None:
        return {}
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError as error:
        raise UsageError(f"data file {path!r} does not exist.") from error
    except json.JSONDecodeError as error:
        raise UsageError(f"data file {path!r} is not valid JSON: {error}.") from error
    if not isinstance(raw, dict):
        raise UsageError(f"data file {path!r} must hold a JSON object of argument names to values.")
    import numpy as np

    return {k: np.asarray(v) if isinstance(v, list) else v for k, v in raw.items()}


def _model_arguments(model: Any, data: dict) -> dict:
    """Only the data keys the model function takes (posteriordb files carry extra columns)."""
    import inspect

    from resilient.resolve import is_pymc_model

    if is_pymc_model(model) or not callable(model):
        return {}
    parameters = inspect.signature(model).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return data
    return {k: v for k, v in data.items() if k in parameters}


def _backends(choice: str, model: Any) -> list[str]:
    from resilient.resolve import is_numpyro_function, is_pymc_function, is_pymc_model

    if is_pymc_model(model) or (callable(model) and not is_numpyro_function(model) and is_pymc_function(model)):
        return ["pymc"]
    if callable(model) and is_numpyro_function(model):
        return ["numpyro"]
    return ["numpyro", "pymc"] if choice == "both" else [choice]


def command_preflight(options: argparse.Namespace) -> int:
    from rich.console import Console

    from resilient.checks import preflight

    model, module_data = load_model(options.model)
    data = _model_arguments(model, {**module_data, **read_data(options.data)})
    reports = [preflight(model, backend=backend, fix=options.fix, float32=options.float32, **data)
               for backend in _backends(options.backend, model)]
    if options.json:
        print(json.dumps([r.to_dict() for r in reports] if len(reports) > 1 else reports[0].to_dict(), indent=2))
    else:
        console = Console(width=140)
        for report in reports:
            console.print(report.table())
            if not report.findings:
                console.print("  nothing to report: the log density and its gradient are finite at every point checked.")
    return max(r.exit_code for r in reports)


def command_sample(options: argparse.Namespace) -> int:
    from rich.console import Console

    import resilient
    from resilient.diagnostics import diagnose
    from resilient.report import write_report

    console = Console(width=140, stderr=True)
    model, module_data = load_model(options.model)
    data = _model_arguments(model, {**module_data, **read_data(options.data)})
    backend = _backends(options.backend, model)[0]
    out = Path(options.out)
    checkpoint = options.checkpoint or str(out.with_suffix("")) + "-checkpoint"
    try:
        result = resilient.sample(
            model, backend=backend, draws=options.draws, tune=options.tune, chains=options.chains,
            target_accept=options.target_accept, random_seed=options.seed, time_budget=options.time_budget,
            max_attempts=options.max_attempts, checkpoint=checkpoint, progressbar=not options.quiet,
            fix=options.fix, **data)
    except SamplingFailed as failure:
        console.print(f"[bold red]{failure}")
        for attempt in failure.attempts:
            console.print(f"  attempt {attempt.attempt} ({attempt.backend}): {attempt.outcome}: {attempt.message}")
        if failure.partial is not None:
            failure.partial.to_netcdf(out, engine="h5netcdf")
            if options.report:
                write_report(failure.partial, options.report)
            console.print(f"the last attempt's draws were written to {out}")
        return EXIT_FAIL
    out.parent.mkdir(parents=True, exist_ok=True)
    result.to_netcdf(out, engine="h5netcdf")
    diagnostics = diagnose(result)
    console.print(diagnostics.summary_table())
    console.print(diagnostics.table())
    if options.report:
        paths = write_report(result, options.report, diagnostics=diagnostics)
        console.print(f"report: {', '.join(str(p) for p in paths.values())}")
    console.print(f"verdict: [bold]{diagnostics.verdict}[/]; draws: {out}")
    if diagnostics.verdict == "fail":
        return EXIT_FAIL
    if diagnostics.verdict == "warn" and options.strict:
        return EXIT_WARN
    return EXIT_OK


def command_report(options: argparse.Namespace) -> int:
    import xarray as xr

    from resilient.report import write_report

    path = Path(options.run)
    if not path.is_file():
        raise UsageError(f"{path} does not exist. Give a netCDF file written by `resilient sample --out`.")
    data = xr.open_datatree(path, engine="h5netcdf").load()
    formats = tuple(f.strip() for f in options.format.split(",") if f.strip())
    unknown = sorted(set(formats) - {"html", "md", "json"})
    if unknown:
        raise UsageError(f"--format must list some of html, md, json; got {', '.join(unknown)}.")
    paths = write_report(data, options.out, formats=formats)
    for kind, written in paths.items():
        print(f"{kind}: {written}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resilient", description="Preflight, sample and report Bayesian models on NumPyro and PyMC.",
        epilog=EPILOG_MAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="resilient 0.1.0")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{preflight,sample,report}")

    pre = commands.add_parser(
        "preflight", help="check a model's log density and gradient; fix unstable constructions",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate the log density and its gradient at the initial point, uniform(-2, 2) points and "
                    "prior draws; name the site, variable and cause of any NaN or infinity; rewrite known-"
                    "unstable constructions.",
        epilog="examples:\n  resilient preflight examples/pathologies.py:motivating\n"
               "  resilient preflight model.py:eight_schools --data eight_schools.json --backend both --json\n"
               "  resilient preflight pymc_model.py:model --no-fix\n\n"
               "exit codes: 0 clean or every problem fixed, 1 a blocking problem remains, 2 usage error")
    pre.add_argument("model", help="MODEL.py or MODEL.py:NAME (a shared-API function, NumPyro function or pm.Model)")
    pre.add_argument("--backend", choices=["numpyro", "pymc", "both"], default="numpyro")
    pre.add_argument("--data", help="JSON file of the model function's keyword arguments")
    pre.add_argument("--json", action="store_true", help="print the report as JSON")
    pre.add_argument("--fix", action=argparse.BooleanOptionalAction, default=True,
                     help="apply the rewrites (default) or only suggest them")
    pre.add_argument("--float32", action="store_true", help="evaluate in float32 (NumPyro)")
    pre.set_defaults(handler=command_preflight)

    run = commands.add_parser(
        "sample", help="preflight, sample with the resilient loop, save the draws and a report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Preflight, then NUTS in bounded attempts with remedies; the draws go to --out (netCDF) "
                    "and, as they finish, to a checkpoint folder.",
        epilog="examples:\n  resilient sample examples/pathologies.py:motivating --out run.nc --report report/\n"
               "  resilient sample model.py --data data.json --backend pymc --draws 2000 --time-budget 60 --strict\n\n"
               "exit codes: 0 verdict ok, 1 verdict fail or sampling failed, 3 verdict warn with --strict")
    run.add_argument("model", help="MODEL.py or MODEL.py:NAME")
    run.add_argument("--data", help="JSON file of the model function's keyword arguments")
    run.add_argument("--backend", choices=["numpyro", "pymc"], default="numpyro")
    run.add_argument("--draws", type=int, default=1000)
    run.add_argument("--tune", type=int, default=1000)
    run.add_argument("--chains", type=int, default=4)
    run.add_argument("--target-accept", type=float, default=0.8)
    run.add_argument("--seed", type=int, default=None, help="random seed")
    run.add_argument("--time-budget", type=float, default=None, help="seconds for the whole call")
    run.add_argument("--max-attempts", type=int, default=None)
    run.add_argument("--out", default="run.nc", help="netCDF file for the DataTree (default run.nc)")
    run.add_argument("--checkpoint", help="folder for draws as they finish (default: beside --out)")
    run.add_argument("--report", help="folder for report.html, report.md and report.json")
    run.add_argument("--fix", action=argparse.BooleanOptionalAction, default=True)
    run.add_argument("--strict", action="store_true", help="exit 3 when the verdict is warn")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(handler=command_sample)

    rep = commands.add_parser(
        "report", help="write the HTML/Markdown/JSON report of a saved run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Diagnostics (R-hat, ESS, MCSE, E-BFMI, divergences, tree depth), preflight findings and the "
                    "attempt log of a run saved by `resilient sample` (or any ArviZ netCDF file).",
        epilog="examples:\n  resilient report run.nc\n  resilient report run.nc --out report/ --format html,json\n\n"
               "exit codes: 0 report written, 2 usage error (missing file, unknown format)")
    rep.add_argument("run", help="netCDF file written by `resilient sample --out`")
    rep.add_argument("--out", default="report", help="folder for the report files (default report/)")
    rep.add_argument("--format", default="html,md,json", help="comma-separated: html, md, json")
    rep.set_defaults(handler=command_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    options = parser.parse_args(argv)
    try:
        return options.handler(options)
    except UsageError as error:
        print(f"resilient {options.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (ModelError, UnsupportedModelError) as error:
        print(f"resilient {options.command}: {error}", file=sys.stderr)
        return EXIT_FAIL
    except ResilientError as error:
        print(f"resilient {options.command}: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
