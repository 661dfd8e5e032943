"""The report as one self-contained HTML page (``report.html``): the Jinja2 template
``templates/report.html.j2`` (autoescaped) with ``templates/report.css`` inlined and the plots of
:mod:`resilient.report.figures` embedded as base64 PNG, so it loads nothing from outside.

Dependency rule: the standard library at import time; Jinja2 when a page is rendered.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

from resilient.diagnostics import Diagnostics
from resilient.report.data import report_dict, resolve_diagnostics
from resilient.report.figures import MAX_PLOT_VARIABLES, figures_of
from resilient.report.format import (
    MAX_TABLE_ROWS, TABLE_COLUMNS, VALUE_KIND, badge, fix_text, flag, fmt, percent, phases, settings_text,
    verdict_counts,
)

__all__ = ["render_html", "page"]

def render_html(data: Any, *, plots: bool = True, max_plot_variables: int = MAX_PLOT_VARIABLES,
                diagnostics: Diagnostics | None = None, **thresholds: Any) -> str:
    """The report as one self-contained HTML page (plots embedded as base64 PNG).

    ``data`` is a DataTree; a :func:`report_dict` alone renders without plots. Pass
    ``diagnostics`` already computed, or thresholds for :func:`~resilient.diagnostics.diagnose`.
    """
    if isinstance(data, dict):
        return page(data, [], ["Plots need the DataTree; this page was rendered from a report dict."])
    diagnostics = resolve_diagnostics(data, diagnostics, thresholds)
    report = report_dict(data, diagnostics=diagnostics)
    figures, plot_notes = figures_of(data, diagnostics, report, max_plot_variables) if plots else ([], [])
    return page(report, figures, plot_notes)


def page(report: Mapping[str, Any], figures: list[dict[str, str]], plot_notes: list[str]) -> str:
    return _template().render(
        report=report, figures=figures, plot_notes=plot_notes, value_kind=VALUE_KIND,
        summary_columns=TABLE_COLUMNS, max_table_rows=MAX_TABLE_ROWS,
    )


@functools.cache
def _template() -> Any:
    """report.html.j2 from the package's templates/, autoescaped; None renders as ""."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("resilient", "templates"),
        autoescape=select_autoescape(("html", "html.j2"), default=True),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        finalize=lambda value: "" if value is None else value,
    )
    env.filters.update(fmt=fmt, flag=flag, percent=percent, verdict_counts=verdict_counts, badge=badge,
                       phases=phases, fix_text=fix_text, settings_text=settings_text)
    return env.get_template("report.html.j2")
