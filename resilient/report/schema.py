"""report.json's schema: a JSON Schema file shipped with the package (``report.schema.json``, draft 2020-12),
loaded as :data:`REPORT_SCHEMA` (check a report with any standard validator, e.g. ``jsonschema``).

Dependency rule: the standard library only.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["REPORT_SCHEMA", "REPORT_SCHEMA_VERSION", "SCHEMA_FILE", "load_schema"]

#: bumped when a key is removed or changes meaning; adding keys keeps the version (the schema's ``const``).
REPORT_SCHEMA_VERSION = "1.0"

#: the schema's file name inside this package.
SCHEMA_FILE = "report.schema.json"


def load_schema() -> dict[str, Any]:
    """A fresh copy of report.json's JSON Schema, read from the package's data file."""
    return json.loads(resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))


#: report.json, as a JSON Schema (draft 2020-12; it uses type, enum, const, required, properties, items).
#: Beyond the schema, its numbers are finite: NaN and infinities are written as null (:mod:`resilient.jsonio`).
REPORT_SCHEMA: dict[str, Any] = load_schema()
