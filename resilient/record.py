"""The record that travels inside a DataTree: preflight findings and the attempt log.

Both are stored as JSON strings in the root group's attributes, which survive
``to_netcdf``/``open_datatree`` unchanged. Schemas (keys are stable, documented in README):

``resilient_preflight``: {"model", "backend", "status": "clean"|"fixed"|"error", "seconds",
  "findings": [{"severity": "error"|"fixed"|"warning"|"info", "check", "site", "parameter",
  "values", "cause", "fix", "fix_applied", "message"}]}
``resilient_attempts``: [{"attempt", "backend", "settings": {...}, "remedy", "failure",
  "outcome": "accepted"|"retry"|"gave-up"|"budget"|"interrupted", "seconds", "draws",
  "divergences"}]
"""

from __future__ import annotations

import json
from typing import Any

PREFLIGHT_KEY = "resilient_preflight"
ATTEMPTS_KEY = "resilient_attempts"
RUN_KEY = "resilient_run"  # {"backend", "version", "model", "time_budget", "status", "message"}


def _dumps(value: Any) -> str:
    """Strict JSON (NaN and infinities null), as every JSON Resilient writes (:mod:`resilient.jsonio`)."""
    from resilient.jsonio import dumps

    return dumps(value, default=_jsonable)


def _jsonable(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)


def attach(data: Any, *, preflight: Any = None, attempts: Any = None, run: Any = None) -> Any:
    """Store the record on ``data`` (a DataTree) in place and return it."""
    if preflight is not None:
        data.attrs[PREFLIGHT_KEY] = _dumps(preflight.to_dict() if hasattr(preflight, "to_dict") else preflight)
    if attempts is not None:
        data.attrs[ATTEMPTS_KEY] = _dumps([a.to_dict() if hasattr(a, "to_dict") else a for a in attempts])
    if run is not None:
        data.attrs[RUN_KEY] = _dumps(run)
    return data


def _read(data: Any, key: str, default: Any) -> Any:
    text = getattr(data, "attrs", {}).get(key)
    if text is None:
        return default
    return json.loads(text) if isinstance(text, str) else text


def read_preflight(data: Any) -> dict | None:
    return _read(data, PREFLIGHT_KEY, None)


class AttemptLog(list):
    """The attempt log: a list of the attempts' dicts (the schema above) that Jupyter displays as a table."""

    def _repr_html_(self) -> str:
        from resilient.notebook import attempts_html

        return attempts_html(self)


def read_attempts(data: Any) -> AttemptLog:
    """The attempt log of a result, oldest first (a list of dicts; displayed as a table in Jupyter)."""
    return AttemptLog(_read(data, ATTEMPTS_KEY, []))


def read_run(data: Any) -> dict | None:
    return _read(data, RUN_KEY, None)
