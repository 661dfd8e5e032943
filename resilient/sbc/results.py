"""Reading an SBC run back from its folder (also after a crash): :func:`analyse` turns ``ranks.csv`` and
``summary.csv`` into an :class:`SBCResult`, a verdict per parameter with the fits used and those dropped.

Dependency rule: numpy and the standard library at import time; pandas inside functions.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from resilient.batch import read_rows, read_summary
from resilient.errors import ResilientError
from resilient.sbc.simulation import RANK_COLUMNS
from resilient.sbc.statistics import ParameterCheck, uniformity_test

__all__ = ["SBCResult", "analyse", "count_by"]

@dataclass
class SBCResult:
    """An SBC run: a verdict per parameter, the fits used, the fits dropped and why."""

    out: Path
    checks: list[ParameterCheck]
    simulations: int
    used: int
    dropped: list[dict[str, str]]
    settings: dict[str, Any]
    report: Path | None = None

    @property
    def passed(self) -> bool:
        """No parameter outside its band (a run with dropped fits can pass: see :attr:`dropped`)."""
        return all(c.verdict != "fail" for c in self.checks) and bool(self.checks)

    @property
    def verdict(self) -> str:
        if not self.checks or all(c.verdict == "n/a" for c in self.checks):
            return "n/a"
        if not self.passed:
            return "fail"
        return "warn" if self.dropped else "pass"

    @property
    def ranks(self) -> Any:
        """``ranks.csv`` of the fits used, as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(_used_rank_rows(self.out, self.simulations)[0])

    @property
    def summary(self) -> Any:
        import pandas as pd

        return pd.DataFrame(read_summary(self.out))

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "simulations": self.simulations, "used": self.used,
                "dropped": self.dropped, "dropped_by_status": count_by(self.dropped, "status"),
                "parameters": [c.to_dict() for c in self.checks], "settings": self.settings}


def count_by(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[key]] = counts.get(row[key], 0) + 1
    return counts


def _used_rank_rows(out: Path, simulations: int | None = None
                    ) -> tuple[list[dict[str, Any]], list[dict[str, str]], list[dict[str, str]]]:
    """Rank rows of the fits that were accepted, the summary rows of the fits that were not, and all
    (only simulations ``0..simulations-1`` when given: a folder may hold a longer earlier run)."""

    summary = [row for row in read_summary(out) if simulations is None or int(row["index"]) < simulations]
    ok = {row["fit_id"] for row in summary if row["status"] == "ok"}
    dropped = [{"fit_id": r["fit_id"], "index": r["index"], "status": r["status"], "reason": r["reason"]}
               for r in summary if r["status"] != "ok"]
    rows = read_rows(out / "ranks.csv", RANK_COLUMNS, key=("fit_id", "parameter"))
    used = []
    for row in rows.values():
        if row["fit_id"] in ok:
            used.append({**row, "index": int(row["index"]), "rank": int(row["rank"]),
                         "rank_draws": int(row["rank_draws"]), "true_value": float(row["true_value"]),
                         "posterior_mean": float(row["posterior_mean"]), "posterior_sd": float(row["posterior_sd"]),
                         "ess_bulk": float(row["ess_bulk"]) if row["ess_bulk"] else float("nan"),
                         "thinned_by": float(row["thinned_by"])})
    return used, dropped, summary


def _parameter_order(names: Sequence[str]) -> list[str]:
    def key(label: str) -> tuple:
        base, _, rest = label.partition("[")
        numbers = tuple(int(x) for x in rest.rstrip("]").split(",") if x.strip().isdigit()) if rest else ()
        return (base, numbers)

    return sorted(set(names), key=key)


def analyse(out: str | os.PathLike, *, prob: float = 0.99, simulations: int = 10000,
            requested: int | None = None) -> SBCResult:
    """The verdicts of the SBC run in ``out`` (``ranks.csv`` and ``summary.csv``; a killed run too)."""
    out = Path(out)
    if not (out / "summary.csv").is_file():
        raise ResilientError(f"{out} holds no SBC run (no summary.csv). Run resilient.sbc(..., out={str(out)!r}).")
    manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}
    used, dropped, summary = _used_rank_rows(out, requested)
    by_parameter: dict[str, list[dict[str, Any]]] = {}
    for row in used:
        by_parameter.setdefault(row["parameter"], []).append(row)
    checks = []
    for name in _parameter_order(by_parameter):
        rows = by_parameter[name]
        rank_draws = rows[0]["rank_draws"]
        if any(r["rank_draws"] != rank_draws for r in rows):
            raise ResilientError(f"{out}/ranks.csv mixes rank_draws for {name}: it holds more than one run.")
        check = uniformity_test([r["rank"] for r in rows], rank_draws, prob=prob, simulations=simulations,
                                parameter=name)
        low = sum(1 for r in rows if math.isfinite(r["ess_bulk"]) and r["ess_bulk"] < rank_draws)
        checks.append(ParameterCheck(**{**asdict(check), "low_ess_fits": low}))
    settings = {**manifest.get("run", {}), **manifest.get("sbc", {}), "prob": prob,
                "band_simulations": simulations, "backend": manifest.get("backend"),
                "model": manifest.get("model"), "random_seed": manifest.get("random_seed"),
                "policy": manifest.get("policy")}
    total = requested if requested is not None else manifest.get("sbc", {}).get("simulations", len(summary))
    return SBCResult(out=out, checks=checks, simulations=int(total), used=len({r["fit_id"] for r in used}),
                     dropped=dropped, settings=settings)
