"""The SBC report: ``sbc.html`` (self-contained: ECDF-difference plots with their bands, rank histograms,
the dropped fits and why) and ``sbc.json`` (strict JSON, :mod:`resilient.jsonio`).

Dependency rule: numpy and the standard library at import time; matplotlib, scipy and jinja2 inside
functions.
"""

from __future__ import annotations

import base64
import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from resilient import jsonio
from resilient.sbc.results import SBCResult, count_by
from resilient.sbc.statistics import ParameterCheck

__all__ = ["write_sbc_report"]

#: the templates shared with the run report (resilient/templates).
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

def _figure_png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _plots(check: ParameterCheck) -> dict[str, str]:
    """The ECDF difference with its simultaneous band, and the rank histogram, as base64 PNG."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figures are left alone
    from scipy.stats import binom

    colour = "#b2182b" if check.verdict == "fail" else "#2166ac"
    z = np.concatenate([[0.0], check.z, [1.0]])
    ecdf = np.concatenate([[0.0], check.ecdf, [1.0]])
    lower = np.concatenate([[0.0], check.lower, [1.0]])
    upper = np.concatenate([[0.0], check.upper, [1.0]])
    fig = Figure(figsize=(4.2, 2.8))
    axis = fig.subplots()
    axis.fill_between(z, lower - z, upper - z, step="post", color="#cccccc", lw=0)
    axis.step(z, ecdf - z, where="post", color=colour, lw=1.5)
    axis.axhline(0, color="black", lw=0.5)
    axis.set_xlabel("fractional rank")
    axis.set_ylabel("ECDF - uniform CDF")
    p_value = "" if check.p_value is None else f", p = {check.p_value:.3g}"
    axis.set_title(f"{check.parameter}: {check.verdict}{p_value} (grey: {check.prob:.0%} simultaneous band)",
                   fontsize=9)
    ecdf_png = _figure_png(fig)

    length = check.rank_draws + 1
    bins = next(b for b in (20, 25, 10, 16, 8, 5, 4, 2, 1) if length % b == 0 and b <= length)
    counts = np.bincount(np.asarray(check.ranks, dtype=int) // (length // bins), minlength=bins)[:bins]
    n = len(check.ranks)
    low, high = binom.ppf([0.005, 0.995], n, 1 / bins)
    fig = Figure(figsize=(4.2, 2.8))
    axis = fig.subplots()
    axis.axhspan(low, high, color="#cccccc", lw=0)
    axis.bar(np.arange(bins), counts, width=0.9, color=colour)
    axis.axhline(n / bins, color="black", lw=0.5)
    axis.set_xlabel(f"rank ({bins} bins of {length // bins} ranks)")
    axis.set_ylabel("fits")
    axis.set_title(f"{check.parameter}: ranks of {n} fits (grey: 99% range per bin if uniform)", fontsize=9)
    return {"ecdf": ecdf_png, "histogram": _figure_png(fig)}


def write_sbc_report(result: SBCResult, out: str | os.PathLike | None = None) -> dict[str, Path]:
    """``sbc.html`` (self-contained: plots embedded) and ``sbc.json`` in ``out`` (default: the run's folder)."""
    import jinja2

    folder = Path(out) if out is not None else result.out
    folder.mkdir(parents=True, exist_ok=True)
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                                     autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True,
                                     lstrip_blocks=True)
    template = environment.get_template("sbc.html.j2")
    figures = {check.parameter: _plots(check) for check in result.checks if check.verdict != "n/a"}
    reasons: dict[str, int] = {}
    for row in result.dropped:
        text = row["reason"] or row["status"]
        reasons[text[:300]] = reasons.get(text[:300], 0) + 1
    html = template.render(result=result, figures=figures, reasons=sorted(reasons.items(), key=lambda kv: -kv[1]),
                           dropped_by_status=count_by(result.dropped, "status"),
                           generated=time.strftime("%Y-%m-%d %H:%M:%S"), css=_css())
    paths = {"html": folder / "sbc.html", "json": folder / "sbc.json"}
    paths["html"].write_text(html)
    jsonio.write(paths["json"], result.to_dict(), indent=2)
    result.report = paths["html"]
    return paths


def _css() -> str:
    path = TEMPLATES / "sbc.css"
    return path.read_text() if path.is_file() else ""

