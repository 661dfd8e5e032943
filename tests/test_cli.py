"""The command line end to end, in subprocesses: exit codes, files written, help with examples."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHOLOGIES = str(ROOT / "examples" / "pathologies.py")
SBC_MODELS = str(ROOT / "examples" / "sbc_models.py")


def resilient_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "resilient", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=600, env={**__import__("os").environ, "CI": "true"})


def test_help_lists_commands_and_examples():
    result = resilient_cli("--help")
    assert result.returncode == 0
    assert "preflight" in result.stdout and "examples:" in result.stdout
    for command in ("preflight", "sample", "report", "sample-many", "sbc"):
        sub = resilient_cli(command, "--help")
        assert sub.returncode == 0 and "examples:" in sub.stdout and "exit codes" in sub.stdout


def test_usage_errors_exit_2():
    assert resilient_cli("preflight", "no/such/model.py").returncode == 2
    missing = resilient_cli("preflight", f"{PATHOLOGIES}:nothing_here")
    assert missing.returncode == 2 and "defines no 'nothing_here'" in missing.stderr
    ambiguous = resilient_cli("preflight", PATHOLOGIES)
    assert ambiguous.returncode == 2 and "candidate models" in ambiguous.stderr
    assert resilient_cli("frobnicate").returncode == 2


BROKEN_MODEL_FILES = {  # file text, the line named, the error named
    "syntax": ("import math\n\ndef model(:\n    pass\n", 3, "SyntaxError: invalid syntax"),
    "import": ("import math\nimport no_such_module_for_resilient_tests\n\ndef model():\n    pass\n", 2,
               "ModuleNotFoundError: No module named 'no_such_module_for_resilient_tests'"),
    "exception": ("x = 1\nraise RuntimeError('boom while building the data')\n\ndef model():\n    pass\n", 2,
                  "RuntimeError: boom while building the data"),
}
BROKEN_MODEL_COMMANDS = {
    "preflight": (), "sample": ("--out", "{tmp}/run.nc"), "sample-many": ("--datasets", "{tmp}/d.jsonl", "--out", "{tmp}/o"),
    "sbc": ("--out", "{tmp}/s"), "check-agreement": (),
}


@pytest.mark.parametrize("command", sorted(BROKEN_MODEL_COMMANDS))
@pytest.mark.parametrize("broken", sorted(BROKEN_MODEL_FILES))
def test_a_model_file_that_does_not_load_is_a_usage_error(tmp_path, capsys, broken, command):
    """Exit 2 and one line naming the file, the line and the error, before any backend runs (no traceback)."""
    from resilient.cli import main

    text, line, error = BROKEN_MODEL_FILES[broken]
    model_file = tmp_path / f"broken_{broken}.py"
    model_file.write_text(text)
    (tmp_path / "d.jsonl").write_text('{"y": [1.0]}\n')
    options = [option.format(tmp=tmp_path) for option in BROKEN_MODEL_COMMANDS[command]]
    assert main([command, f"{model_file}:model", *options]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    message = captured.err.strip()
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(f"resilient {command}: error: model file {model_file}, line {line}: {error}")
    assert not [name for name in sys.modules if name.startswith("resilient_user_model_") and
                getattr(sys.modules[name], "__file__", "") == str(model_file)]  # a failed load leaves no module


def test_a_broken_model_file_exits_2_without_a_traceback_from_the_command_line(tmp_path):
    model_file = tmp_path / "broken.py"
    model_file.write_text(BROKEN_MODEL_FILES["syntax"][0])
    result = resilient_cli("preflight", f"{model_file}:model")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"resilient preflight: error: model file {model_file}, line 3: SyntaxError: "
                                     "invalid syntax (def model(:). Fix the file and run again.")


def test_the_cli_and_many_fits_load_a_model_file_once_under_one_module_name(tmp_path):
    from resilient import loading, many

    model_file = tmp_path / "counted.py"
    model_file.write_text("import builtins\nbuiltins.resilient_test_loads = getattr(builtins, 'resilient_test_loads', 0) + 1\n"
                          "\ndef model():\n    pass\n")
    import builtins

    try:
        model, data = loading.load_model(f"{model_file}:model")
        assert data == {}
        assert many.load_reference(f"{model_file}:model") is model
        assert many.ModelSpec.of(str(model_file) + ":model").load() is model
        assert model.__module__ == loading.module_name(model_file)
        assert builtins.resilient_test_loads == 1
    finally:
        del builtins.resilient_test_loads
        sys.modules.pop(loading.module_name(model_file), None)
    with pytest.raises(loading.ModelFileError, match="must be 'file.py:name'"):
        many.ModelSpec.of("no_name_here")


def test_a_model_file_edited_between_two_calls_is_loaded_again(tmp_path):
    """Was: a model file was imported once per process, so a session that edited it and called again (the CLI's
    own process aside: a notebook's sample_many, a long-lived worker) sampled the old model."""
    from resilient import loading, many

    model_file = tmp_path / "edited.py"
    model_file.write_text("LOC = 0.0\n\ndef model():\n    return LOC\n")
    try:
        first = many.load_reference(f"{model_file}:model")
        spec = many.ModelSpec.of(f"{model_file}:model")
        assert first() == 0.0 and many.load_reference(f"{model_file}:model") is first, "unchanged: loaded once"
        model_file.write_text("LOC = 10.0\n\ndef model():\n    return LOC\n")
        again = many.load_reference(f"{model_file}:model")
        assert again() == 10.0 and loading.load_model(f"{model_file}:model")[0] is again
        assert many.ModelSpec.of(f"{model_file}:model").key != spec.key, "workers key the edited file apart"
    finally:
        sys.modules.pop(loading.module_name(model_file), None)


@pytest.mark.numpyro
def test_preflight_exit_codes_and_json():
    broken = resilient_cli("preflight", f"{PATHOLOGIES}:motivating", "--no-fix", "--json")
    assert broken.returncode == 1, broken.stderr
    report = json.loads(broken.stdout)
    assert report["status"] == "error"
    assert any(f["site"] == "V" and f["parameter"] == "sigma" and f["severity"] == "error" for f in report["findings"])
    fixed = resilient_cli("preflight", f"{PATHOLOGIES}:motivating")
    assert fixed.returncode == 0, fixed.stderr
    assert "fixed" in fixed.stdout and "HalfNormal(sigma)" in fixed.stdout
    negative = resilient_cli("preflight", f"{PATHOLOGIES}:negative_scale")
    assert negative.returncode == 1 and "`sigma` must be positive and finite, got -1" in negative.stdout


@pytest.mark.numpyro
@pytest.mark.pymc
@pytest.mark.slow  # two interpreters; test_preflight_exit_codes_and_json covers the CLI by default
def test_preflight_on_both_backends():
    result = resilient_cli("preflight", f"{PATHOLOGIES}:mirrored", "--backend", "both", "--json")
    assert result.returncode == 0, result.stderr
    assert [r["backend"] for r in json.loads(result.stdout)] == ["numpyro", "pymc"]


@pytest.mark.numpyro
@pytest.mark.slow  # three interpreters start and sample: about 10 s
def test_sample_then_report(tmp_path):
    run = tmp_path / "run.nc"
    result = resilient_cli("sample", f"{PATHOLOGIES}:mirrored", "--draws", "300", "--tune", "300", "--seed", "1",
                           "--out", str(run), "--report", str(tmp_path / "report"), "--quiet")
    assert result.returncode == 0, result.stderr
    assert run.is_file() and (tmp_path / "report" / "report.html").is_file()
    assert any((tmp_path / "run-checkpoint").glob("attempt-01/chunk-*.nc"))
    again = resilient_cli("report", str(run), "--out", str(tmp_path / "again"), "--format", "json,md")
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "again" / "report.json").read_text())["run"]
    assert (tmp_path / "again" / "report.md").is_file() and not (tmp_path / "again" / "report.html").exists()
    bad = resilient_cli("report", str(run), "--format", "pdf")
    assert bad.returncode == 2 and "--format must list some of html, md, json" in bad.stderr
    # --resume continues the checkpointed run (here: extends it to 400 draws per chain)
    more = tmp_path / "more.nc"
    resumed = resilient_cli("sample", f"{PATHOLOGIES}:mirrored", "--resume", str(tmp_path / "run-checkpoint"),
                            "--draws", "400", "--out", str(more), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    import xarray as xr

    assert xr.open_datatree(more).posterior.sizes["draw"] == 400


def test_many_fit_commands_refuse_bad_input_with_exit_2(tmp_path):
    missing = resilient_cli("sample-many", f"{SBC_MODELS}:normal", "--datasets", str(tmp_path / "none.jsonl"),
                            "--out", str(tmp_path / "out"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"N": 5, "y": [1, 2, 3, 4, 5]}\n[1, 2]\n')
    result = resilient_cli("sample-many", f"{SBC_MODELS}:normal", "--datasets", str(bad), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "line 2: each line must be a JSON object" in result.stderr
    assert resilient_cli("sbc", "no/such/model.py", "--out", str(tmp_path / "s")).returncode == 2
    assert resilient_cli("sbc", f"{SBC_MODELS}:normal").returncode == 2  # --out is required


@pytest.mark.numpyro
@pytest.mark.slow  # a local cluster starts and fits three data sets: about 20 s
def test_sample_many_through_the_cli(tmp_path):
    datasets = tmp_path / "sites.jsonl"
    datasets.write_text("\n".join(json.dumps(line) for line in (
        {"_id": "north", "y": [0.1, 0.5, -0.2, 0.3, 0.0]},
        {"_id": "south", "y": [None, 0.5, -0.2, 0.3, 0.0]},  # null -> NaN: preflight refuses it
        {"_id": "east", "y": [1.1, 1.5, 0.8, 1.3, 1.0]})) + "\n")
    out = tmp_path / "fits"
    result = resilient_cli("sample-many", f"{SBC_MODELS}:normal", "--datasets", str(datasets), "--out", str(out),
                           "--workers", "2", "--draws", "200", "--tune", "200", "--chains", "2")
    assert result.returncode == 1, result.stderr  # one fit failed: listed, with its reason
    assert "south: failed: PreflightError" in result.stderr and "2 ok, 1 failed" in result.stderr
    assert (out / "fits" / "north.nc").is_file() and (out / "fits" / "east.nc").is_file()
    again = resilient_cli("sample-many", f"{SBC_MODELS}:normal", "--datasets", str(datasets), "--out", str(out),
                          "--workers", "1", "--draws", "200", "--tune", "200", "--chains", "2")
    assert again.returncode == 1 and "3 were already done" in again.stderr
