"""The run report: one dict (report.json), rendered as Markdown and as a self-contained HTML page.

One topic a module:

* :mod:`~resilient.report.schema`: report.json's JSON Schema, the package data file ``report.schema.json``;
* :mod:`~resilient.report.data`: :func:`report_dict`, everything known about a run under the schema's keys;
* :mod:`~resilient.report.markdown`: :func:`render_markdown`;
* :mod:`~resilient.report.html`: :func:`render_html`, the Jinja2 template ``templates/report.html.j2``
  (autoescaped) with ``templates/report.css`` inlined and the plots embedded, so it loads nothing from outside;
* :mod:`~resilient.report.figures`: the plots (arviz-plots on matplotlib's Agg backend, plain matplotlib where
  an arviz-plots function fails);
* :mod:`~resilient.report.format`: number and cell formatting shared by the two renderings.

:func:`write_report` writes any of the three files. Numbers that are NaN or infinite are ``null`` in
report.json, everywhere (the one policy of :mod:`resilient.jsonio`), so it is strict JSON; a finding whose
cause is a NaN gradient says so in its message.

Depends on numpy and the standard library at import time; Jinja2 is imported when a page is
rendered, ArviZ and matplotlib inside the functions that draw.
"""

from __future__ import annotations

import pathlib
from typing import Any

from resilient import jsonio
from resilient.diagnostics import Diagnostics
from resilient.report.data import report_dict, resolve_diagnostics
from resilient.report.figures import MAX_PLOT_VARIABLES, figures_of
from resilient.report.format import MAX_TABLE_ROWS
from resilient.report.html import page, render_html
from resilient.report.markdown import render_markdown
from resilient.report.schema import REPORT_SCHEMA, REPORT_SCHEMA_VERSION

__all__ = [
    "REPORT_SCHEMA", "REPORT_SCHEMA_VERSION", "FORMATS", "report_dict", "render_markdown", "render_html",
    "write_report", "MAX_PLOT_VARIABLES", "MAX_TABLE_ROWS",
]

#: the files write_report can produce, by format name.
FORMATS = {"html": "report.html", "md": "report.md", "json": "report.json"}


def write_report(data: Any, out_dir: str | pathlib.Path, formats: tuple[str, ...] | list[str] = ("html", "md", "json"),
                 *, plots: bool = True, max_plot_variables: int = MAX_PLOT_VARIABLES,
                 diagnostics: Diagnostics | None = None, **thresholds: Any) -> dict[str, pathlib.Path]:
    """Write report.html / report.md / report.json into ``out_dir`` (made if missing).

    Parameters
    ----------
    data : DataTree
        A result of :func:`resilient.sample` (its attempt log and preflight findings are read from
        it), or any DataTree with a ``posterior`` group.
    out_dir : str or pathlib.Path
        The folder to write into.
    formats : sequence of {"html", "md", "json"}
        Which files to write.
    plots : bool
        Embed the plots (trace, energy, pair plots with divergences) in the HTML page.
    max_plot_variables : int
        Plot at most this many quantities, the least converged first.
    diagnostics : Diagnostics, optional
        Computed once for every format by :func:`resilient.diagnose` when not given.
    **thresholds
        Passed to :func:`resilient.diagnose`.

    Returns
    -------
    dict of str to pathlib.Path
        The paths written, by format.
    """
    formats = (formats,) if isinstance(formats, str) else tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"`formats` must be a non-empty subset of {tuple(FORMATS)}, got {formats!r}.")
    folder = pathlib.Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    diagnostics = resolve_diagnostics(data, diagnostics, thresholds)
    report = report_dict(data, diagnostics=diagnostics)
    written: dict[str, pathlib.Path] = {}
    for fmt in formats:
        path = folder / FORMATS[fmt]
        if fmt == "json":
            text = jsonio.dumps(report, indent=2) + "\n"
        elif fmt == "md":
            text = render_markdown(report)
        else:
            figures, notes = figures_of(data, diagnostics, report, max_plot_variables) if plots else ([], [])
            text = page(report, figures, notes)
        path.write_text(text, encoding="utf-8")
        written[fmt] = path
    return written
