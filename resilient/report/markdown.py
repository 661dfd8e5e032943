"""The report as GitHub-flavoured Markdown (``report.md``).

Dependency rule: the standard library at import time.
"""

from __future__ import annotations

from typing import Any

from resilient.report.data import report_dict
from resilient.report.format import MAX_TABLE_ROWS, VALUE_KIND, fix_text, fmt, md, percent, verdict_counts

__all__ = ["render_markdown"]

def render_markdown(data: Any, **thresholds: Any) -> str:
    """The report as GitHub-flavoured Markdown; ``data`` is a DataTree or a :func:`report_dict`."""
    report = data if isinstance(data, dict) else report_dict(data, **thresholds)
    run, diagnostics = report["run"], report["diagnostics"]
    lines = [f"# Resilient report: {md(run.get('model') or 'model')}", ""]
    counts = verdict_counts(diagnostics["checks"])
    lines.append(f"**Verdict: {report['verdict'].upper()}** ({counts}). "
                 f"{run['chains']} chains x {run['draws']} draws"
                 + (f" on {md(run['backend'])}" if run.get("backend") else "")
                 + (f"; run status: {md(run['status'])}" if run.get("status") else "") + ".")
    if run.get("message"):
        lines += ["", f"> {md(run['message'])}"]
    for note in diagnostics["notes"]:
        lines += ["", f"> **Note:** {md(note)}"]

    lines += ["", "## Checks", "", "| check | verdict | value | rule | explanation | suggested action |",
              "|---|---|---:|---|---|---|"]
    for check in diagnostics["checks"]:
        value = fmt(check["value"], VALUE_KIND.get(check["name"]))
        action = md(check["action"]) if check["verdict"] in ("warn", "fail") else ""
        lines.append(f"| {check['name']} | **{check['verdict']}** | {value} | {md(check['rule'])} "
                     f"| {md(check['explanation'])} | {action} |")

    summary = report["summary"]
    ci = f"{summary['ci_kind']} {percent(summary['ci_prob'])}"
    lines += ["", "## Summary", "",
              f"| variable | mean | sd | {ci} lower | {ci} upper | ess_bulk | ess_tail | r_hat | mcse_mean |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rows = summary["rows"]
    for row in rows[:MAX_TABLE_ROWS]:
        lines.append(f"| {md(row['variable'])} | {fmt(row['mean'])} | {fmt(row['sd'])} | {fmt(row['ci_lower'])} "
                     f"| {fmt(row['ci_upper'])} | {fmt(row['ess_bulk'], 'ess')} | {fmt(row['ess_tail'], 'ess')} "
                     f"| {fmt(row['r_hat'], 'rhat')} | {fmt(row['mcse_mean'])} |")
    if not rows:
        lines.append("| (no draws) | | | | | | | | |")
    if len(rows) > MAX_TABLE_ROWS:
        lines += ["", f"{len(rows) - MAX_TABLE_ROWS} more rows in report.json."]

    lines += ["", "## Preflight", ""]
    preflight = report["preflight"]
    if not preflight:
        lines.append("No preflight record (the data were not produced by resilient.sample).")
    else:
        lines.append(f"Status: **{md(preflight.get('status', '?'))}**"
                     + (f" ({fmt(preflight.get('seconds'))} s)" if preflight.get("seconds") is not None else "") + ".")
        findings = preflight.get("findings") or []
        if findings:
            lines += ["", "| severity | site | parameter | finding | fix |", "|---|---|---|---|---|"]
            for f in findings:
                lines.append(f"| {md(f.get('severity'))} | {md(f.get('site'))} | {md(f.get('parameter'))} "
                             f"| {md(f.get('message'))} | {md(fix_text(f))} |")
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
            lines.append(f"| {md(a.get('attempt'))} | {md(a.get('backend'))} | {md(a.get('remedy'))} "
                         f"| {md(a.get('outcome'))} | {fmt(a.get('seconds'), 'seconds')} | {md(a.get('draws'))} "
                         f"| {md(a.get('divergences'))} | {md(a.get('failure') or a.get('message'))} |")
    lines += ["", f"_Resilient {report['resilient_version']}, report schema {report['schema_version']}, "
                  f"generated {report['generated_at']}._", ""]
    return "\n".join(lines)
