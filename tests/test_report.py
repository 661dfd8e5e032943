"""resilient.report: report.json round-trips and matches its schema; Markdown and HTML carry every section.

report.json is checked against REPORT_SCHEMA with the standard ``jsonschema`` validator (the
``test`` extra), with one addition: a JSON number must be finite, as report.json is strict JSON.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import re
import subprocess
import sys

import jsonschema
import numpy as np
import pytest
import xarray as xr

from resilient import record
from resilient.report import (
    FORMATS, REPORT_SCHEMA, REPORT_SCHEMA_VERSION, render_html, render_markdown, report_dict, write_report,
)

SECTIONS = ("checks", "summary", "preflight", "attempts", "plots")

PREFLIGHT = {
    "model": "truncated_normal", "backend": "numpyro", "status": "fixed", "seconds": 0.21, "points_checked": 3,
    "findings": [{
        "severity": "fixed", "check": "rewrite", "site": "V", "parameter": "sigma",
        "values": {"sigma": 1.0, "V": 2.0, "gradient": float("nan")},
        "cause": "the upper bound is infinite", "fix": "Truncated(Normal(0, sigma), lower=0)", "fix_applied": True,
        "message": "V ~ Truncated(Normal(0, sigma), lower=0, upper=inf): the gradient with respect to sigma is NaN",
    }],
}
ATTEMPTS = [
    {"attempt": 1, "backend": "numpyro", "settings": {"draws": 500, "tune": 500, "chains": 4, "target_accept": 0.8},
     "remedy": None, "failure": "divergences", "message": "57 divergences", "outcome": "retry", "seconds": 3.2,
     "draws": 2000, "divergences": 57},
    {"attempt": 2, "backend": "numpyro", "settings": {"draws": 500, "tune": 500, "chains": 4, "target_accept": 0.95},
     "remedy": "target_accept", "failure": None, "message": "", "outcome": "accepted", "seconds": 4.1,
     "draws": 2000, "divergences": 40, "compile_seconds": 0.0, "warmup_seconds": 1.6, "sampling_seconds": 2.5},
]
RUN = {"backend": "numpyro", "version": "0.1.0", "model": "truncated_normal", "time_budget": 60.0,
       "seconds": 7.5, "status": "ok", "message": "Sampled after 2 attempts.", "max_tree_depth": 10}


def _finite_number(checker, value):
    return jsonschema.Draft202012Validator.TYPE_CHECKER.is_type(value, "number") and math.isfinite(value)


#: draft 2020-12, except that NaN and infinities are not numbers (report.json is strict JSON).
StrictValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("number", _finite_number),
)


def schema_errors(report) -> list[str]:
    """Every place ``report`` breaks REPORT_SCHEMA, as "$.path: message", in document order."""
    errors = sorted(StrictValidator(REPORT_SCHEMA).iter_errors(report), key=lambda e: list(map(str, e.path)))
    return [f"{e.json_path}: {e.message}" for e in errors]


def validate_report(report) -> None:
    assert schema_errors(report) == []


def make_tree(seed: int = 0, *, bad: bool = False, vector: int = 3, chains: int = 4, draws: int = 500):
    """Normals (healthy) or shifted chains with 40 divergences and saturated tree depth (bad)."""
    from arviz_base import from_dict

    rng = np.random.default_rng(seed)
    shape = (chains, draws)
    mu = rng.normal(size=shape)
    diverging = np.zeros(shape, dtype=bool)
    depth = np.full(shape, 3)
    if bad:
        mu = mu + np.linspace(0, 2, chains)[:, None]
        diverging[0, :40] = True
        depth[-1] = 10
    stats = {"diverging": diverging, "tree_depth": depth, "n_steps": 2 ** depth - 1,
             "energy": rng.normal(size=shape), "lp": rng.normal(size=shape),
             "acceptance_rate": rng.uniform(0.6, 1.0, size=shape), "step_size": np.full(shape, 0.5)}
    posterior = {"mu": mu, "theta": rng.normal(size=(*shape, vector))}
    return from_dict({"posterior": posterior, "sample_stats": stats}, dims={"theta": ["school"]})


def with_record(data):
    return record.attach(data, preflight=PREFLIGHT, attempts=ATTEMPTS, run=RUN)


@pytest.fixture(scope="module")
def bad_run():
    return with_record(make_tree(1, bad=True))


@pytest.fixture(scope="module")
def bad_html(bad_run):
    return render_html(bad_run)


# ----------------------------------------------------------------------------------------------
# report.json


def test_report_round_trips_through_json_and_validates(bad_run):
    report = report_dict(bad_run)
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report
    validate_report(report)
    validate_report(json.loads(text))
    assert set(report) == set(REPORT_SCHEMA["required"])
    assert report["schema_version"] == REPORT_SCHEMA_VERSION


def test_report_carries_run_diagnostics_summary_preflight_and_attempts(bad_run):
    report = report_dict(bad_run)
    assert report["verdict"] == "fail"
    assert report["run"] == {
        "backend": "numpyro", "model": "truncated_normal", "status": "ok", "message": "Sampled after 2 attempts.",
        "time_budget": 60.0, "seconds": 7.5, "chains": 4, "draws": 500, "variables": ["mu", "theta"],
        "groups": ["posterior", "sample_stats"], "record": RUN,
    }
    checks = {c["name"]: c for c in report["diagnostics"]["checks"]}
    assert len(checks) == 8
    assert checks["divergences"]["value"] == 40 and checks["divergences"]["verdict"] == "fail"
    assert checks["tree_depth"]["value"] == 500
    assert [r["variable"] for r in report["summary"]["rows"]] == ["mu", "theta[0]", "theta[1]", "theta[2]"]
    assert report["summary"]["ci_kind"] == "eti"
    # the NaN gradient is the finding: its message says so; its value is None (null in the file), as every NaN
    assert report["preflight"]["findings"][0]["values"] == {"sigma": 1.0, "V": 2.0, "gradient": None}
    assert report["attempts"] == ATTEMPTS


def test_thresholds_reach_the_diagnostics(bad_run):
    report = report_dict(bad_run, max_divergences=100)
    checks = {c["name"]: c for c in report["diagnostics"]["checks"]}
    assert checks["divergences"]["verdict"] == "ok"
    assert report["diagnostics"]["thresholds"]["max_divergences"] == 100


def test_diagnostics_and_thresholds_together_are_refused(bad_run):
    from resilient.diagnostics import diagnose

    message = r"Pass either `diagnostics` or thresholds, not both; got both and \['rhat_max'\]"
    with pytest.raises(ValueError, match=message):
        report_dict(bad_run, diagnostics=diagnose(bad_run), rhat_max=1.1)


def test_plain_datatree_reports_without_record():
    report = report_dict(make_tree(2))
    validate_report(report)
    assert report["verdict"] == "ok"
    assert report["preflight"] is None and report["attempts"] == []
    assert report["run"]["backend"] is None and report["run"]["record"] is None


def test_netcdf_round_trip_keeps_preflight_and_attempts(bad_run, tmp_path):
    path = tmp_path / "run.nc"
    bad_run.to_netcdf(path)  # xarray's default engine, as a user writes it (netCDF4, a core dependency)
    with xr.open_datatree(path) as reopened:
        before, after = report_dict(bad_run), report_dict(reopened)
    for key in ("preflight", "attempts", "run", "verdict", "diagnostics", "summary"):
        assert after[key] == before[key], key
    assert after["preflight"]["findings"][0]["site"] == "V"


def test_schema_is_self_consistent():
    jsonschema.Draft202012Validator.check_schema(REPORT_SCHEMA)
    assert REPORT_SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"

    def walk(schema, where):
        for key in schema.get("required", ()):
            assert key in schema.get("properties", {}), f"{where}.{key} is required but not described"
        for key, sub in schema.get("properties", {}).items():
            walk(sub, f"{where}.{key}")
        if "items" in schema:
            walk(schema["items"], f"{where}[]")

    walk(REPORT_SCHEMA, "$")


def test_the_schema_is_the_shipped_json_file_and_its_enums_are_the_code_s():
    """REPORT_SCHEMA is read from resilient/report/report.schema.json (package data, in the wheel); its enums are the
    verdicts and severities the code writes, and its const schema_version is REPORT_SCHEMA_VERSION."""
    from pathlib import Path

    from resilient.diagnostics import VERDICTS
    from resilient.report import schema
    from resilient.states import SEVERITIES
    from resilient.states import VERDICTS as RUN_VERDICTS

    path = Path(schema.__file__).with_name(schema.SCHEMA_FILE)
    assert json.loads(path.read_text(encoding="utf-8")) == REPORT_SCHEMA == schema.load_schema()
    properties = REPORT_SCHEMA["properties"]
    assert properties["schema_version"]["const"] == REPORT_SCHEMA_VERSION
    assert properties["verdict"]["enum"] == list(RUN_VERDICTS)
    assert properties["diagnostics"]["properties"]["verdict"]["enum"] == list(RUN_VERDICTS)
    assert properties["diagnostics"]["properties"]["checks"]["items"]["properties"]["verdict"]["enum"] == list(VERDICTS)
    finding = properties["preflight"]["properties"]["findings"]["items"]
    assert finding["properties"]["severity"]["enum"] == list(SEVERITIES)


def test_every_nan_of_a_run_is_null_in_report_json(tmp_path):
    """One NaN policy: a NaN or infinite figure anywhere (run record, findings, attempts) is null in report.json,
    which parses as strict JSON (no NaN/Infinity constants) and validates."""
    attempts = [dict(ATTEMPTS[0], rhat=float("nan")), *ATTEMPTS[1:]]
    run = {**RUN, "seconds": float("inf"), "extra": [float("nan"), 1.0]}
    bad_run = record.attach(make_tree(1, bad=True), preflight=PREFLIGHT, attempts=attempts, run=run)
    paths = write_report(bad_run, tmp_path, formats=("json",))
    text = paths["json"].read_text(encoding="utf-8")

    def refuse(name):
        raise AssertionError(f"{name} in report.json")

    report = json.loads(text, parse_constant=refuse)
    assert report["run"]["seconds"] is None and report["run"]["record"]["extra"] == [None, 1.0]
    assert report["run"]["record"]["seconds"] is None
    assert report["attempts"][0]["rhat"] is None
    assert report["preflight"]["findings"][0]["values"]["gradient"] is None
    assert schema_errors(report) == []


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r.pop("verdict"), "$: 'verdict' is a required property"),
    (lambda r: r.__setitem__("verdict", "maybe"), "$.verdict: 'maybe' is not one of ['ok', 'warn', 'fail']"),
    (lambda r: r["run"].__setitem__("chains", "4"), "$.run.chains: '4' is not of type 'integer'"),
    (lambda r: r["diagnostics"]["checks"][2].__setitem__("value", float("nan")),
     "$.diagnostics.checks[2].value: nan is not of type 'number', 'null'"),
    (lambda r: r["diagnostics"]["checks"][0].__setitem__("verdict", "pass"),
     "$.diagnostics.checks[0].verdict: 'pass' is not one of ['ok', 'n/a', 'warn', 'fail']"),
    (lambda r: r["summary"]["rows"][0].pop("r_hat"), "$.summary.rows[0]: 'r_hat' is a required property"),
    (lambda r: r["preflight"]["findings"][0].__setitem__("severity", "minor"),
     "$.preflight.findings[0].severity: 'minor' is not one of ['error', 'fixed', 'warning', 'info']"),
    (lambda r: r["attempts"][1].__setitem__("attempt", True), "$.attempts[1].attempt: True is not of type 'integer'"),
])
def test_the_schema_names_each_problem(bad_run, change, message):
    report = copy.deepcopy(report_dict(bad_run))
    change(report)
    assert schema_errors(report) == [message]


def test_the_schema_refuses_a_non_object():
    assert schema_errors([]) == ["$: [] is not of type 'object'"]


# ----------------------------------------------------------------------------------------------
# Markdown


def test_markdown_has_verdict_checks_summary_preflight_and_attempts(bad_run):
    text = render_markdown(bad_run)
    assert text.startswith("# Resilient report: truncated_normal\n")
    assert "**Verdict: FAIL** (4 failed, 2 warnings, 2 passed). 4 chains x 500 draws on numpyro" in text
    assert "| variable | mean | sd | eti 89% lower | eti 89% upper | ess_bulk | ess_tail | r_hat | mcse_mean |" in text
    for label in ("mu", "theta[0]", "theta[1]", "theta[2]"):
        assert re.search(rf"^\| {re.escape(label)} \| ", text, re.MULTILINE), label
    for name in ("finite_draws", "rhat", "ess_bulk", "ess_tail", "mcse", "bfmi", "divergences", "tree_depth"):
        assert re.search(rf"^\| {name} \| \*\*(ok|warn|fail|n/a)\*\* \|", text, re.MULTILINE), name
    assert "Increase target_accept closer to 1" in text
    assert "| fixed | V | sigma |" in text and "applied: Truncated(Normal(0, sigma), lower=0)" in text
    assert "| 2 | numpyro | target_accept | accepted | 4.1 | 2000 | 40 |" in text


def test_markdown_renders_a_report_dict_and_escapes_pipes(bad_run):
    report = report_dict(bad_run)
    report["run"]["message"] = "a | b"
    text = render_markdown(report)
    assert "> a \\| b" in text


# ----------------------------------------------------------------------------------------------
# HTML


def _images(page: str) -> list[str]:
    return re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", page)


def test_html_has_every_section_and_figure(bad_html):
    assert bad_html.startswith("<!DOCTYPE html>")
    assert 'id="verdict" class="banner fail" data-verdict="fail"' in bad_html
    for section in SECTIONS:
        assert f'<section id="{section}">' in bad_html, section
    for table in ("checks-table", "summary-table", "preflight-table", "attempts-table"):
        assert f'<table id="{table}">' in bad_html, table
    for figure in ("plot-timeline", "plot-trace", "plot-rank", "plot-energy", "plot-pair"):
        assert f'<figure id="{figure}">' in bad_html, figure
    assert bad_html.count('<tr data-check="') == 8
    assert "Increase target_accept closer to 1" in bad_html
    assert "<td>warm-up 1.6 s, sampling 2.5 s</td>" in bad_html
    assert "fail above 1.05" in bad_html  # thresholds are stated


def test_html_images_are_embedded_pngs_and_nothing_is_fetched(bad_html):
    sources = _images(bad_html)
    assert len(sources) == 5
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", bad_html)
    assert "<script" not in bad_html and "<link" not in bad_html and "@import" not in bad_html


def test_html_flags_bad_cells_and_escapes_text(bad_run):
    data = with_record(make_tree(1, bad=True))
    record.attach(data, run={**RUN, "model": "<b>model</b>"})
    page = render_html(data, plots=False)
    assert "&lt;b&gt;model&lt;/b&gt;" in page and "<b>model</b>" not in page
    assert 'class="num bad"' in page
    assert _images(page) == []


def test_healthy_html_omits_rank_plots_and_says_what_is_missing():
    page = render_html(make_tree(3))
    assert 'data-verdict="ok"' in page
    assert "No preflight record" in page and "No attempt log" in page
    figures = re.findall(r'<figure id="([^"]+)">', page)
    assert figures == ["plot-trace", "plot-energy", "plot-pair"]


def test_plots_are_bounded_and_the_rest_noted():
    page = render_html(make_tree(4, vector=30))
    assert "The plots show 8 of 31 scalar quantities, the least converged" in page
    assert len(_images(page)) == 3


def test_html_without_energy_or_second_variable_notes_it():
    rng = np.random.default_rng(5)
    data = xr.DataTree.from_dict({"posterior": xr.Dataset({"x": (("chain", "draw"), rng.normal(size=(4, 100)))})})
    page = render_html(data)
    assert "No energy plot: sample_stats has no `energy`." in page
    assert "No pair plot: only one quantity can be plotted." in page
    assert re.findall(r'<figure id="([^"]+)">', page) == ["plot-trace"]


def test_a_failing_arviz_plot_falls_back_to_matplotlib(bad_run, monkeypatch):
    import arviz_plots

    def broken(*args, **kwargs):
        raise RuntimeError("simulated arviz-plots failure")

    monkeypatch.setattr(arviz_plots, "plot_trace_dist", broken)
    page = render_html(bad_run)
    assert '<figure id="plot-trace">' in page
    assert "The trace plot was drawn with plain matplotlib: arviz-plots raised RuntimeError: simulated" in page


def test_constant_and_nan_quantities_are_not_plotted():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(4, 200))
    x[0, 3] = np.nan
    data = xr.DataTree.from_dict({"posterior": xr.Dataset({
        "x": (("chain", "draw"), x), "fixed": (("chain", "draw"), np.ones((4, 200))),
        "y": (("chain", "draw"), rng.normal(size=(4, 200))), "z": (("chain", "draw"), rng.normal(size=(4, 200))),
    })})
    page = render_html(data)
    assert "Not plotted (NaN, infinite or constant draws): x, fixed." in page
    assert 'data-verdict="fail"' in page


def test_render_from_a_report_dict_has_no_plots(bad_run):
    page = render_html(report_dict(bad_run))
    assert "Plots need the DataTree" in page and _images(page) == []


# ----------------------------------------------------------------------------------------------
# write_report


def test_write_report_writes_every_format(bad_run, tmp_path):
    paths = write_report(bad_run, tmp_path / "out")
    assert paths == {fmt: tmp_path / "out" / name for fmt, name in FORMATS.items()}
    assert all(p.is_file() for p in paths.values())
    report = json.loads(paths["json"].read_text(encoding="utf-8"))
    validate_report(report)
    assert report["verdict"] == "fail"
    assert paths["md"].read_text(encoding="utf-8").startswith("# Resilient report")
    assert len(_images(paths["html"].read_text(encoding="utf-8"))) == 5


def test_write_report_writes_only_what_is_asked(bad_run, tmp_path):
    paths = write_report(bad_run, tmp_path, formats=("json",))
    assert list(paths) == ["json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_write_report_refuses_unknown_formats(bad_run, tmp_path):
    message = r"`formats` must be a non-empty subset of \('html', 'md', 'json'\), got \('pdf',\)\."
    with pytest.raises(ValueError, match=message):
        write_report(bad_run, tmp_path, formats=("pdf",))


def test_max_plot_variables_must_be_positive(bad_run):
    with pytest.raises(ValueError, match=r"`max_plot_variables` must be a positive integer, got 0\."):
        render_html(bad_run, max_plot_variables=0)


# ----------------------------------------------------------------------------------------------
# import cost


def test_importing_the_report_loads_neither_arviz_nor_matplotlib():
    code = ("import sys, resilient.diagnostics, resilient.report; "
            "heavy = [m for m in ('arviz_stats', 'arviz_base', 'arviz_plots', 'matplotlib', 'xarray', 'jax', "
            "'numpyro', 'pymc', 'pytensor') if m in sys.modules]; print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


def test_precomputed_diagnostics_are_reused(bad_run, tmp_path, monkeypatch):
    from resilient.diagnostics import diagnose
    from resilient.report import data as report_module

    diagnostics = diagnose(bad_run, max_divergences=100)

    def refuse(*args, **kwargs):
        raise AssertionError("diagnose ran again")

    monkeypatch.setattr(report_module, "diagnose", refuse)
    paths = write_report(bad_run, tmp_path, formats=("json", "html"), plots=False, diagnostics=diagnostics)
    report = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert report["diagnostics"]["thresholds"]["max_divergences"] == 100
    with pytest.raises(ValueError, match=r"Pass either `diagnostics` or thresholds"):
        render_html(bad_run, diagnostics=diagnostics, rhat_max=1.1)
