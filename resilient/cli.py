"""The ``resilient`` command: ``preflight``, ``sample``, ``report``, ``sample-many``, ``sbc`` and
``check-agreement``. Thin: parses, then calls the library."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from resilient import jsonio, netcdf
from resilient.errors import ModelError, ResilientError, SamplingFailed, UnsupportedModelError
from resilient.loading import ModelFileError, load_model

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_WARN = 0, 1, 2, 3

EPILOG_MAIN = """\
examples:
  resilient preflight examples/pathologies.py:motivating --backend both
  resilient sample examples/reference_models.py:blr --data blr.json --out run.nc --report report/
  resilient report run.nc --out report/ --format html,md,json
  resilient sample-many model.py:fn --datasets data.jsonl --out fits/ [--scheduler tcp://host:8786]
  resilient sbc examples/sbc_models.py:normal --simulations 200 --out sbc/ [--scheduler tcp://host:8786]
  resilient check-agreement examples/garch.py:garch --json agreement.json

exit codes: 0 ok, 1 a blocking problem (or a failed verdict), 2 usage error, 3 warnings with --strict
"""


class UsageError(Exception):
    """Bad command-line input: exit code 2 (as is a model file that does not load: :class:`ModelFileError`)."""


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
    from resilient.resolve import is_bambi_model, is_numpyro_function, is_pymc_function, is_pymc_model

    if is_pymc_model(model) or is_bambi_model(model) or (
            callable(model) and not is_numpyro_function(model) and is_pymc_function(model)):
        return ["pymc"]  # a Bambi model builds a pm.Model
    if callable(model) and is_numpyro_function(model):
        return ["numpyro"]
    return ["numpyro", "pymc"] if choice == "both" else [choice]


def command_preflight(options: argparse.Namespace) -> int:
    from rich.console import Console

    from resilient.checks import preflight

    model, module_data = load_model(options.model)
    data = _model_arguments(model, {**module_data, **read_data(options.data)})
    reports = [preflight(model, backend=backend, fix=options.fix, float32=True if options.float32 else None, **data)
               for backend in _backends(options.backend, model)]
    if options.json:
        print(jsonio.dumps([r.to_dict() for r in reports] if len(reports) > 1 else reports[0].to_dict(), indent=2))
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
        if options.resume:  # the run's own settings come from its checkpoint; --draws extends it
            result = resilient.resume(options.resume, model, draws=options.draws, progressbar=not options.quiet,
                                      **data)
        else:
            result = resilient.sample(
                model, backend=backend, draws=options.draws or 1000, tune=options.tune, chains=options.chains,
                target_accept=options.target_accept, random_seed=options.seed, time_budget=options.time_budget,
                max_attempts=options.max_attempts, checkpoint=checkpoint, progressbar=not options.quiet,
                fix=options.fix, **data)
    except SamplingFailed as failure:
        console.print(f"[bold red]{failure}")
        for attempt in failure.attempts:
            console.print(f"  attempt {attempt.attempt} ({attempt.backend}): {attempt.outcome}: {attempt.message}")
        if failure.partial is not None:
            netcdf.write(failure.partial, out)
            if options.report:
                write_report(failure.partial, options.report)
            console.print(f"the last attempt's draws were written to {out}")
        return EXIT_FAIL
    out.parent.mkdir(parents=True, exist_ok=True)
    netcdf.write(result, out)
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
    from resilient.report import write_report

    path = Path(options.run)
    if not path.is_file():
        raise UsageError(f"{path} does not exist. Give a netCDF file written by `resilient sample --out`.")
    data = netcdf.open_tree(path)
    formats = tuple(f.strip() for f in options.format.split(",") if f.strip())
    unknown = sorted(set(formats) - {"html", "md", "json"})
    if unknown:
        raise UsageError(f"--format must list some of html, md, json; got {', '.join(unknown)}.")
    paths = write_report(data, options.out, formats=formats)
    for kind, written in paths.items():
        print(f"{kind}: {written}")
    return EXIT_OK


def _reference(spec: str) -> tuple[str, Any, dict]:
    """``path.py[:name]`` -> a reference workers can load (``/abs/path.py:name``), the model, its module data."""
    from resilient.resolve import is_pymc_model

    model, module_data = load_model(spec)
    if is_pymc_model(model):
        raise UsageError(f"{spec} is a pm.Model, which holds one data set. Many fits need a function that builds "
                         "and returns the pm.Model from its arguments (def model(x, y=None): ...).")
    path_text, _, name = spec.partition(":")
    if not name:
        name = getattr(model, "__name__", None) or next(
            (key for key, value in vars(sys.modules[getattr(model, "__module__", "")]).items() if value is model), "")
    return f"{Path(path_text).resolve()}:{name}", model, module_data


def _array(values: list) -> Any:
    """A JSON list as a numpy array; ``null`` in a numeric list is NaN (missing data, which preflight names)."""
    import numpy as np

    array = np.asarray(values)
    if array.dtype == object:
        try:
            return np.asarray(values, dtype=float)
        except (TypeError, ValueError):
            return array
    return array


def read_datasets(path: str) -> tuple[list[dict], list[str] | None]:
    """A JSON Lines file: one JSON object of keyword arguments per line (an ``"_id"`` key names the fit)."""
    import numpy as np

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"data sets file {path!r} does not exist. Give a JSON Lines file: one JSON object per line.")
    datasets, ids = [], []
    with file.open() as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as error:
                raise UsageError(f"{path}, line {number}: not valid JSON: {error}.") from error
            if not isinstance(raw, dict):
                raise UsageError(f"{path}, line {number}: each line must be a JSON object of argument names to values.")
            ids.append(raw.pop("_id", None))
            datasets.append({k: _array(v) if isinstance(v, list) else v for k, v in raw.items()})
    if not datasets:
        raise UsageError(f"{path} holds no data set.")
    named = [i for i in ids if i is not None]
    if named and len(named) != len(ids):
        raise UsageError(f"{path}: give every line an \"_id\" or none.")
    return datasets, ([str(i) for i in ids] if named else None)


def _print_failures(console: Any, rows: list[dict], limit: int = 10) -> None:
    for row in rows[:limit]:
        console.print(f"  {row['fit_id']}: {row['status']}: {row['reason'][:300]}")
    if len(rows) > limit:
        console.print(f"  ... and {len(rows) - limit} more (summary.csv has them all)")


def command_sample_many(options: argparse.Namespace) -> int:
    from rich.console import Console

    from resilient.batch import sample_many

    console = Console(width=140, stderr=True)
    reference, model, module_data = _reference(options.model)
    datasets, ids = read_datasets(options.datasets)
    datasets = [_model_arguments(model, {**module_data, **data}) for data in datasets]
    result = sample_many(
        reference, datasets, out=options.out, backend=options.backend, client=options.scheduler,
        workers=options.workers, draws=options.draws, tune=options.tune, chains=options.chains,
        target_accept=options.target_accept, random_seed=options.seed, time_budget=options.time_budget,
        max_attempts=options.max_attempts, keep_draws=options.keep_draws, ids=ids, progressbar=not options.quiet,
        progress_lines=not options.quiet, fit_timeout="auto" if options.fit_timeout is None else options.fit_timeout,
        warm_start=options.warm_start)
    counts = ", ".join(f"{count} {status}" for status, count in result.counts.items() if count)
    console.print(f"{sum(result.counts.values())} fits in {options.out} ({counts}); {result.skipped} were already done")
    failures = result.failed
    _print_failures(console, failures)
    return EXIT_FAIL if failures else EXIT_OK


def command_sbc(options: argparse.Namespace) -> int:
    from rich.console import Console

    from resilient.sbc import sbc

    console = Console(width=140, stderr=True)
    reference, model, module_data = _reference(options.model)
    data = _model_arguments(model, {**module_data, **read_data(options.data)})
    simulator = _reference(options.simulator)[0] if options.simulator else None
    result = sbc(
        reference, options.simulations, data=data, simulator=simulator, observed=options.observed,
        var_names=options.var_names, backend=options.backend, draws=options.draws, tune=options.tune,
        chains=options.chains, rank_draws=options.rank_draws, prob=options.prob, target_accept=options.target_accept,
        random_seed=options.seed, time_budget=options.time_budget, max_attempts=options.max_attempts,
        out=options.out, client=options.scheduler, workers=options.workers, keep_draws=options.keep_draws,
        progressbar=not options.quiet, progress_lines=not options.quiet,
        fit_timeout="auto" if options.fit_timeout is None else options.fit_timeout, warm_start=options.warm_start)
    for check in result.checks:
        p_value = "" if check.p_value is None else f", p = {check.p_value:.4f}"
        console.print(f"  {check.parameter}: {check.verdict} ({check.fits} fits{p_value}){' - ' + check.shape if check.shape else ''}")
    if result.dropped:
        console.print(f"{len(result.dropped)} of {result.simulations} fits were dropped from the ranks:")
        _print_failures(console, result.dropped)
    console.print(f"verdict: [bold]{result.verdict}[/]; report: {result.report}")
    if result.verdict == "fail":
        return EXIT_FAIL
    if result.verdict in ("warn", "n/a") and options.strict:
        return EXIT_WARN
    return EXIT_OK


def command_check_agreement(options: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from resilient.agreement import check_agreement
    from resilient.resolve import is_pymc_model

    model, module_data = load_model(options.model)
    if is_pymc_model(model) or not callable(model) or len(_backends("both", model)) < 2:
        raise UsageError(f"{options.model} is a native {_backends('both', model)[0]} model; check-agreement runs "
                         "one shared-API model (resilient.model.sample) on both NumPyro and PyMC.")
    data = _model_arguments(model, {**module_data, **read_data(options.data)})
    try:
        result = check_agreement(model, draws=options.draws, tune=options.tune, chains=options.chains,
                                 random_seed=options.seed, family_alpha=options.alpha,
                                 target_accept=options.target_accept, time_budget=options.time_budget,
                                 max_attempts=options.max_attempts, progressbar=not options.quiet, **data)
    except SamplingFailed as failure:
        print(f"resilient check-agreement: {failure}", file=sys.stderr)
        return EXIT_FAIL
    except (ModelError, UnsupportedModelError) as error:  # the model, not the translation: no verdict to give
        print(f"resilient check-agreement: {error}", file=sys.stderr)
        return EXIT_USAGE
    a, b = result.backends
    table = Table(title=f"Agreement of {options.model} on {a} and {b}")
    for column in ("parameter", f"mean {a}", f"mean {b}", "difference", "z (mean)", f"sd {a}", f"sd {b}",
                   "z (sd)", "verdict"):
        table.add_column(column, justify="left" if column in ("parameter", "verdict") else "right")
    for p in result.parameters:
        table.add_row(p.name, f"{p.means[0]:.4g}", f"{p.means[1]:.4g}", f"{p.means[0] - p.means[1]:+.3g}",
                      f"{p.z_mean:+.2f}", f"{p.sds[0]:.4g}", f"{p.sds[1]:.4g}", f"{p.z_sd:+.2f}",
                      p.verdict if p.verdict == "agree" else f"[bold red]{p.verdict}")
    console = Console(width=140)
    console.print(table)
    console.print(f"z = difference / sqrt(MCSE_{a}^2 + MCSE_{b}^2); |z| above {result.critical_z:.2f} differs "
                  f"(Bonferroni over {2 * len(result.parameters)} comparisons, family-wise false-alarm rate "
                  f"{result.family_alpha:g}).")
    console.print(f"verdict: [bold]{'agree' if result.ok else 'differ: ' + ', '.join(result.differing)}")
    if options.json:
        document = {
            "model": options.model, "backends": list(result.backends), "ok": result.ok,
            "critical_z": result.critical_z, "family_alpha": result.family_alpha, "differing": result.differing,
            "settings": {"draws": options.draws, "tune": options.tune, "chains": options.chains, "seed": options.seed},
            "parameters": [{"name": p.name, "means": list(p.means), "difference": p.means[0] - p.means[1],
                            "sds": list(p.sds), "z_mean": p.z_mean, "z_sd": p.z_sd, "verdict": p.verdict}
                           for p in result.parameters],
        }
        Path(options.json).parent.mkdir(parents=True, exist_ok=True)
        jsonio.write(options.json, document, indent=2)
    return EXIT_OK if result.ok else EXIT_FAIL


def _add_many_options(command: argparse.ArgumentParser, draws: int, tune: int, chains: int) -> None:
    command.add_argument("--out", required=True, help="output folder (a rerun into it skips finished fits)")
    command.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786 (default: a local "
                                             "cluster on this machine)")
    command.add_argument("--workers", type=int, help="worker processes of the local cluster (default: one per core)")
    command.add_argument("--backend", choices=["numpyro", "pymc"], default=None,
                         help="backend for a shared-API model (default numpyro; native models use their own)")
    command.add_argument("--draws", type=int, default=draws)
    command.add_argument("--tune", type=int, default=tune)
    command.add_argument("--chains", type=int, default=chains)
    command.add_argument("--target-accept", type=float, default=0.8)
    command.add_argument("--seed", type=int, default=0, help="run seed (fit i's seed derives from it and i)")
    command.add_argument("--time-budget", type=float, default=None, help="seconds per fit")
    command.add_argument("--max-attempts", type=int, default=None, help="attempts per fit")
    command.add_argument("--fit-timeout", type=float, default=None,
                         help="seconds after which a running fit's worker is restarted and the fit recorded lost "
                              "(default: max(600, 3 x --time-budget), or an hour without a budget)")
    command.add_argument("--keep-draws", action=argparse.BooleanOptionalAction, default=True,
                         help="write each fit's draws to OUT/fits/ (default) or only its summary row")
    command.add_argument("--warm-start", action="store_true",
                         help="each fit after the first on a worker starts from the last accepted fit's adaptation "
                              "there (a short, checked window instead of --tune); a fit's draws then depend on the "
                              "fits before it on its worker")
    command.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resilient", description="Preflight, sample and report Bayesian models on NumPyro and PyMC.",
        epilog=EPILOG_MAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="resilient 0.1.0")
    commands = parser.add_subparsers(dest="command", required=True,
                                     metavar="{preflight,sample,report,sample-many,sbc,check-agreement}")

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
               "  resilient sample model.py --data data.json --backend pymc --draws 2000 --time-budget 60 --strict\n"
               "  resilient sample model.py --data data.json --resume run-checkpoint   (after a kill)\n\n"
               "exit codes: 0 verdict ok, 1 verdict fail or sampling failed, 3 verdict warn with --strict")
    run.add_argument("model", help="MODEL.py or MODEL.py:NAME")
    run.add_argument("--data", help="JSON file of the model function's keyword arguments")
    run.add_argument("--backend", choices=["numpyro", "pymc"], default="numpyro")
    run.add_argument("--draws", type=int, default=None, help="draws per chain (default 1000; with --resume: the run's)")
    run.add_argument("--tune", type=int, default=1000)
    run.add_argument("--chains", type=int, default=4)
    run.add_argument("--target-accept", type=float, default=0.8)
    run.add_argument("--seed", type=int, default=None, help="random seed")
    run.add_argument("--time-budget", type=float, default=None, help="seconds for the whole call")
    run.add_argument("--max-attempts", type=int, default=None)
    run.add_argument("--out", default="run.nc", help="netCDF file for the DataTree (default run.nc)")
    run.add_argument("--checkpoint", help="folder for draws as they finish (default: beside --out)")
    run.add_argument("--resume", metavar="DIR", help="continue the run checkpointed in DIR (its settings are kept)")
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

    many = commands.add_parser(
        "sample-many", help="one resilient fit per data set, on a local or a Dask cluster",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fit the model to each data set of a JSON Lines file (one object of keyword arguments per "
                    "line; an \"_id\" key names the fit) on dask.distributed. Each fit's draws go to OUT/fits/, "
                    "one row per fit to OUT/summary.csv as it finishes; run again into OUT to skip finished fits.",
        epilog="examples:\n  resilient sample-many model.py:per_site --datasets sites.jsonl --out sites/\n"
               "  resilient sample-many model.py --datasets d.jsonl --out fits/ --scheduler tcp://10.0.0.5:8786 "
               "--time-budget 120\n\n"
               "exit codes: 0 every fit ok, 1 some fit failed or was lost (listed), 2 usage error")
    many.add_argument("model", help="MODEL.py or MODEL.py:NAME (workers load it from this path)")
    many.add_argument("--datasets", required=True, help="JSON Lines file: one object of keyword arguments per line")
    _add_many_options(many, draws=1000, tune=1000, chains=4)
    many.set_defaults(handler=command_sample_many)

    calibrate = commands.add_parser(
        "sbc", help="simulation-based calibration of a model and its sampler",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Draw parameters and data from the prior, fit each simulated data set, and test that the "
                    "ranks of the true values are uniform (ECDF inside a simultaneous band). Writes "
                    "OUT/sbc.html, sbc.json, ranks.csv, summary.csv and the fits.",
        epilog="examples:\n  resilient sbc examples/sbc_models.py:normal --simulations 200 --out sbc/\n"
               "  resilient sbc model.py:fn --data covariates.json --simulations 500 --out sbc/ "
               "--scheduler tcp://10.0.0.5:8786\n"
               "  resilient sbc examples/sbc_models.py:normal_narrow --simulator examples/sbc_models.py:normal "
               "--simulations 100 --out miscalibrated/\n\n"
               "exit codes: 0 calibrated, 1 a parameter fails its band, 2 usage error, 3 with --strict: fits were "
               "dropped")
    calibrate.add_argument("model", help="MODEL.py or MODEL.py:NAME; observed arguments must default to None")
    calibrate.add_argument("--simulations", type=int, default=100)
    calibrate.add_argument("--data", help="JSON file of the arguments that are not simulated (covariates, sizes)")
    calibrate.add_argument("--simulator", help="MODEL.py:NAME that simulates the data (default: the model)")
    calibrate.add_argument("--observed", nargs="+", help="the simulated sites handed to the fit as data "
                                                         "(default: the arguments left out of --data)")
    calibrate.add_argument("--var-names", nargs="+", help="parameters to check (default: all)")
    calibrate.add_argument("--rank-draws", type=int, default=99, help="thinned draws each rank is taken among")
    calibrate.add_argument("--prob", type=float, default=0.99, help="simultaneous band level (default 0.99)")
    calibrate.add_argument("--strict", action="store_true", help="exit 3 when fits were dropped")
    _add_many_options(calibrate, draws=500, tune=500, chains=2)
    calibrate.set_defaults(handler=command_sbc)

    agree = commands.add_parser(
        "check-agreement", help="run a shared-API model on NumPyro and PyMC and compare the posteriors",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Sample one shared-API model on both backends and compare each scalar parameter's mean and "
                    "sd, each difference measured in the two runs' combined Monte Carlo standard errors; the "
                    "critical |z| holds the family-wise false-alarm rate at --alpha (Bonferroni).",
        epilog="examples:\n  resilient check-agreement examples/garch.py:garch\n"
               "  resilient check-agreement model.py:fn --data data.json --draws 2000 --json agreement.json\n\n"
               "exit codes: 0 every parameter agrees, 1 some parameter differs (or a run failed), 2 usage or "
               "model error")
    agree.add_argument("model", help="MODEL.py or MODEL.py:NAME (a shared-API function)")
    agree.add_argument("--data", help="JSON file of the model function's keyword arguments")
    agree.add_argument("--draws", type=int, default=2000)
    agree.add_argument("--tune", type=int, default=1000)
    agree.add_argument("--chains", type=int, default=4)
    agree.add_argument("--target-accept", type=float, default=0.8)
    agree.add_argument("--seed", type=int, default=0, help="random seed (both backends)")
    agree.add_argument("--alpha", type=float, default=0.01,
                       help="family-wise false-alarm rate of the comparison (default 0.01)")
    agree.add_argument("--time-budget", type=float, default=None, help="seconds per backend")
    agree.add_argument("--max-attempts", type=int, default=None)
    agree.add_argument("--json", help="write the comparison to this JSON file")
    agree.add_argument("--quiet", action="store_true", help="no progress bar")
    agree.set_defaults(handler=command_check_agreement)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    options = parser.parse_args(argv)
    try:
        return options.handler(options)
    except (UsageError, ModelFileError) as error:
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
