"""``resilient check-agreement``: exit codes, the table and the JSON file (issue #13)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from resilient import cli
from resilient.agreement import compare
from resilient.draws import to_datatree

ROOT = Path(__file__).resolve().parents[1]

MODEL = '''
import numpy as np
from resilient.distributions import HalfNormal, Normal
from resilient.model import sample

_rng = np.random.default_rng(7)
data = {"y": 1.0 + 0.5 * _rng.standard_normal(30)}


def model(y):
    mu = sample("mu", Normal(0, 5))
    sigma = sample("sigma", HalfNormal(2))
    sample("y", Normal(mu, sigma), obs=y)


def broken(y):
    mu = sample("mu", Normal(0, -1.0))
    sample("y", Normal(mu, 1.0), obs=y)
'''


def resilient_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "resilient", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=600, env={**__import__("os").environ, "CI": "true"})


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "agree_model.py"
    path.write_text(MODEL)
    return path


def fake_run(shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return to_datatree({"mu": rng.normal(shift, 1, size=(4, 1000)), "sigma": rng.gamma(4, 0.5, size=(4, 1000))},
                       {"diverging": np.zeros((4, 1000), bool)})


@pytest.mark.parametrize("shift, code", [(0.0, 0), (0.3, 1)])
def test_exit_code_and_json_follow_the_verdict(model_file, tmp_path, monkeypatch, capsys, shift, code):
    """The command's own logic on a given comparison: independent draws of one posterior agree (exit 0); a
    mean shifted by about 13 combined MCSEs differs (exit 1), and both say so in the table and the JSON."""
    calls = {}

    def fake_check_agreement(model, **kwargs):
        calls.update(kwargs)
        return compare(fake_run(seed=1), fake_run(shift=shift, seed=2))

    monkeypatch.setattr("resilient.agreement.check_agreement", fake_check_agreement)
    out = tmp_path / "agreement.json"
    assert cli.main(["check-agreement", f"{model_file}:model", "--draws", "300", "--seed", "5",
                     "--json", str(out), "--quiet"]) == code
    assert calls["draws"] == 300 and calls["random_seed"] == 5 and calls["y"].shape == (30,)
    printed = capsys.readouterr().out
    document = json.loads(out.read_text())
    assert document["ok"] is (code == 0) and document["backends"] == ["numpyro", "pymc"]
    rows = {row["name"]: row for row in document["parameters"]}
    assert set(rows) == {"mu", "sigma"} and rows["sigma"]["verdict"] == "agree"
    assert rows["mu"]["verdict"] == ("agree" if code == 0 else "differ")
    assert rows["mu"]["difference"] == pytest.approx(rows["mu"]["means"][0] - rows["mu"]["means"][1])
    assert (abs(rows["mu"]["z_mean"]) > document["critical_z"]) is (code == 1)
    assert "z (mean)" in printed and ("differ: mu" in printed) is (code == 1)


def test_usage_and_model_errors_exit_2(model_file):
    assert resilient_cli("check-agreement", "no/such/model.py").returncode == 2
    native = resilient_cli("check-agreement", f"{ROOT / 'examples' / 'sbc_models.py'}:normal_numpyro")
    assert native.returncode == 2 and "shared-API model" in native.stderr
    broken = resilient_cli("check-agreement", f"{model_file}:broken", "--quiet")
    assert broken.returncode == 2 and "mu" in broken.stderr and "Traceback" not in broken.stderr, broken.stderr
    assert "exit codes" in resilient_cli("check-agreement", "--help").stdout


@pytest.mark.numpyro
@pytest.mark.pymc
@pytest.mark.slow  # a NumPyro run and a PyMC run in a subprocess
def test_check_agreement_runs_both_backends_and_writes_json(model_file, tmp_path):
    out = tmp_path / "agreement.json"
    result = resilient_cli("check-agreement", f"{model_file}:model", "--draws", "1000", "--tune", "500",
                           "--chains", "2", "--seed", "3", "--json", str(out), "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(out.read_text())
    assert document["ok"] and document["differing"] == []
    rows = {row["name"]: row for row in document["parameters"]}
    assert set(rows) == {"mu", "sigma"}
    for row in rows.values():
        assert row["verdict"] == "agree" and abs(row["z_mean"]) <= document["critical_z"]
    y = 1.0 + 0.5 * np.random.default_rng(7).standard_normal(30)
    # the posterior mean of mu is near the sample mean (sd of the mean about 0.5 / sqrt(30) = 0.09)
    assert all(abs(m - y.mean()) < 0.05 for m in rows["mu"]["means"])
    assert "verdict: agree" in result.stdout
