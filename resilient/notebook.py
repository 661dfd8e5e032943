"""Resilient in Jupyter: the HTML report inline (:func:`display_report`), the HTML pieces the rich displays of
:class:`~resilient.diagnostics.Diagnostics` and the attempt log (:class:`~resilient.record.AttemptLog`) use, and a
progress display that updates one output in place (:class:`NotebookProgress`), so a notebook's output is not
flooded by a terminal bar's redraws.

Dependency rule: the standard library at import time; IPython (present in any Jupyter kernel) and the report's
renderer (Jinja2, matplotlib) inside functions.
"""

from __future__ import annotations

import html
import os
import time
from typing import Any, Iterable, Mapping

__all__ = ["display_report", "ReportView", "NotebookProgress", "notebook_progress", "in_notebook",
           "diagnostics_html", "attempts_html"]

#: colours of the verdicts, as the HTML report's badges
_COLOURS = {"ok": "#1a7f37", "pass": "#1a7f37", "n/a": "#6e7781", "warn": "#9a6700", "fail": "#cf222e",
            "accepted": "#1a7f37", "retry": "#9a6700", "gave-up": "#cf222e", "budget": "#cf222e",
            "interrupted": "#6e7781"}
_TABLE = ('<table style="border-collapse:collapse;font-size:0.9em;text-align:left">'
          '<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
_CELL = '<td style="padding:2px 8px;border-top:1px solid #d0d7de;vertical-align:top;text-align:left">{}</td>'


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython's ZMQ shell): rich output is displayed, not printed."""
    import sys

    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _badge(word: str) -> str:
    colour = _COLOURS.get(word, "#6e7781")
    return (f'<span style="color:#fff;background:{colour};border-radius:3px;padding:0 5px;font-weight:600">'
            f"{html.escape(word.upper())}</span>")


def _table(columns: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    head = "".join(f'<th style="padding:2px 8px;text-align:left">{html.escape(c)}</th>' for c in columns)
    body = "".join("<tr>" + "".join(_CELL.format(cell) for cell in row) + "</tr>" for row in rows)
    return _TABLE.format(head=head, body=body)


def _number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def diagnostics_html(diagnostics: Any) -> str:
    """The verdict and each check (value, rule, what it means, what to do) as an HTML fragment."""
    rows = [(html.escape(c.name), _badge(c.verdict), _number(c.value), html.escape(c.rule),
             html.escape(c.explanation), "" if c.passed else html.escape(c.action)) for c in diagnostics.checks]
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in diagnostics.notes)
    return (f'<div class="resilient-diagnostics"><p><strong>Diagnostics</strong> {_badge(diagnostics.verdict)} '
            f"{diagnostics.chains} chains &times; {diagnostics.draws} draws</p>"
            + _table(("check", "verdict", "value", "rule", "what it means", "suggested action"), rows)
            + (f"<ul>{notes}</ul>" if notes else "") + "</div>")


def _settings(settings: Mapping[str, Any]) -> str:
    shown = ("target_accept", "max_tree_depth", "mass_matrix", "init", "float32", "noncentered", "tune", "draws")
    parts = [f"{k}={v}" for k, v in settings.items() if k in shown and v not in (None, [], ())]
    return html.escape(", ".join(parts))


def attempts_html(attempts: Iterable[Mapping[str, Any]]) -> str:
    """The attempt log (one row an attempt: engine, remedy, outcome, time, draws, divergences, R-hat, ESS, the
    cause) as an HTML fragment."""
    attempts = list(attempts)
    if not attempts:
        return '<div class="resilient-attempts"><p><strong>Attempts</strong>: none recorded</p></div>'
    rows = []
    for a in attempts:
        remedy = a.get("remedy")
        rows.append((_number(a.get("attempt")), html.escape(str(a.get("backend", ""))),
                     html.escape(str(remedy).replace("_", " ")) if remedy else "as asked",
                     _badge(str(a.get("outcome", ""))), _number(round(float(a.get("seconds") or 0.0), 2)),
                     _number(a.get("draws")), _number(a.get("divergences")), _number(a.get("rhat")),
                     _number(a.get("ess_bulk")), _settings(a.get("settings") or {}),
                     html.escape(str(a.get("message") or a.get("failure") or ""))))
    return ('<div class="resilient-attempts"><p><strong>Attempts</strong> '
            f"({len(attempts)}; the last {_badge(str(attempts[-1].get('outcome', '')))})</p>"
            + _table(("#", "engine", "remedy", "outcome", "seconds", "draws", "divergences", "max R-hat",
                      "min ESS", "settings", "what happened"), rows) + "</div>")


class ReportView:
    """The HTML report of a result, shown inline in a notebook: the self-contained page
    (:func:`resilient.report.html.render_html`) in an ``<iframe srcdoc>``, so its stylesheet does not restyle
    the notebook. ``html`` is the page itself; :meth:`save` writes it."""

    def __init__(self, page: str, height: int = 900) -> None:
        self.html = page
        self.height = int(height)

    def _repr_html_(self) -> str:
        return (f'<iframe srcdoc="{html.escape(self.html, quote=True)}" title="Resilient report" '
                f'style="width:100%;height:{self.height}px;border:1px solid #d0d7de" '
                'sandbox="allow-same-origin allow-popups"></iframe>')

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write the page to ``path`` (e.g. ``report.html``); the path written."""
        from pathlib import Path

        Path(path).write_text(self.html, encoding="utf-8")
        return str(path)

    def __repr__(self) -> str:
        return f"<ReportView: {len(self.html):,} characters of HTML; .save(path) writes it>"


def display_report(data: Any, *, plots: bool = True, height: int = 900, **thresholds: Any) -> ReportView | None:
    """Show the HTML report of ``data`` (what :func:`resilient.sample` returned) inline in a notebook.

    Parameters
    ----------
    data : xarray.DataTree
        A result of :func:`resilient.sample` (or a report dict, rendered without plots).
    plots : bool
        Draw the report's plots (trace, rank, energy, pair; a few seconds).
    height : int
        The inline frame's height in pixels.
    **thresholds
        Passed to :func:`resilient.diagnostics.diagnose` (``rhat_max=...``).

    Returns
    -------
    ReportView or None
        None in a Jupyter kernel or IPython (the report is displayed); elsewhere the view, whose ``html``
        is the page and whose ``save(path)`` writes it.
    """
    from resilient.report.html import render_html

    view = ReportView(render_html(data, plots=plots, **thresholds), height=height)
    if _ipython() is None:
        return view
    from IPython.display import display

    display(view)
    return None


def _ipython() -> Any:
    import sys

    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython

    return get_ipython()


class NotebookProgress:
    """A progress display for a notebook: one HTML output (``display(..., display_id=True)``) updated in place at
    most every ``interval`` seconds, so a run of thousands of draws leaves one line, not thousands. The
    interface is the loop's progress bar's (``advance(chunk, note)``, ``close()``)."""

    def __init__(self, total: int, description: str, interval: float = 0.5) -> None:
        from IPython.display import HTML, display

        self._html = HTML
        self.total = max(int(total), 1)
        self.description = description
        self.done = 0
        self.note = ""
        self.interval = interval
        self.start = time.monotonic()
        self._shown = 0.0
        self.handle = display(self._html(self._render()), display_id=True)

    def _render(self, finished: bool = False) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = f", ~{(self.total - self.done) / rate:.0f} s left" if rate > 0 and not finished else ""
        state = f"done in {elapsed:.1f} s" if finished else f"{self.done:,}/{self.total:,} draws{left}"
        note = f" &middot; {html.escape(self.note)}" if self.note else ""
        return (f'<div class="resilient-progress"><progress value="{min(self.done, self.total)}" '
                f'max="{self.total}" style="width:40%;vertical-align:middle"></progress> '
                f"{html.escape(self.description)}: {state}{note}</div>")

    def update(self, count: int, note: str = "") -> None:
        """``count`` more draws (all chains together); redrawn when ``interval`` has passed."""
        self.done += int(count)
        self.note = note
        now = time.monotonic()
        if now - self._shown >= self.interval:
            self._shown = now
            self.handle.update(self._html(self._render()))

    def advance(self, chunk: Any, note: str) -> None:
        """The loop's call: a :class:`~resilient.backend.Chunk` of draws finished."""
        self.update(chunk.size * len(chunk.chains), note)

    def close(self) -> None:
        self.handle.update(self._html(self._render(finished=True)))


def notebook_progress(enabled: bool, total: int, description: str) -> NotebookProgress | None:
    """A :class:`NotebookProgress` when ``enabled`` and running in a Jupyter kernel; else None (the terminal's
    rich bar, or nothing, is the caller's)."""
    if not enabled or not in_notebook():
        return None
    return NotebookProgress(total, description)
