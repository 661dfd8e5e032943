"""A run SIGKILLed mid-sampling resumes on every engine: exactly the draws asked for, no warm-up again (nutpie:
a short re-adaptation, recorded), a posterior that agrees with the uninterrupted run's; another model, other
data or other settings are refused by name. The sampler state is a plain JSON + .npz record."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import resilient
from examples import pathologies, reference_models
from resilient import record
from resilient.checkpoint import read_checkpoint, read_state
from resilient.resumption import READAPT_TUNE
from resilient.sampler_state import SamplerState, fingerprint_differences

ROOT = Path(__file__).resolve().parents[1]
_, DATA, _ = reference_models.load("sblrc-blr")
SETTINGS = dict(tune=300, chains=2, random_seed=11, progressbar=False)

CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import resilient
    from examples import reference_models
    _, data, _ = reference_models.load("sblrc-blr")
    resilient.sample(reference_models.blr, backend={backend!r}, engine={engine!r}, draws={draws}, tune=300, chains=2,
                     random_seed=11, progressbar=False, checkpoint={folder!r}, policy=resilient.Policy(chunk_size=50),
                     **data)
""")


def _killed_run(folder: Path, backend: str, engine: str, draws: int) -> None:
    """Start the run in a child process and SIGKILL it once every chain has a sampler state after warm-up
    and a few chunks are on disk."""
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(root=str(ROOT), backend=backend, engine=engine,
                                                                 draws=draws, folder=str(folder))],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    state = folder / "attempt-01" / "state.json"
    try:
        while True:
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no sampler state reached the disk within 240 s"
            with contextlib.suppress(OSError, ValueError):
                saved = json.loads(state.read_text())
                if saved["chains"] == [0, 1] and min(saved["draws_done"]) >= 100:
                    break
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    assert min(read_state(folder).draws_done) < draws, "the run was killed before every chain finished"


def _agree_within_mcse(resumed, uninterrupted) -> None:
    from arviz_stats.base import array_stats

    for name in ("beta", "sigma"):
        a = resumed.posterior[name].values.reshape(2, resumed.posterior.sizes["draw"], -1)
        b = uninterrupted.posterior[name].values.reshape(2, uninterrupted.posterior.sizes["draw"], -1)
        for k in range(a.shape[-1]):
            error = np.hypot(float(array_stats.mcse(a[..., k], chain_axis=0, draw_axis=1, method="mean")),
                             float(array_stats.mcse(b[..., k], chain_axis=0, draw_axis=1, method="mean")))
            assert abs(a[..., k].mean() - b[..., k].mean()) < 5 * error, (name, k)


def _resumed_attempt(data) -> dict:
    attempt = record.read_attempts(data)[-1]
    assert attempt["outcome"] == "accepted", attempt["message"]
    assert record.read_run(data)["resumed_from"].endswith("attempt-01")
    return attempt


@pytest.mark.slow
@pytest.mark.numpyro
def test_a_killed_numpyro_run_resumes_bitwise(tmp_path):
    folder = tmp_path / "run"
    _killed_run(folder, "numpyro", "numpyro", draws=6000)
    saved = read_state(folder)
    resumed = resilient.resume(str(folder), reference_models.blr, draws=6000, progressbar=False, **DATA)
    assert resumed.posterior.sizes["draw"] == 6000 and resumed.posterior.sizes["chain"] == 2
    attempt = _resumed_attempt(resumed)
    assert attempt["settings"]["resumed"]["warmup_iterations_run"] == [0, 0], "no warm-up ran again"
    assert attempt["settings"]["resumed"]["draws_done"] == [int(n) for n in saved.draws_done]
    state = resumed["sampler_state"]
    assert state["draws_done"].values.tolist() == [6000, 6000]
    assert np.array_equal(state["step_size"].values, saved.step_size), "the adapted step size is the saved one"
    assert np.array_equal(state["inverse_mass_matrix"].values, saved.inverse_mass_matrix)
    # attempt 1 only, as the killed run's: on some CPU the loop could otherwise continue the chains or retry
    uninterrupted = resilient.sample(reference_models.blr, backend="numpyro", engine="numpyro", draws=6000,
                                     policy=resilient.Policy(chunk_size=50, max_attempts=1), **SETTINGS, **DATA)
    for name in ("beta", "sigma"):  # NumPyro takes its whole state back: the same draws, bit for bit
        assert np.array_equal(resumed.posterior[name].values, uninterrupted.posterior[name].values), name
    assert read_checkpoint(folder).posterior.sizes["draw"] == 6000, "the checkpoint holds the whole run too"


@pytest.mark.slow
@pytest.mark.pymc
def test_a_killed_pymc_run_resumes_without_warmup(tmp_path):
    folder = tmp_path / "run"
    _killed_run(folder, "pymc", "pymc", draws=3000)
    saved = read_state(folder)
    resumed = resilient.resume(str(folder), reference_models.blr, backend="pymc", draws=3000, progressbar=False,
                               **DATA)
    assert resumed.posterior.sizes["draw"] == 3000 and resumed.posterior.sizes["chain"] == 2
    attempt = _resumed_attempt(resumed)
    assert attempt["settings"]["resumed"]["tune"] == 0 and attempt["settings"]["resumed"]["warmup_iterations_run"] == [0, 0]
    for row, chain in enumerate(saved.chains):  # the first resumed draw used the saved step size ...
        done = int(saved.draws_done[row])
        if done == 3000:  # a chain that had finished (PyMC's default runs the chains one by one on 2 CPUs)
            continue
        assert resumed.sample_stats["step_size_bar"].values[chain, done] == pytest.approx(saved.step_size[row])
    # ... and the NUTS step's potential held the saved mass matrix (the state reads it back from the step)
    np.testing.assert_allclose(resumed["sampler_state"]["inverse_mass_matrix"].values, saved.inverse_mass_matrix)
    assert resumed["sampler_state"]["draws_done"].values.tolist() == [3000, 3000]
    uninterrupted = resilient.sample(reference_models.blr, backend="pymc", engine="pymc", draws=3000, **SETTINGS,
                                     **DATA)
    _agree_within_mcse(resumed, uninterrupted)


@pytest.mark.slow
@pytest.mark.pymc
def test_a_killed_nutpie_run_resumes_after_a_short_readaptation(tmp_path):
    folder = tmp_path / "run"
    _killed_run(folder, "pymc", "nutpie", draws=100_000)
    saved = read_state(folder)
    assert saved.adaptation == "re-adapt" and np.all(np.isfinite(saved.inverse_mass_matrix))
    resumed = resilient.resume(str(folder), reference_models.blr, backend="pymc", engine="nutpie", draws=100_000,
                               progressbar=False, **DATA)
    assert resumed.posterior.sizes["draw"] == 100_000 and resumed.posterior.sizes["chain"] == 2
    attempt = _resumed_attempt(resumed)
    short = min(SETTINGS["tune"], READAPT_TUNE)
    assert attempt["settings"]["resumed"]["warmup_iterations_run"] == [short, short]
    assert "adapted again" in attempt["message"]
    uninterrupted = resilient.sample(reference_models.blr, backend="pymc", engine="nutpie", draws=100_000,
                                     **SETTINGS, **DATA)
    _agree_within_mcse(resumed, uninterrupted)


# --- refusals and the record (fast) ---


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A short finished NumPyro run with its checkpoint (one attempt: its diagnostics are not the point)."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", resilient.ResilientWarning)
        data = resilient.sample(reference_models.blr, backend="numpyro", draws=100, tune=100, chains=2, random_seed=5,
                                progressbar=False, checkpoint=str(folder), max_attempts=1, **DATA)
    return folder, data


@pytest.mark.slow  # 20 s cold (the fixture's run), less warm
@pytest.mark.numpyro
def test_resuming_with_other_data_another_model_or_other_settings_is_refused(finished):
    folder, _ = finished
    other = dict(DATA, y=DATA["y"] + 1.0)
    with pytest.raises(resilient.ResilientError, match=r"other data: the data differ: .*observed `y`"):
        resilient.resume(str(folder), reference_models.blr, draws=200, progressbar=False, **other)
    with pytest.raises(resilient.ResilientError, match=r"another model.*the model is 'mirrored'"):
        resilient.resume(str(folder), pathologies.mirrored, draws=200, progressbar=False)
    with pytest.raises(resilient.ResilientError, match=r"Resume refused: chains=4 \(the checkpoint's run: 2\)"):
        resilient.resume(str(folder), reference_models.blr, draws=200, chains=4, progressbar=False, **DATA)
    with pytest.raises(resilient.ResilientError, match=r"engine='pymc', but the run .* ran on 'numpyro'"):
        resilient.resume(str(folder), resilient.compile(reference_models.blr, engine="pymc", **DATA), draws=200,
                         progressbar=False)


@pytest.mark.slow  # the fixture's run
@pytest.mark.numpyro
def test_the_state_is_json_and_npz_and_reads_back(finished):
    folder, data = finished
    for attempt in folder.glob("attempt-*"):
        names = {p.name for p in attempt.iterdir()}
        assert "state.json" in names and json.loads((attempt / "state.json").read_text())["arrays"] in names
        assert len([n for n in names if n.endswith(".npz")]) == 1, "earlier saves' arrays are removed"
        assert not list(attempt.glob("*.pkl"))
    attempt = sorted(folder.glob("attempt-*"))[-1]  # the loop may have retried: the last attempt's state
    saved = json.loads((attempt / "state.json").read_text())
    returned = record.read_attempts(data)[-1]["settings"]
    assert saved["engine"] == "numpyro" and saved["draws_done"] == [data.posterior.sizes["draw"]] * 2
    assert saved["tune_done"] == [returned["tune"]] * 2
    state = read_state(folder)
    assert state.positions.shape == (2, state.dimension)
    assert state.inverse_mass_matrix.shape in ((2, state.dimension), (2, state.dimension, state.dimension))
    assert np.array_equal(state.step_size, data.sample_stats["step_size"].values[:, -1])
    group = read_checkpoint(folder)["sampler_state"]
    assert group["step_size"].dims == ("chain",) and group["inverse_mass_matrix"].dims[:2] == ("chain", "unconstrained")
    assert fingerprint_differences(state.fingerprint, state.fingerprint) == []


def test_an_old_pickled_state_is_refused_clearly(tmp_path):
    (tmp_path / "attempt-01").mkdir()
    (tmp_path / "attempt-01" / "state.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(resilient.ResilientError, match=r"older Resilient \(state.pkl, a pickle\)"):
        read_state(tmp_path)


def test_a_state_round_trips_with_a_dense_mass_matrix(tmp_path):
    rng = np.random.default_rng(0)
    state = SamplerState("pymc", (0, 1), rng.normal(size=(2, 3)), np.array([0.5, 0.4]), np.array([10, 12]),
                         np.array([100, 100]), inverse_mass_matrix=rng.normal(size=(2, 3, 3)), mass_matrix="full",
                         settings={"tune": 100}, fingerprint={"model": "m"}, native={"x": np.arange(2)})
    state.save(tmp_path)
    back = SamplerState.load(tmp_path)
    assert back.chains == (0, 1) and back.mass_matrix == "full" and back.native["x"].tolist() == [0, 1]
    for name in ("positions", "step_size", "draws_done", "tune_done", "inverse_mass_matrix"):
        assert np.array_equal(getattr(back, name), getattr(state, name)), name
    group = back.to_dataset()
    assert group["inverse_mass_matrix"].dims == ("chain", "unconstrained", "unconstrained_bis")


@pytest.mark.parametrize("killed_at", ["arrays", "json", "clean-up"])
def test_a_save_killed_at_any_write_leaves_a_state_whose_counts_and_arrays_match(tmp_path, monkeypatch, killed_at):
    """A SIGKILL can land between any two of a save's writes: what reads back is one save, whole (the chunk
    before's counts with the chunk before's arrays, or the new with the new), never a mix."""
    before = _state(positions=np.zeros((2, 2)), native={"key": np.array([1, 2])})
    after = _state(positions=np.ones((2, 2)), draws_done=np.array([90, 90]), native={"key": np.array([3, 4])})
    before.save(tmp_path)
    real_replace, real_unlink = os.replace, Path.unlink

    class Killed(BaseException):
        pass

    def replace(source, target):
        if (killed_at == "arrays" and str(target).endswith(".npz")) or (
                killed_at == "json" and str(target).endswith("state.json")):
            raise Killed(f"killed at {killed_at}")
        real_replace(source, target)

    def unlink(path, missing_ok=False):
        if killed_at == "clean-up":
            raise Killed(f"killed at {killed_at}")
        real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(Killed, match=f"killed at {killed_at}"):
        after.save(tmp_path)
    monkeypatch.undo()
    back = SamplerState.load(tmp_path)
    expected = after if killed_at == "clean-up" else before
    assert back.draws_done.tolist() == expected.draws_done.tolist()
    assert np.array_equal(back.positions, expected.positions)
    assert back.native["key"].tolist() == expected.native["key"].tolist()
    after.save(tmp_path)  # the next save goes on and leaves one arrays file
    assert len(list(tmp_path.glob("*.npz"))) == 1 and SamplerState.load(tmp_path).draws_done.tolist() == [90, 90]


def _state(**changes):
    base = dict(engine="numpyro", chains=(0, 1), positions=np.zeros((2, 2)), step_size=np.array([0.5, 0.6]),
                draws_done=np.array([40, 40]), tune_done=np.array([50, 50]), attempt=1,
                settings={"tune": 50, "target_accept": 0.8, "max_tree_depth": 10, "mass_matrix": "diag", "chains": 2},
                fingerprint={"model": "mirrored", "latents": {"mu": 1, "V": 1}, "sites": {}, "precision": "float64",
                             "data": {"observed `y`": "ab"}})
    base.update(changes)
    return SamplerState(**base)


def test_other_settings_are_refused_by_name_before_anything_runs(tmp_path):
    (tmp_path / "attempt-01").mkdir(parents=True)
    (tmp_path / "meta.json").write_text(json.dumps({"draws": 100, "tune": 50, "chains": 2, "target_accept": 0.8,
                                                    "random_seed": 3}))
    _state().save(tmp_path / "attempt-01")
    for option, message in (({"chains": 4}, r"chains=4 \(the checkpoint's run: 2\)"),
                            ({"target_accept": 0.95}, r"target_accept=0.95 \(the checkpoint's run: 0.8\)"),
                            ({"random_seed": 4}, r"random_seed=4 \(the checkpoint's run: 3\)"),
                            ({"mass_matrix": "full"}, r"mass_matrix='full' \(the checkpoint's run: 'diag'\)")):
        with pytest.raises(resilient.ResilientError, match="Resume refused: " + message):
            resilient.resume(str(tmp_path), pathologies.mirrored, progressbar=False, **option)


def test_fingerprint_differences_name_the_model_the_latents_and_the_data():
    saved = _state().fingerprint
    other = {**saved, "model": "blr", "latents": {"mu": 1, "V": 3, "tau": 1}, "data": {"observed `y`": "cd"}}
    found = " | ".join(fingerprint_differences(saved, other))
    assert "the model is 'blr', the checkpoint's is 'mirrored'" in found
    assert "latents `tau` are new" in found and "`V` has 3 unconstrained values, not 1" in found
    assert "the data differ: observed `y` (other values)" in found
    assert fingerprint_differences(saved, dict(saved)) == []


@pytest.mark.slow  # ~20 s: two short NumPyro attempts and a resume
def test_a_run_the_loop_non_centred_resumes_non_centred_and_to_its_own_draws(tmp_path):
    """The loop's remedy is part of the run: resuming a run whose accepted attempt non-centred `theta` samples the
    non-centred model again (before, the fingerprints differed and the resume blamed the user's model), and a
    resume without ``draws`` asks for the run's own draws (``resilient.resume`` passed 1000)."""
    from resilient.distributions import HalfCauchy, Normal
    from resilient.model import sample

    y, s = np.array([28.0, 8, -3, 7, -1, 1, 18, 12]), np.array([15.0, 10, 16, 11, 9, 11, 10, 18])

    def schools(y, s):
        mu, tau = sample("mu", Normal(0, 5)), sample("tau", HalfCauchy(5))
        theta = sample("theta", Normal(mu, tau, shape=8))
        sample("y", Normal(theta, s), observed=y)

    folder = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", resilient.ResilientWarning)
        first = resilient.sample(schools, y, s, backend="numpyro", draws=300, tune=300, chains=2, random_seed=3,
                                 checkpoint=str(folder), progressbar=False,
                                 policy=resilient.Policy(remedies=("noncenter",), retry_divergences=True))
    noncentred = [a["settings"]["noncentered"] for a in record.read_attempts(first)]
    if noncentred[-1] != ["theta"]:
        pytest.skip(f"this machine's first attempt was accepted centred ({noncentred}); nothing to resume non-centred")
    extended = resilient.resume(str(folder), schools, y, s, draws=400, progressbar=False)
    assert extended.posterior.sizes["draw"] == 400
    again = resilient.resume(str(folder), schools, y, s, progressbar=False)  # the run's own draws: now 400
    assert again.posterior.sizes["draw"] == 400
