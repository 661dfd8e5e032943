"""The run report: one dict (report.json), rendered as Markdown and as a self-contained HTML page.

:func:`report_dict` gathers the run record, the diagnostics (:func:`resilient.diagnostics.diagnose`),
ArviZ's summary table, the preflight findings and the attempt log (both read from the DataTree's
attributes by :mod:`resilient.record`) under stable keys, described by the JSON Schema
:data:`REPORT_SCHEMA` (check a report with any standard validator, e.g. ``jsonschema``).
:func:`render_markdown` and :func:`render_html` render it; the HTML page is the Jinja2 template
``templates/report.html.j2`` (autoescaped) with ``templates/report.css`` inlined, and embeds its
plots (arviz-plots on matplotlib's Agg backend, plain matplotlib where an arviz-plots function
fails) as base64 PNG, so it loads nothing from outside. :func:`write_report` writes any of the
three files.

Numbers that are NaN or infinite become ``null`` in the diagnostics and summary, and the
strings ``"nan"``, ``"inf"``, ``"-inf"`` inside preflight findings and attempts (where a NaN
gradient is the finding), so report.json is strict JSON.

Depends on numpy and the standard library at import time; Jinja2 is imported when a page is
rendered, ArviZ and matplotlib inside the functions that draw.
"""

from __future__ import annotations

import base64
import datetime as _datetime
import functools
import io
import json
import math
import pathlib
import time
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import numpy as np

from resilient import record
from resilient.diagnostics import VERDICTS, CheckVerdict, Diagnostics, diagnose
from resilient.states import SEVERITIES
from resilient.states import VERDICTS as RUN_VERDICTS

__all__ = [
    "REPORT_SCHEMA", "REPORT_SCHEMA_VERSION", "FORMATS", "report_dict", "render_markdown", "render_html",
    "write_report",
]

#: bumped when a key is removed or changes meaning; adding keys keeps the version.
REPORT_SCHEMA_VERSION = "1.0"

#: the files write_report can produce, by format name.
FORMATS = {"html": "report.html", "md": "report.md", "json": "report.json"}

#: scalar quantities drawn in trace/rank plots at most; the rest are noted, and are in the table.
MAX_PLOT_VARIABLES = 8

#: summary rows shown in the Markdown and HTML tables at most (report.json has them all).
MAX_TABLE_ROWS = 200

_NUMBER = ["number", "null"]
_STRING = ["string", "null"]

_CHECK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "verdict", "value", "threshold", "fail_threshold", "rule", "variables",
                 "explanation", "action", "details"],
    "properties": {
        "name": {"type": "string", "description": "finite_draws, rhat, ess_bulk, ess_tail, mcse, bfmi, "
                                                  "divergences or tree_depth"},
        "verdict": {"enum": list(VERDICTS)},
        "value": {"type": _NUMBER, "description": "the worst value seen (max R-hat, min ESS, count ...)"},
        "threshold": {"type": _NUMBER, "description": "the published limit; crossing it warns"},
        "fail_threshold": {"type": _NUMBER, "description": "crossing it fails; null: the check only warns"},
        "rule": {"type": "string"},
        "variables": {"type": "array", "items": {"type": "string"}},
        "explanation": {"type": "string"},
        "action": {"type": "string"},
        "details": {"type": "object"},
    },
}

_SUMMARY_ROW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["variable", "mean", "sd", "ci_lower", "ci_upper", "ess_bulk", "ess_tail", "r_hat",
                 "mcse_mean", "mcse_sd"],
    "properties": {
        "variable": {"type": "string", "description": "scalar quantity, labelled as ArviZ does: theta[0]"},
        **{key: {"type": _NUMBER} for key in ("mean", "sd", "ci_lower", "ci_upper", "ess_bulk", "ess_tail",
                                              "r_hat", "mcse_mean", "mcse_sd")},
    },
}

_FINDING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["severity", "message"],
    "properties": {
        "severity": {"enum": list(SEVERITIES)},
        "check": {"type": _STRING},
        "site": {"type": _STRING},
        "parameter": {"type": _STRING},
        "values": {"type": "object"},
        "cause": {"type": _STRING},
        "fix": {"type": _STRING},
        "fix_applied": {"type": "boolean"},
        "message": {"type": "string"},
    },
}

_ATTEMPT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["attempt", "backend", "outcome"],
    "properties": {
        "attempt": {"type": "integer"},
        "backend": {"type": "string"},
        "settings": {"type": "object"},
        "remedy": {"type": _STRING},
        "failure": {"type": _STRING},
        "message": {"type": _STRING},
        "outcome": {"type": "string", "description": "accepted, retry, gave-up, budget, interrupted or error"},
        "seconds": {"type": _NUMBER},
        "compile_seconds": {"type": _NUMBER},
        "warmup_seconds": {"type": _NUMBER},
        "sampling_seconds": {"type": _NUMBER},
        "draws": {"type": ["integer", "null"]},
        "divergences": {"type": ["integer", "null"]},
        "rhat": {"type": ["number", "null"], "description": "the attempt's worst R-hat"},
        "ess_bulk": {"type": ["number", "null"], "description": "the attempt's smallest bulk ESS"},
    },
}

#: report.json, as a JSON Schema (draft 2020-12; it uses type, enum, required, properties, items).
#: Beyond the schema, its numbers are finite: write_report writes strict JSON (``allow_nan=False``).
REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Resilient run report",
    "type": "object",
    "required": ["schema_version", "generated_at", "resilient_version", "verdict", "run", "diagnostics",
                 "summary", "preflight", "attempts"],
    "properties": {
        "schema_version": {"type": "string", "description": "REPORT_SCHEMA_VERSION"},
        "generated_at": {"type": "string", "description": "ISO 8601 time (UTC) the report was made"},
        "resilient_version": {"type": "string"},
        "verdict": {"enum": list(RUN_VERDICTS), "description": "the worst check's verdict"},
        "run": {
            "type": "object",
            "required": ["backend", "model", "status", "message", "time_budget", "seconds", "chains", "draws",
                         "variables", "groups", "record"],
            "properties": {
                "backend": {"type": _STRING},
                "model": {"type": _STRING},
                "status": {"type": _STRING},
                "message": {"type": _STRING},
                "time_budget": {"type": _NUMBER},
                "seconds": {"type": _NUMBER, "description": "wall time of the whole call"},
                "chains": {"type": "integer"},
                "draws": {"type": "integer", "description": "per chain"},
                "variables": {"type": "array", "items": {"type": "string"}},
                "groups": {"type": "array", "items": {"type": "string"}},
                "record": {"type": ["object", "null"], "description": "the run record as stored, if any"},
            },
        },
        "diagnostics": {
            "type": "object",
            "required": ["verdict", "thresholds", "checks", "notes"],
            "properties": {
                "verdict": {"enum": list(RUN_VERDICTS)},
                "thresholds": {"type": "object"},
                "checks": {"type": "array", "items": _CHECK_SCHEMA},
                "notes": {"type": "array", "items": {"type": "string"}},
            },
        },
        "summary": {
            "type": "object",
            "required": ["ci_kind", "ci_prob", "rows"],
            "properties": {
                "ci_kind": {"enum": ["eti", "hdi"]},
                "ci_prob": {"type": "number"},
                "rows": {"type": "array", "items": _SUMMARY_ROW_SCHEMA},
            },
        },
        "preflight": {
            "type": ["object", "null"],
            "required": ["status", "findings"],
            "properties": {
                "model": {"type": _STRING},
                "backend": {"type": _STRING},
                "status": {"type": "string"},
                "seconds": {"type": _NUMBER},
                "findings": {"type": "array", "items": _FINDING_SCHEMA},
            },
        },
        "attempts": {"type": "array", "items": _ATTEMPT_SCHEMA},
    },
}


# ----------------------------------------------------------------------------------------------
# the dict


def report_dict(data: Any, *, diagnostics: Diagnostics | None = None, **thresholds: Any) -> dict[str, Any]:
    """Everything known about a run under the stable keys of :data:`REPORT_SCHEMA`.

    ``data`` is a DataTree (from :func:`resilient.sample`, or PyMC/NumPyro with less detail);
    ``thresholds`` go to :func:`~resilient.diagnostics.diagnose` unless ``diagnostics`` is given.
    """
    from resilient import __version__

    diagnostics = _diagnostics(data, diagnostics, thresholds)
    stored_run = record.read_run(data)
    stored_run = stored_run if isinstance(stored_run, dict) else None
    run = stored_run or {}
    posterior = data["posterior"] if "posterior" in getattr(data, "children", {}) else None
    diagnostics_dict = diagnostics.to_dict()
    report = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "generated_at": _datetime.datetime.now(_datetime.timezone.utc).isoformat(timespec="seconds"),
        "resilient_version": __version__,
        "verdict": diagnostics.verdict,
        "run": {
            "backend": _optional_str(run.get("backend")),
            "model": _optional_str(run.get("model")),
            "status": _optional_str(run.get("status")),
            "message": _optional_str(run.get("message")),
            "time_budget": _finite_or_none(run.get("time_budget")),
            "seconds": _finite_or_none(run.get("seconds")),
            "chains": diagnostics.chains,
            "draws": diagnostics.draws,
            "variables": [str(v) for v in posterior.data_vars] if posterior is not None else [],
            "groups": [str(g) for g in getattr(data, "children", {})],
            "record": _strict(stored_run) if stored_run is not None else None,
        },
        "diagnostics": {k: diagnostics_dict[k] for k in ("verdict", "thresholds", "checks", "notes")},
        "summary": {"ci_kind": diagnostics.ci_kind, "ci_prob": diagnostics.ci_prob,
                    "rows": diagnostics_dict["summary"]},
        "preflight": _strict(record.read_preflight(data)),
        "attempts": _strict(record.read_attempts(data)),
    }
    if report["run"]["backend"] is None and report["attempts"]:
        report["run"]["backend"] = _optional_str(report["attempts"][-1].get("backend"))
    if report["run"]["model"] is None and isinstance(report["preflight"], dict):
        report["run"]["model"] = _optional_str(report["preflight"].get("model"))
    return report


def _diagnostics(data: Any, diagnostics: Diagnostics | None, thresholds: Mapping[str, Any]) -> Diagnostics:
    if diagnostics is None:
        return diagnose(data, **thresholds)
    if thresholds:
        raise ValueError(f"Pass either `diagnostics` or thresholds, not both; got both and {sorted(thresholds)}.")
    return diagnostics


# ----------------------------------------------------------------------------------------------
# Markdown


def render_markdown(data: Any, **thresholds: Any) -> str:
    """The report as GitHub-flavoured Markdown; ``data`` is a DataTree or a :func:`report_dict`."""
    report = data if isinstance(data, dict) else report_dict(data, **thresholds)
    run, diagnostics = report["run"], report["diagnostics"]
    lines = [f"# Resilient report: {_md(run.get('model') or 'model')}", ""]
    counts = _verdict_counts(diagnostics["checks"])
    lines.append(f"**Verdict: {report['verdict'].upper()}** ({counts}). "
                 f"{run['chains']} chains x {run['draws']} draws"
                 + (f" on {_md(run['backend'])}" if run.get("backend") else "")
                 + (f"; run status: {_md(run['status'])}" if run.get("status") else "") + ".")
    if run.get("message"):
        lines += ["", f"> {_md(run['message'])}"]
    for note in diagnostics["notes"]:
        lines += ["", f"> **Note:** {_md(note)}"]

    lines += ["", "## Checks", "", "| check | verdict | value | rule | explanation | suggested action |",
              "|---|---|---:|---|---|---|"]
    for check in diagnostics["checks"]:
        value = _fmt(check["value"], _VALUE_KIND.get(check["name"]))
        action = _md(check["action"]) if check["verdict"] in ("warn", "fail") else ""
        lines.append(f"| {check['name']} | **{check['verdict']}** | {value} | {_md(check['rule'])} "
                     f"| {_md(check['explanation'])} | {action} |")

    summary = report["summary"]
    ci = f"{summary['ci_kind']} {_percent(summary['ci_prob'])}"
    lines += ["", "## Summary", "",
              f"| variable | mean | sd | {ci} lower | {ci} upper | ess_bulk | ess_tail | r_hat | mcse_mean |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rows = summary["rows"]
    for row in rows[:MAX_TABLE_ROWS]:
        lines.append(f"| {_md(row['variable'])} | {_fmt(row['mean'])} | {_fmt(row['sd'])} | {_fmt(row['ci_lower'])} "
                     f"| {_fmt(row['ci_upper'])} | {_fmt(row['ess_bulk'], 'ess')} | {_fmt(row['ess_tail'], 'ess')} "
                     f"| {_fmt(row['r_hat'], 'rhat')} | {_fmt(row['mcse_mean'])} |")
    if not rows:
        lines.append("| (no draws) | | | | | | | | |")
    if len(rows) > MAX_TABLE_ROWS:
        lines += ["", f"{len(rows) - MAX_TABLE_ROWS} more rows in report.json."]

    lines += ["", "## Preflight", ""]
    preflight = report["preflight"]
    if not preflight:
        lines.append("No preflight record (the data were not produced by resilient.sample).")
    else:
        lines.append(f"Status: **{_md(preflight.get('status', '?'))}**"
                     + (f" ({_fmt(preflight.get('seconds'))} s)" if preflight.get("seconds") is not None else "") + ".")
        findings = preflight.get("findings") or []
        if findings:
            lines += ["", "| severity | site | parameter | finding | fix |", "|---|---|---|---|---|"]
            for f in findings:
                lines.append(f"| {_md(f.get('severity'))} | {_md(f.get('site'))} | {_md(f.get('parameter'))} "
                             f"| {_md(f.get('message'))} | {_md(_fix_text(f))} |")
        else:
            lines += ["", "No findings."]

    lines += ["", "## Attempts", ""]
    attempts = report["attempts"]
    if not attempts:
        lines.append("No attempt log (the data were not produced by resilient.sample).")
    else:
        lines += ["| # | backend | remedy | outcome | seconds | draws | divergences | failure |",
                  "|---:|---|---|---|---:|---:|---:|---|"]
        for a in attempts:
            lines.append(f"| {_md(a.get('attempt'))} | {_md(a.get('backend'))} | {_md(a.get('remedy'))} "
                         f"| {_md(a.get('outcome'))} | {_fmt(a.get('seconds'), 'seconds')} | {_md(a.get('draws'))} "
                         f"| {_md(a.get('divergences'))} | {_md(a.get('failure') or a.get('message'))} |")
    lines += ["", f"_Resilient {report['resilient_version']}, report schema {report['schema_version']}, "
                  f"generated {report['generated_at']}._", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# HTML


def render_html(data: Any, *, plots: bool = True, max_plot_variables: int = MAX_PLOT_VARIABLES,
                diagnostics: Diagnostics | None = None, **thresholds: Any) -> str:
    """The report as one self-contained HTML page (plots embedded as base64 PNG).

    ``data`` is a DataTree; a :func:`report_dict` alone renders without plots. Pass
    ``diagnostics`` already computed, or thresholds for :func:`~resilient.diagnostics.diagnose`.
    """
    if isinstance(data, dict):
        return _html(data, [], ["Plots need the DataTree; this page was rendered from a report dict."])
    diagnostics = _diagnostics(data, diagnostics, thresholds)
    report = report_dict(data, diagnostics=diagnostics)
    figures, plot_notes = _figures(data, diagnostics, report, max_plot_variables) if plots else ([], [])
    return _html(report, figures, plot_notes)


def write_report(data: Any, out_dir: str | pathlib.Path, formats: tuple[str, ...] | list[str] = ("html", "md", "json"),
                 *, plots: bool = True, max_plot_variables: int = MAX_PLOT_VARIABLES,
                 diagnostics: Diagnostics | None = None, **thresholds: Any) -> dict[str, pathlib.Path]:
    """Write report.html / report.md / report.json into ``out_dir`` (made if missing).

    Parameters
    ----------
    data : DataTree
        A result of :func:`resilient.sample` (its attempt log and preflight findings are read from
        it), or any DataTree with a ``posterior`` group.
    out_dir : str or pathlib.Path
        The folder to write into.
    formats : sequence of {"html", "md", "json"}
        Which files to write.
    plots : bool
        Embed the plots (trace, energy, pair plots with divergences) in the HTML page.
    max_plot_variables : int
        Plot at most this many quantities, the least converged first.
    diagnostics : Diagnostics, optional
        Computed once for every format by :func:`resilient.diagnose` when not given.
    **thresholds
        Passed to :func:`resilient.diagnose`.

    Returns
    -------
    dict of str to pathlib.Path
        The paths written, by format.
    """
    formats = (formats,) if isinstance(formats, str) else tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"`formats` must be a non-empty subset of {tuple(FORMATS)}, got {formats!r}.")
    folder = pathlib.Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    diagnostics = _diagnostics(data, diagnostics, thresholds)
    report = report_dict(data, diagnostics=diagnostics)
    written: dict[str, pathlib.Path] = {}
    for fmt in formats:
        path = folder / FORMATS[fmt]
        if fmt == "json":
            text = json.dumps(report, indent=2, allow_nan=False) + "\n"
        elif fmt == "md":
            text = render_markdown(report)
        else:
            figures, notes = _figures(data, diagnostics, report, max_plot_variables) if plots else ([], [])
            text = _html(report, figures, notes)
        path.write_text(text, encoding="utf-8")
        written[fmt] = path
    return written


#: the summary table's columns after `variable`, with the format kind of each.
_SUMMARY_COLUMNS = (("mean", None), ("sd", None), ("ci_lower", None), ("ci_upper", None), ("ess_bulk", "ess"),
                    ("ess_tail", "ess"), ("r_hat", "rhat"), ("mcse_mean", None), ("mcse_sd", None))


def _html(report: Mapping[str, Any], figures: list[dict[str, str]], plot_notes: list[str]) -> str:
    return _template().render(
        report=report, figures=figures, plot_notes=plot_notes, value_kind=_VALUE_KIND,
        summary_columns=_SUMMARY_COLUMNS, max_table_rows=MAX_TABLE_ROWS,
    )


@functools.cache
def _template() -> Any:
    """report.html.j2 from the package's templates/, autoescaped; None renders as ""."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("resilient", "templates"),
        autoescape=select_autoescape(("html", "html.j2"), default=True),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        finalize=lambda value: "" if value is None else value,
    )
    env.filters.update(fmt=_fmt, flag=_flag, percent=_percent, verdict_counts=_verdict_counts, badge=_badge,
                       phases=_phases, fix_text=_fix_text, settings_text=_settings_text)
    return env.get_template("report.html.j2")


_VALUE_KIND = {"rhat": "rhat", "ess_bulk": "ess", "ess_tail": "ess", "bfmi": "rhat", "mcse": "rhat"}

_SETTINGS_SHOWN = ("draws", "tune", "chains", "target_accept", "max_tree_depth", "random_seed", "init")


# ----------------------------------------------------------------------------------------------
# plots


@contextmanager
def _agg_backend() -> Iterator[Any]:
    """matplotlib's Agg backend for the duration (nothing is displayed), then the caller's back."""
    import matplotlib
    import matplotlib.pyplot as plt

    try:
        previous = matplotlib.get_backend(auto_select=False)
    except TypeError:  # matplotlib < 3.10
        previous = matplotlib.rcParams._get("backend")  # noqa: SLF001 - read without resolving
    switched = str(previous).lower() != "agg"
    if switched:
        plt.switch_backend("agg")
    try:
        yield plt
    finally:
        if switched:
            if previous is None:
                from matplotlib import rcsetup

                sentinel = getattr(rcsetup, "_auto_backend_sentinel", None)
                if sentinel is not None:
                    plt.switch_backend(sentinel)  # resolve again later, as before
            else:
                plt.switch_backend(previous)


def _figures(data: Any, diagnostics: Diagnostics, report: Mapping[str, Any],
             max_plot_variables: int) -> tuple[list[dict[str, str]], list[str]]:
    """The report's plots as base64 PNG, each from arviz-plots or, if that fails, plain matplotlib."""
    if int(max_plot_variables) < 1:
        raise ValueError(f"`max_plot_variables` must be a positive integer, got {max_plot_variables!r}.")
    figures: list[dict[str, str]] = []
    notes: list[str] = []
    with _agg_backend() as plt, _quiet():
        if report["attempts"]:
            figures += _try(notes, "attempt timeline", None, lambda: _timeline_figure(plt, report["attempts"]),
                            "plot-timeline", "Attempt durations, coloured by outcome.", "Attempt timeline")
        if diagnostics.draws < 2 or "posterior" not in data.children:
            notes.append("Too few draws to plot.")
            return figures, notes
        labels, skipped = _plot_labels(diagnostics, int(max_plot_variables))
        total = len(diagnostics.summary.index)
        if skipped:
            notes.append(f"Not plotted (NaN, infinite or constant draws): {', '.join(skipped[:10])}"
                         + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "") + ".")
        if not labels:
            notes.append("No quantity can be plotted.")
            return figures, notes
        if len(labels) < total - len(skipped):
            notes.append(f"The plots show {len(labels)} of {total - len(skipped)} scalar quantities, the least "
                         "converged (highest R-hat, else lowest bulk ESS); the summary table has them all.")
        order = {label: i for i, label in enumerate(str(v) for v in diagnostics.summary.index)}
        tree = _plot_tree(data, sorted(labels, key=order.__getitem__))
        n = len(labels)
        figures += _try(
            notes, "trace", lambda: _arviz_trace(plt, tree, n), lambda: _plain_trace(plt, tree),
            "plot-trace", "Per-chain density and trace of each plotted quantity; ticks along the bottom mark divergent "
            "transitions.",
            "Trace plots")
        if diagnostics.check("rhat").verdict in ("warn", "fail"):
            figures += _try(
                notes, "rank", lambda: _arviz_rank(tree, n), lambda: _plain_rank(plt, tree),
                "plot-rank", "Rank plots (fractional rank ECDF difference per chain; drawn because R-hat is high): "
                "chains that mix well stay near zero; highlighted points fail the multi-chain uniformity test.",
                "Rank plots")
        stats = data["sample_stats"] if "sample_stats" in data.children else None
        if stats is not None and "energy" in stats.data_vars:
            energy_tree = _energy_tree(stats)
            figures += _try(
                notes, "energy", lambda: _arviz_energy(energy_tree, diagnostics),
                lambda: _plain_energy(plt, energy_tree),
                "plot-energy", "Energy: marginal energy vs. energy transitions, with E-BFMI per chain; the two "
                "distributions should match.", "Energy plot")
        else:
            notes.append("No energy plot: sample_stats has no `energy`.")
        if len(labels) >= 2:
            x_label, y_label = labels[0], labels[1]
            figures += _try(
                notes, "pair", lambda: _arviz_pair(tree, x_label, y_label),
                lambda: _plain_pair(plt, tree, x_label, y_label),
                "plot-pair", f"{y_label} against {x_label} (the two least converged quantities); red points are "
                "divergent transitions.", "Pair plot")
        else:
            notes.append("No pair plot: only one quantity can be plotted.")
    return figures, notes


def _try(notes: list[str], name: str, arviz_plot: Any, fallback: Any, figure_id: str, caption: str,
         alt: str) -> list[dict[str, str]]:
    """Draw with arviz-plots; on any error, note it and draw with plain matplotlib instead."""
    import matplotlib.pyplot as plt

    started = time.perf_counter()
    before = set(plt.get_fignums())
    fig = None
    try:
        if arviz_plot is not None:
            try:
                fig = arviz_plot()
            except Exception as error:  # noqa: BLE001 - a plot must never sink the report
                notes.append(f"The {name} plot was drawn with plain matplotlib: arviz-plots raised "
                             f"{type(error).__name__}: {str(error)[:200]}")
                for number in set(plt.get_fignums()) - before:
                    plt.close(number)
                fig = None
        if fig is None:
            fig = fallback()
        png = _png(fig)
    except Exception as error:  # noqa: BLE001
        notes.append(f"The {name} plot could not be drawn: {type(error).__name__}: {str(error)[:200]}")
        return []
    finally:
        for number in set(plt.get_fignums()) - before:
            plt.close(number)
    seconds = time.perf_counter() - started
    return [{"id": figure_id, "png": png, "caption": caption, "alt": alt, "seconds": f"{seconds:.2f}"}]


_DPI = 72


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _plot_labels(diagnostics: Diagnostics, limit: int) -> tuple[list[str], list[str]]:
    """Plottable quantities, least converged first (highest R-hat if any is too high, else lowest ESS)."""
    rows = diagnostics.summary_rows()
    finite = diagnostics.check("finite_draws").variables
    rhat_check = diagnostics.check("rhat")
    constant = tuple(rhat_check.details.get("constant", ())) if isinstance(rhat_check.details, Mapping) else ()
    skipped = [r["variable"] for r in rows if r["variable"] in finite or r["variable"] in constant
               or (r["sd"] is not None and r["sd"] == 0)]
    usable = [r for r in rows if r["variable"] not in skipped]
    rhat_max = diagnostics.thresholds.get("rhat_max", 1.01)
    any_high = any(r["r_hat"] is not None and r["r_hat"] > rhat_max for r in usable)

    def badness(row: Mapping[str, Any]) -> tuple[float, float]:
        rhat = row["r_hat"] if row["r_hat"] is not None else 0.0
        ess = row["ess_bulk"] if row["ess_bulk"] is not None else math.inf
        return (-rhat, ess) if any_high else (ess, -rhat)

    ordered = sorted(usable, key=badness)
    return [r["variable"] for r in ordered[:limit]], skipped


def _plot_tree(data: Any, labels: list[str]) -> Any:
    """A small DataTree of the chosen scalar quantities (one variable each) plus `diverging`."""
    import xarray as xr
    from arviz_base import dataset_to_dataarray

    posterior = data["posterior"].to_dataset()
    stacked = dataset_to_dataarray(posterior, sample_dims=["chain", "draw"]).transpose("label", "chain", "draw")
    index = {str(label): i for i, label in enumerate(stacked["label"].values.tolist())}
    values = np.asarray(stacked.values, dtype=float)
    coords = {"chain": np.arange(values.shape[1]), "draw": np.arange(values.shape[2])}
    plotted = xr.Dataset({label: (("chain", "draw"), values[index[label]]) for label in labels}, coords=coords)
    groups = {"posterior": plotted}
    if "sample_stats" in data.children and "diverging" in data["sample_stats"].data_vars:
        diverging = np.asarray(data["sample_stats"]["diverging"].values).astype(bool)
        if diverging.shape == values.shape[1:]:
            groups["sample_stats"] = xr.Dataset({"diverging": (("chain", "draw"), diverging)}, coords=coords)
    return xr.DataTree.from_dict(groups)


def _energy_tree(stats: Any) -> Any:
    import xarray as xr

    energy = np.asarray(stats["energy"].values, dtype=float)
    energy = energy.reshape(energy.shape[0], -1) if energy.ndim >= 1 else energy.reshape(1, 1)
    coords = {"chain": np.arange(energy.shape[0]), "draw": np.arange(energy.shape[1])}
    return xr.DataTree.from_dict({"sample_stats": xr.Dataset({"energy": (("chain", "draw"), energy)}, coords=coords)})


def _arviz_trace(plt: Any, tree: Any, n: int) -> Any:
    from arviz_plots import plot_trace_dist

    pc = plot_trace_dist(tree, compact=False, backend="matplotlib",
                         figure_kwargs={"figsize": (11, 1.4 * n + 0.6), "layout": "constrained"})
    return pc.get_viz("figure")


def _arviz_rank(tree: Any, n: int) -> Any:
    from arviz_plots import plot_rank

    columns = min(n, 4)
    rows = math.ceil(n / columns)
    pc = plot_rank(tree, backend="matplotlib", col_wrap=columns,
                   figure_kwargs={"figsize": (2.9 * columns, 2.3 * rows + 0.4), "layout": "constrained"})
    return pc.get_viz("figure")


def _arviz_energy(tree: Any, diagnostics: Diagnostics) -> Any:
    from arviz_plots import plot_energy

    pc = plot_energy(tree, backend="matplotlib", threshold=diagnostics.thresholds.get("bfmi_min", 0.3),
                     figure_kwargs={"figsize": (11, 3.2), "layout": "constrained"})
    return pc.get_viz("figure")


def _arviz_pair(tree: Any, x_label: str, y_label: str) -> Any:
    from arviz_plots import plot_pair_focus

    pc = plot_pair_focus(tree, y_label, var_names=[x_label], backend="matplotlib",
                         visuals={"divergence": {"color": "#cf222e", "alpha": 0.9}},
                         figure_kwargs={"figsize": (6, 4.5), "layout": "constrained"})
    fig = pc.get_viz("figure")
    for axis in fig.axes:
        axis.set_xlabel(x_label)
        axis.set_ylabel(y_label)
    return fig


def _plain_trace(plt: Any, tree: Any) -> Any:
    posterior = tree["posterior"]
    names = list(posterior.data_vars)
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 1.4 * len(names) + 0.6), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 2]}, layout="constrained")
    for row, name in enumerate(names):
        values = np.asarray(posterior[name].values)
        for chain in values:
            axes[row, 0].hist(chain, bins=30, histtype="step", density=True)
            axes[row, 1].plot(chain, linewidth=0.6)
        axes[row, 0].set_ylabel(name)
    axes[-1, 1].set_xlabel("draw")
    return fig


def _plain_rank(plt: Any, tree: Any) -> Any:
    posterior = tree["posterior"]
    names = list(posterior.data_vars)
    columns = min(len(names), 4)
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.9 * columns, 2.3 * rows + 0.4), squeeze=False,
                             layout="constrained")
    for axis, name in zip(axes.flat, names):
        values = np.asarray(posterior[name].values)
        ranks = np.argsort(np.argsort(values.ravel())).reshape(values.shape)
        for chain in ranks:
            axis.hist(chain, bins=20, range=(0, ranks.size), histtype="step")
        axis.set_title(name)
    for axis in list(axes.flat)[len(names):]:
        axis.set_visible(False)
    return fig


def _plain_energy(plt: Any, tree: Any) -> Any:
    energy = np.asarray(tree["sample_stats"]["energy"].values, dtype=float)
    fig, axis = plt.subplots(figsize=(11, 3.2), layout="constrained")
    centred = (energy - energy.mean(axis=1, keepdims=True)).ravel()
    axis.hist(centred, bins=40, alpha=0.5, density=True, label="marginal energy")
    axis.hist(np.diff(energy, axis=1).ravel(), bins=40, alpha=0.5, density=True, label="energy transition")
    axis.legend()
    return fig


def _plain_pair(plt: Any, tree: Any, x_label: str, y_label: str) -> Any:
    posterior = tree["posterior"]
    x = np.asarray(posterior[x_label].values).ravel()
    y = np.asarray(posterior[y_label].values).ravel()
    fig, axis = plt.subplots(figsize=(6, 4.5), layout="constrained")
    axis.scatter(x, y, s=6, alpha=0.4)
    if "sample_stats" in tree.children:
        diverging = np.asarray(tree["sample_stats"]["diverging"].values).ravel()
        axis.scatter(x[diverging], y[diverging], s=14, color="#cf222e", label="divergent")
        if diverging.any():
            axis.legend()
    axis.set_xlabel(x_label)
    axis.set_ylabel(y_label)
    return fig


_OUTCOME_COLOURS = {"accepted": "#1a7f37", "retry": "#bf8700", "gave-up": "#cf222e", "budget": "#8250df",
                    "interrupted": "#6e7781", "error": "#cf222e"}


def _timeline_figure(plt: Any, attempts: list[Mapping[str, Any]]) -> Any:
    fig, axis = plt.subplots(figsize=(9, 0.45 * len(attempts) + 1.2), layout="constrained")
    start = 0.0
    seen: dict[str, Any] = {}
    for row, attempt in enumerate(attempts):
        seconds = attempt.get("seconds")
        seconds = float(seconds) if isinstance(seconds, (int, float)) and math.isfinite(seconds) else 0.0
        outcome = str(attempt.get("outcome", "?"))
        colour = _OUTCOME_COLOURS.get(outcome, "#6e7781")
        bar = axis.barh(row, max(seconds, 1e-3), left=start, color=colour, height=0.6)
        seen.setdefault(outcome, bar)
        label = f"{seconds:.1f} s" + (f" · {attempt['remedy']}" if attempt.get("remedy") else "")
        axis.text(start + max(seconds, 1e-3), row, "  " + label, va="center", fontsize=8)
        start += seconds
    axis.set_yticks(range(len(attempts)),
                    [f"#{a.get('attempt', i + 1)} {a.get('backend', '')}" for i, a in enumerate(attempts)])
    axis.invert_yaxis()
    axis.set_xlabel("seconds since the first attempt started")
    axis.set_xlim(0, max(start, 1e-3) * 1.35)
    fig.legend(list(seen.values()), list(seen.keys()), loc="outside right upper", fontsize=8, frameon=False)
    for side in ("top", "right"):
        axis.spines[side].set_visible(False)
    return fig


# ----------------------------------------------------------------------------------------------
# small helpers


def _md(value: Any) -> str:
    if value is None:
        return ""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _fmt(value: Any, kind: str | None = None) -> str:
    if value is None or isinstance(value, str):
        return "—" if value is None else value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return "—"
    if kind == "ess":
        return f"{value:.0f}"
    if kind == "rhat":
        return f"{value:.3f}"
    if kind == "seconds":
        return f"{value:.1f}"
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.3g}"
    return f"{value:.4g}" if abs(value) >= 1 else f"{value:.3f}"


def _flag(key: str, value: Any, thresholds: Mapping[str, Any]) -> str:
    if value is None:
        return " bad" if key in ("r_hat", "ess_bulk", "ess_tail") else ""
    if key == "r_hat" and value > thresholds.get("rhat_max", math.inf):
        return " bad"
    if key in ("ess_bulk", "ess_tail") and value < thresholds.get("ess_min_total", 0):
        return " bad"
    return ""


def _percent(prob: Any) -> str:
    return f"{100 * float(prob):g}%"


def _verdict_counts(checks: list[Mapping[str, Any]]) -> str:
    failed = sum(c["verdict"] == "fail" for c in checks)
    warned = sum(c["verdict"] == "warn" for c in checks)
    passed = sum(c["verdict"] == "ok" for c in checks)
    skipped = sum(c["verdict"] == "n/a" for c in checks)
    text = f"{failed} failed, {warned} warnings, {passed} passed"
    return text + (f", {skipped} not applicable" if skipped else "")


def _badge(verdict: CheckVerdict) -> str:
    """The CSS class of a check's verdict badge ("n/a" is not a class name)."""
    return "na" if verdict == "n/a" else verdict


def _settings_text(settings: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (settings or {}).items() if k in _SETTINGS_SHOWN)


def _phases(attempt: Mapping[str, Any]) -> str:
    parts = []
    for key, name in (("compile_seconds", "compile"), ("warmup_seconds", "warm-up"), ("sampling_seconds", "sampling")):
        value = attempt.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
            parts.append(f"{name} {value:.1f} s")
    return ", ".join(parts)


def _fix_text(finding: Mapping[str, Any]) -> str:
    fix = finding.get("fix") or ""
    return f"applied: {fix}" if fix and finding.get("fix_applied") else fix


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _finite_or_none(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return None


def _strict(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become "nan"/"inf"/"-inf", tuples lists, keys strings."""
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


class _quiet:
    """numpy's RuntimeWarnings off while plotting (KDEs of near-constant chains divide by 0)."""

    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.filterwarnings("ignore", category=RuntimeWarning)

    def __exit__(self, *exc: Any) -> None:
        self._catch.__exit__(*exc)
