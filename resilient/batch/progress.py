"""Progress over the fits of a batch: counts and an ETA (:class:`Progress`), shown as a rich bar on a
terminal or as status lines elsewhere (:class:`ProgressBar`).

Dependency rule: the standard library at import time; rich is imported when a bar is shown.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

__all__ = ["Progress", "ProgressBar"]

@dataclass
class Progress:
    """Counts over the fits of a run, for the progress bar and the final tally."""

    total: int | None
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    lost: int = 0
    running: int = 0
    started_at: float = field(default_factory=time.monotonic)
    finished_here: int = 0

    @property
    def done(self) -> int:
        return self.skipped + self.ok + self.failed + self.lost

    def eta_seconds(self) -> float | None:
        if self.total is None or self.finished_here == 0:
            return None
        rate = self.finished_here / max(time.monotonic() - self.started_at, 1e-9)
        return max(self.total - self.done, 0) / rate

    def line(self) -> str:
        eta = self.eta_seconds()
        total = "?" if self.total is None else str(self.total)
        text = (f"{self.done}/{total} fits: {self.ok} ok, {self.failed} failed, {self.lost} lost, {self.running} "
                f"running" + (f", {self.skipped} already done" if self.skipped else ""))
        return text + (f", ETA {_duration(eta)}" if eta is not None else "")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class ProgressBar:
    """A rich bar over fits (done, failed, running, ETA) on a terminal; elsewhere (CI, a pipe) one
    status line every ``every`` seconds when ``lines`` is on; nothing when off."""

    def __init__(self, enabled: bool, progress: Progress, description: str, *, lines: bool = False,
                 every: float = 10.0) -> None:
        self.progress = progress
        self.bar = None
        self.lines = enabled and lines
        self.every = every
        self.last_line = 0.0
        if enabled and not os.environ.get("CI") and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn

            self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[note]}"), transient=False)
            self.bar.start()
            self.task = self.bar.add_task(description, total=progress.total, note="")
            self.lines = False

    def update(self, force: bool = False) -> None:
        p = self.progress
        if self.bar is not None:
            eta = p.eta_seconds()
            note = (f"[green]{p.ok} ok[/] [red]{p.failed + p.lost} failed[/] {p.running} running"
                    + (f"  ETA {_duration(eta)}" if eta is not None else ""))
            self.bar.update(self.task, completed=p.done, note=note)
        elif self.lines and (force or time.monotonic() - self.last_line >= self.every):
            self.last_line = time.monotonic()
            print(p.line(), file=sys.stderr, flush=True)

    def close(self) -> None:
        self.update(force=True)
        if self.bar is not None:
            self.bar.stop()
