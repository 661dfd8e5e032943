"""Small formatting helpers shared by the Markdown and HTML renderings of the report (numbers to three
figures, table cells, verdict counts, attempt phases).

Dependency rule: the standard library only.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from resilient.diagnostics import CheckVerdict

__all__ = ["MAX_TABLE_ROWS", "TABLE_COLUMNS", "VALUE_KIND", "md", "fmt", "flag", "percent", "verdict_counts",
           "badge", "settings_text", "phases", "fix_text"]

#: summary rows shown in the Markdown and HTML tables at most (report.json has them all).
MAX_TABLE_ROWS = 200

#: the summary table's columns after `variable`, with the format kind of each.
TABLE_COLUMNS = (("mean", None), ("sd", None), ("ci_lower", None), ("ci_upper", None), ("ess_bulk", "ess"),
                    ("ess_tail", "ess"), ("r_hat", "rhat"), ("mcse_mean", None), ("mcse_sd", None))

VALUE_KIND = {"rhat": "rhat", "ess_bulk": "ess", "ess_tail": "ess", "bfmi": "rhat", "mcse": "rhat"}

SETTINGS_SHOWN = ("draws", "tune", "chains", "target_accept", "max_tree_depth", "random_seed", "init")


def md(value: Any) -> str:
    if value is None:
        return ""
    return str(value).replace("|", "\\|").replace("\n", " ")


def fmt(value: Any, kind: str | None = None) -> str:
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


def flag(key: str, value: Any, thresholds: Mapping[str, Any]) -> str:
    if value is None:
        return " bad" if key in ("r_hat", "ess_bulk", "ess_tail") else ""
    if key == "r_hat" and value > thresholds.get("rhat_max", math.inf):
        return " bad"
    if key in ("ess_bulk", "ess_tail") and value < thresholds.get("ess_min_total", 0):
        return " bad"
    return ""


def percent(prob: Any) -> str:
    return f"{100 * float(prob):g}%"


def verdict_counts(checks: list[Mapping[str, Any]]) -> str:
    failed = sum(c["verdict"] == "fail" for c in checks)
    warned = sum(c["verdict"] == "warn" for c in checks)
    passed = sum(c["verdict"] == "ok" for c in checks)
    skipped = sum(c["verdict"] == "n/a" for c in checks)
    text = f"{failed} failed, {warned} warnings, {passed} passed"
    return text + (f", {skipped} not applicable" if skipped else "")


def badge(verdict: CheckVerdict) -> str:
    """The CSS class of a check's verdict badge ("n/a" is not a class name)."""
    return "na" if verdict == "n/a" else verdict


def settings_text(settings: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (settings or {}).items() if k in SETTINGS_SHOWN)


def phases(attempt: Mapping[str, Any]) -> str:
    parts = []
    for key, name in (("compile_seconds", "compile"), ("warmup_seconds", "warm-up"), ("sampling_seconds", "sampling")):
        value = attempt.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
            parts.append(f"{name} {value:.1f} s")
    return ", ".join(parts)


def fix_text(finding: Mapping[str, Any]) -> str:
    fix = finding.get("fix") or ""
    return f"applied: {fix}" if fix and finding.get("fix_applied") else fix

