"""One JSON encoder with one NaN policy (#21.4): every JSON file and document Resilient writes goes through
resilient.jsonio, where NaN and the infinities are null, as JSON requires; the text is strict JSON."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from resilient import jsonio

ROOT = Path(__file__).resolve().parents[1]

#: writers of JSON still outside resilient.jsonio, in modules other engineers own (see the #21.4 report): each
#: should call jsonio.dumps instead, and leave this list.
PENDING: set[str] = set()


def strict(text: str):
    def refuse(name):
        raise AssertionError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_of_every_type_are_null_and_the_text_is_strict():
    value = {"a": float("nan"), "b": [float("inf"), -math.inf, 1.5], "c": (np.float32("nan"), np.float64(2.0)),
             "d": np.array([[np.nan, 1.0], [np.inf, 3.0]]), "e": np.int64(7), 3: {"f": {np.nan}}, "g": Path("x"),
             "h": np.bool_(True), "i": None}
    text = jsonio.dumps(value, indent=2)
    assert strict(text) == {"a": None, "b": [None, None, 1.5], "c": [None, 2.0], "d": [[None, 1.0], [None, 3.0]],
                            "e": 7, "3": {"f": [None]}, "g": "x", "h": True, "i": None}
    assert jsonio.loads(text) == strict(text)
    with pytest.raises(ValueError, match="`NaN` is not JSON"):
        jsonio.loads('{"x": NaN}')


def test_write_adds_a_newline_and_reads_back(tmp_path):
    path = jsonio.write(tmp_path / "x.json", {"value": float("-inf")})
    assert path.read_text().endswith("}\n") and jsonio.loads(path.read_text()) == {"value": None}


def test_no_module_writes_json_but_through_jsonio():
    """json.dump(s) appears in resilient/ and adapters/ only in jsonio.py (and the modules PENDING lists)."""
    writers = []
    for top in ("resilient", "adapters"):
        for path in (ROOT / top).rglob("*.py"):
            relative = path.relative_to(ROOT).as_posix()
            if relative == "resilient/jsonio.py" or relative in PENDING:
                continue
            if re.search(r"\bjson\.dumps?\(", path.read_text()):
                writers.append(relative)
    assert writers == [], f"write JSON through resilient.jsonio: {writers}"


def test_the_batch_manifest_writes_nan_as_null(tmp_path):
    from resilient.batch import FitStore

    FitStore(tmp_path, {"kind": "test", "run": {"time_budget": float("nan"), "draws": np.int64(10)}}).close()
    manifest = strict((tmp_path / "manifest.json").read_text())
    assert manifest["run"] == {"time_budget": None, "draws": 10}
    FitStore(tmp_path, {"kind": "test", "run": {"time_budget": float("nan"), "draws": 10}}).close()  # the same run


def test_sbc_json_writes_nan_as_null(tmp_path):
    from resilient.sbc import ParameterCheck, SBCResult, write_sbc_report

    check = ParameterCheck("mu", 1, 19, "n/a", float("nan"), 0.99, math.inf)
    result = SBCResult(out=tmp_path, checks=[check], simulations=1, used=1, dropped=[],
                       settings={"time_budget": float("nan"), "rank_draws": 19, "chains": 2, "draws": 100, "tune": 100,
                                 "prob": 0.99, "band_simulations": 1000, "backend": None, "model": "obj:x",
                                 "simulator": "obj:x"})
    paths = write_sbc_report(result)
    document = strict(paths["json"].read_text())
    assert document["parameters"][0]["p_value"] is None and document["parameters"][0]["max_deviation"] is None
    assert document["settings"]["time_budget"] is None


@pytest.mark.numpyro
def test_the_cli_preflight_json_is_strict_json(capsys):
    from resilient.cli import main

    code = main(["preflight", f"{ROOT / 'examples' / 'pathologies.py'}:motivating", "--no-fix", "--json"])
    assert code == 1
    report = strict(capsys.readouterr().out)
    assert any(f["site"] == "V" and f["severity"] == "error" for f in report["findings"])
