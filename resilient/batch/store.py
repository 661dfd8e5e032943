"""The output folder of a batch: ``manifest.json`` (what the run is), ``summary.csv`` (one row per fit,
the mark that it is done), ``fits/<fit_id>.nc`` and, for SBC, ``ranks.csv``. Rows are appended and
fsynced as fits finish, so a killed run keeps every row it wrote and a rerun skips the finished fits.

Dependency rule: the standard library at import time.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from resilient import jsonio
from resilient.batch.spec import SUMMARY_COLUMNS
from resilient.errors import ResilientError

__all__ = ["FitStore", "read_summary", "read_rows"]

def read_summary(out: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of ``out/summary.csv`` (a truncated last line, left by a killed run, is dropped);
    the last row of each fit wins (a fit ``lost`` and run again has two)."""
    return list(read_rows(Path(out) / "summary.csv", SUMMARY_COLUMNS, key="fit_id").values())


def read_rows(path: Path, columns: Sequence[str], key: str | tuple[str, ...]) -> dict[Any, dict[str, str]]:
    rows: dict[Any, dict[str, str]] = {}
    if not path.is_file():
        return rows
    text = path.read_text()
    complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(complete))
    if reader.fieldnames is not None and tuple(reader.fieldnames) != tuple(columns):
        raise ResilientError(f"{path} has columns {reader.fieldnames}, not Resilient's {list(columns)}: this folder "
                             "holds something else. Give another --out folder.")
    for row in reader:
        if None in row or any(row.get(c) is None for c in columns):
            continue
        identity = row[key] if isinstance(key, str) else tuple(row[k] for k in key)
        rows[identity] = row
    return rows


class _Table:
    """A CSV file that rows are appended to as they arrive (flushed and fsynced: a killed run keeps
    every row it wrote). Opening it cleans a truncated last line."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path = path
        self.columns = tuple(columns)
        if path.is_file():
            text = path.read_text()
            if text and not text.endswith("\n"):
                path.write_text(text[: text.rfind("\n") + 1])
        if not path.is_file() or path.stat().st_size == 0:
            path.write_text(",".join(self.columns) + "\n")
        self.handle = open(path, "a", newline="")  # noqa: SIM115 - closed by close()
        self.writer = csv.DictWriter(self.handle, fieldnames=self.columns, extrasaction="ignore")

    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.writer.writerow({k: _cell(row.get(k)) for k in self.columns})
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan"
    return value


class FitStore:
    """The output folder: ``manifest.json`` (what the run is), ``summary.csv`` (one row per fit, the
    "done" mark), ``fits/<fit_id>.nc`` and, for SBC, a table of per-fit records (``ranks.csv``)."""

    def __init__(self, out: str | os.PathLike, manifest: Mapping[str, Any], *, records: str | None = None,
                 record_columns: Sequence[str] = ()) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "fits").mkdir(exist_ok=True)
        self._check_manifest(dict(manifest))
        self.done = {fit_id: row for fit_id, row in read_rows(self.out / "summary.csv", SUMMARY_COLUMNS,
                                                                "fit_id").items() if row["status"] != "lost"}
        self.summary = _Table(self.out / "summary.csv", SUMMARY_COLUMNS)
        self.records = _Table(self.out / records, record_columns) if records else None

    def _check_manifest(self, manifest: dict[str, Any]) -> None:
        path = self.out / "manifest.json"
        text = jsonio.dumps(manifest, indent=2, sort_keys=True)
        if path.is_file():
            before = json.loads(path.read_text())  # tolerant: a folder written before NaN became null
            now = json.loads(text)
            changed = sorted(k for k in set(before) | set(now) if k != "policy" and before.get(k) != now.get(k))
            policy, upgraded = _policy_differences(before.get("policy"), now.get("policy"))
            changed += [f"policy.{name}" for name in policy]
            if changed:
                raise ResilientError(
                    f"{self.out} holds a run with other settings ({', '.join(changed)} differ), so its finished fits "
                    "cannot be reused. Give a new output folder, or the same settings to continue that run.")
            if upgraded:
                from resilient.errors import warn

                warn(f"Resilient: {self.out} was written by an earlier version of Resilient whose default policy "
                     f"lacked {'; '.join(upgraded)}; its finished fits are reused as they are, and the fits still to "
                     "run use this version's defaults. Give a new output folder to fit every data set anew.")
            return
        path.write_text(text)

    def finished(self, fit_id: str) -> bool:
        row = self.done.get(fit_id)
        if row is None:
            return False
        return not row["file"] or (self.out / row["file"]).is_file()

    def write(self, result: Mapping[str, Any]) -> dict[str, Any]:
        """Draws first, then the records, then the summary row (the mark that the fit is done)."""
        row = dict(result["row"])
        netcdf = result.get("netcdf")
        if netcdf:
            relative = f"fits/{row['fit_id']}.nc"
            partial = self.out / (relative + ".part")
            partial.write_bytes(netcdf)
            os.replace(partial, self.out / relative)
            row["file"] = relative
        if self.records is not None and result.get("records"):
            self.records.append(result["records"])
        self.summary.append([row])
        if row["status"] != "lost":
            self.done[row["fit_id"]] = {k: str(_cell(row.get(k))) for k in SUMMARY_COLUMNS}
        return row

    def close(self) -> None:
        self.summary.close()
        if self.records is not None:
            self.records.close()


#: remedies added to the default policy since output folders were first written (more_draws: 2026-12-06); a stored
#: default list that lacks only these is an earlier version's default, not the user's choice
ADDED_REMEDIES = frozenset({"more_draws"})


def _policy_differences(before: Any, now: Any) -> tuple[list[str], list[str]]:
    """``(fields that differ, fields a later version added)`` between a stored manifest's policy and this run's.
    A field the stored policy lacks, at this version's default, was added since (``rhat_goal``,
    ``retry_divergences``); so was a remedy the stored default list lacks, where this run asks for the default
    list. Neither is a setting the user changed, so neither refuses the folder."""
    from dataclasses import asdict

    from resilient.policy import Policy

    if not isinstance(before, dict) or not isinstance(now, dict):
        return ([] if before == now else ["*"]), []
    defaults = json.loads(jsonio.dumps(asdict(Policy())))
    changed, upgraded = [], []
    for name in sorted(set(before) | set(now)):
        old, new = before.get(name), now.get(name)
        if old == new:
            continue
        if name not in before and new == defaults.get(name):
            upgraded.append(f"the option `{name}`")
        elif (name == "remedies" and new == defaults["remedies"] and isinstance(old, list)
              and old == [r for r in new if r in old] and set(new) - set(old) <= ADDED_REMEDIES):
            upgraded.append("the remedy " + ", ".join(f"`{r}`" for r in new if r not in old))
        else:
            changed.append(name)
    return changed, upgraded
