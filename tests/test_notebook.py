"""Resilient in Jupyter (issue #25.3): rich displays of the diagnostics verdict and the attempt log, the HTML
report inline, a progress display that updates one output in place, and the example notebook executed by
nbclient with its outputs checked."""

from __future__ import annotations

import html
import os
from pathlib import Path
import numpy as np
import pytest

import resilient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "notebooks" / "resilient-in-a-notebook.ipynb"


def _nbclient():
    """nbclient and nbformat (the `test` extra); skipped without them, except under CI=true."""
    try:
        import nbclient
        import nbformat
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            raise
        pytest.skip("nbclient/nbformat/ipykernel are not installed (pip install 'resilient[test]')")
    return nbclient, nbformat


def _run(notebook, cwd: Path, timeout: int = 300):
    nbclient, _ = _nbclient()
    client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return notebook


def _outputs(cell, kind: str) -> list[dict]:
    return [o for o in cell.get("outputs", []) if o["output_type"] == kind]


def stored_result():
    """A result as resilient.sample returns it, without a backend: draws, sample stats, and an attempt log in
    which the loop's second attempt (non-centred) was accepted."""
    from resilient.draws import to_datatree
    from resilient.record import attach

    rng = np.random.default_rng(1)
    shape = (2, 300)
    data = to_datatree({"mu": rng.normal(size=shape), "theta": rng.normal(size=(*shape, 3))},
                       {"diverging": np.zeros(shape, bool), "tree_depth": np.full(shape, 3),
                        "n_steps": np.full(shape, 7), "energy": rng.normal(size=shape), "lp": rng.normal(size=shape),
                        "acceptance_rate": rng.uniform(0.6, 1.0, shape), "step_size": np.full(shape, 0.5)})
    attempts = [{"attempt": 1, "backend": "numpyro", "settings": {"target_accept": 0.8}, "remedy": None,
                 "failure": "divergences", "message": "12 divergent draws <with> centred theta", "outcome": "retry",
                 "seconds": 1.5, "draws": 300, "divergences": 12, "rhat": 1.02, "ess_bulk": 210.0},
                {"attempt": 2, "backend": "numpyro", "settings": {"target_accept": 0.8, "noncentered": ["theta"]},
                 "remedy": "noncenter", "failure": None, "message": "", "outcome": "accepted", "seconds": 1.1,
                 "draws": 300, "divergences": 0, "rhat": 1.004, "ess_bulk": 512.0}]
    return attach(data, attempts=attempts, run={"backend": "numpyro", "model": "tiny", "status": "ok"})


def test_the_verdict_and_the_attempt_log_display_as_html_tables():
    data = stored_result()
    diagnostics = resilient.diagnose(data)
    page = diagnostics._repr_html_()
    assert page.count("<tr>") == len(diagnostics.checks) + 1  # a header row and one row a check
    assert diagnostics.verdict.upper() in page and all(c.name in page for c in diagnostics.checks)
    attempts = resilient.record.read_attempts(data)
    assert isinstance(attempts, list) and attempts == resilient.record.read_attempts(data)
    table = attempts._repr_html_()
    assert table.count("<tr>") == len(attempts) + 1
    assert "ACCEPTED" in table and "RETRY" in table and "noncenter" in table and "noncentered=[&#x27;theta&#x27;]" in table
    assert "&lt;with&gt;" in table and "<with>" not in table  # the cause is escaped


def test_display_report_outside_a_notebook_returns_the_page_in_a_sandboxed_frame(tmp_path):
    from resilient.notebook import ReportView, display_report, notebook_progress

    data = stored_result()
    view = display_report(data, plots=False, height=500)
    assert isinstance(view, ReportView) and view.html.startswith("<!DOCTYPE html>")
    frame = view._repr_html_()
    assert frame.startswith('<iframe srcdoc="') and "height:500px" in frame
    assert html.unescape(frame.split('srcdoc="', 1)[1].split('" title=', 1)[0]) == view.html
    assert Path(view.save(tmp_path / "report.html")).read_text(encoding="utf-8") == view.html
    assert notebook_progress(True, 100, "Sampling") is None  # not in a kernel: the terminal's bar is the loop's


def test_notebook_progress_updates_one_output_in_place(tmp_path):
    """A thousand-draw run's worth of updates leaves one output (the final state), not one line per update."""
    _, nbformat = _nbclient()
    from nbformat.v4 import new_code_cell, new_notebook

    code = ("from types import SimpleNamespace\n"
            "from resilient.notebook import notebook_progress\n"
            "bar = notebook_progress(True, 4000, 'Sampling')\n"
            "bar.interval = 0.0\n"
            "for _ in range(40):\n"
            "    bar.advance(SimpleNamespace(size=50, chains=(0, 1)), 'warm-up')\n"
            "bar.close()")
    notebook = _run(new_notebook(cells=[new_code_cell(code)]), tmp_path, timeout=120)
    outputs = notebook.cells[0]["outputs"]
    assert [o["output_type"] for o in outputs] == ["display_data"], outputs
    shown = outputs[0]["data"]["text/html"]
    assert 'value="4000" max="4000"' in shown and "Sampling: done in" in shown and "warm-up" in shown


@pytest.mark.numpyro
@pytest.mark.slow  # ~30 s: a kernel, JAX's compile, two chains, the report's plots
def test_the_example_notebook_runs_and_shows_the_verdict_the_attempts_and_the_report(tmp_path):
    _, nbformat = _nbclient()
    notebook = _run(nbformat.read(NOTEBOOK, as_version=4), tmp_path)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert not [o for cell in code for o in _outputs(cell, "error")]
    streamed = "".join(o.get("text", "") for cell in code for o in _outputs(cell, "stream"))
    assert len(streamed.splitlines()) < 20, streamed  # no terminal bar redrawn into the output
    by_source = {cell.source.splitlines()[-1]: cell for cell in code}
    sampled = next(cell for cell in code if "rs.sample(" in cell.source)
    progress = [o["data"]["text/html"] for o in _outputs(sampled, "display_data") if "text/html" in o.get("data", {})]
    # one output per attempt, each updated in place to its final state (not a line per chunk)
    assert 1 <= len(progress) <= 5 and all("resilient-progress" in p and "done in" in p for p in progress), progress
    verdict = _outputs(by_source["rs.diagnose(data)"], "execute_result")[0]["data"]["text/html"]
    assert "Diagnostics" in verdict and ">rhat<" in verdict and ">divergences<" in verdict
    attempts = _outputs(by_source["rs.record.read_attempts(data)"], "execute_result")[0]["data"]["text/html"]
    assert "Attempts" in attempts and "ACCEPTED" in attempts
    report = _outputs(by_source["display_report(data)"], "display_data")
    assert len(report) == 1 and report[0]["data"]["text/html"].startswith('<iframe srcdoc="')
    page = html.unescape(report[0]["data"]["text/html"])
    assert "Resilient report" in page and "data:image/png;base64," in page
    posterior = _outputs(by_source["data.posterior"], "execute_result")[0]["data"]
    assert "sigma" in posterior["text/plain"] and "V" in posterior["text/plain"]
