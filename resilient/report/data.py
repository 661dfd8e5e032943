"""The report as one dict under the stable keys of report.json's schema (:func:`report_dict`): the run
record, the diagnostics (:func:`resilient.diagnostics.diagnose`), ArviZ's summary table, the preflight
findings and the attempt log (both read from the DataTree's attributes by :mod:`resilient.record`).
Non-finite numbers are None everywhere (null in the file: :mod:`resilient.jsonio`'s one policy).

Dependency rule: numpy and the standard library at import time; ArviZ inside :func:`diagnose`.
"""

from __future__ import annotations

import datetime as _datetime
import math
from typing import Any, Mapping

from resilient import record
from resilient.diagnostics import Diagnostics, diagnose
from resilient.jsonio import to_jsonable
from resilient.report.schema import REPORT_SCHEMA_VERSION

__all__ = ["report_dict", "resolve_diagnostics"]

def report_dict(data: Any, *, diagnostics: Diagnostics | None = None, **thresholds: Any) -> dict[str, Any]:
    """Everything known about a run under the stable keys of :data:`REPORT_SCHEMA`.

    ``data`` is a DataTree (from :func:`resilient.sample`, or PyMC/NumPyro with less detail);
    ``thresholds`` go to :func:`~resilient.diagnostics.diagnose` unless ``diagnostics`` is given.
    """
    from resilient import __version__

    diagnostics = resolve_diagnostics(data, diagnostics, thresholds)
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
            "record": to_jsonable(stored_run) if stored_run is not None else None,
        },
        "diagnostics": {k: diagnostics_dict[k] for k in ("verdict", "thresholds", "checks", "notes")},
        "summary": {"ci_kind": diagnostics.ci_kind, "ci_prob": diagnostics.ci_prob,
                    "rows": diagnostics_dict["summary"]},
        "preflight": to_jsonable(record.read_preflight(data)),
        "attempts": to_jsonable(record.read_attempts(data)),
    }
    if report["run"]["backend"] is None and report["attempts"]:
        report["run"]["backend"] = _optional_str(report["attempts"][-1].get("backend"))
    if report["run"]["model"] is None and isinstance(report["preflight"], dict):
        report["run"]["model"] = _optional_str(report["preflight"].get("model"))
    return report


def resolve_diagnostics(data: Any, diagnostics: Diagnostics | None, thresholds: Mapping[str, Any]) -> Diagnostics:
    if diagnostics is None:
        return diagnose(data, **thresholds)
    if thresholds:
        raise ValueError(f"Pass either `diagnostics` or thresholds, not both; got both and {sorted(thresholds)}.")
    return diagnostics


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _finite_or_none(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return None

