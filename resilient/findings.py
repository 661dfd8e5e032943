"""Preflight findings and the report that holds them (rendered as a rich table or JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping

from resilient.states import SEVERITIES, Severity

__all__ = ["Finding", "PreflightReport", "SEVERITIES"]


@dataclass(frozen=True)
class Finding:
    """One thing preflight noticed: where, what, why, and what was (or should be) done."""

    severity: Severity
    check: str  # "parameter", "rewrite", "log-density", "gradient", "finite-difference", "prior", "compile"
    site: str | None
    message: str
    parameter: str | None = None
    values: Mapping[str, Any] = field(default_factory=dict)
    cause: str = ""
    fix: str | None = None
    fix_applied: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["values"] = {k: _plain(v) for k, v in self.values.items()}
        return data


def _plain(value: Any) -> Any:
    try:
        import numpy as np

        array = np.asarray(value, dtype=float)
        return array.item() if array.ndim == 0 else array.tolist()
    except (TypeError, ValueError):
        return str(value)


@dataclass(frozen=True)
class PreflightReport:
    """What preflight found for one model on one backend."""

    model: str
    backend: str
    findings: tuple[Finding, ...] = ()
    seconds: float = 0.0
    points_checked: int = 0

    @property
    def status(self) -> Literal["error", "fixed", "clean"]:
        severities = {f.severity for f in self.findings}
        if "error" in severities:
            return "error"
        return "fixed" if "fixed" in severities else "clean"

    @property
    def ok(self) -> bool:
        """True when nothing blocks sampling (clean, or every problem fixed)."""
        return self.status != "error"

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    def worst(self) -> str:
        for severity in SEVERITIES:
            if any(f.severity == severity for f in self.findings):
                return severity
        return "none"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "backend": self.backend,
            "status": self.status,
            "seconds": self.seconds,
            "points_checked": self.points_checked,
            "findings": [f.to_dict() for f in self.findings],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The report as strict JSON (NaN and infinities null: :mod:`resilient.jsonio`)."""
        from resilient.jsonio import dumps

        return dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PreflightReport":
        findings = tuple(Finding(**f) for f in data.get("findings", ()))
        return cls(data["model"], data["backend"], findings, data.get("seconds", 0.0), data.get("points_checked", 0))

    def table(self) -> Any:
        """A rich Table of the findings."""
        from rich.table import Table

        colours = {"error": "bold red", "fixed": "green", "warning": "yellow", "info": "dim"}
        table = Table(title=f"Preflight: {self.model} on {self.backend} ({self.status}, {self.seconds:.2f} s)")
        for column in ("severity", "site", "parameter", "finding", "fix"):
            table.add_column(column, overflow="fold")
        for f in self.findings:
            fix = f.fix or ""
            if fix and f.fix_applied:
                fix = f"applied: {fix}"
            table.add_row(f"[{colours[f.severity]}]{f.severity}[/]", f.site or "", f.parameter or "", f.message, fix)
        return table

    def __str__(self) -> str:
        lines = [f"Preflight of {self.model} on {self.backend}: {self.status} ({len(self.findings)} findings)"]
        lines += [f"  [{f.severity}] {f.message}" + (f" Fix: {f.fix}" if f.fix else "") for f in self.findings]
        return "\n".join(lines)
