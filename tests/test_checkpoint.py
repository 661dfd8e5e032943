"""Nothing finished is lost: chunks on disk survive SIGKILL; a finished run is extended from its state
(resuming a killed run on every engine: test_resume.py)."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import warnings
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import resilient
from examples import pathologies
from resilient.backend import Chunk
from resilient.checkpoint import Checkpoint, read_checkpoint
from resilient.errors import ResilientWarning

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import resilient
    from examples import reference_models
    _, data, _ = reference_models.load("sblrc-blr")
    resilient.sample(reference_models.blr, backend={backend!r}, engine={engine!r}, draws=1_000_000, tune=200, chains=2,
                     cores=2, random_seed=1, progressbar=False, checkpoint={folder!r}, **data)
""")  # cores=2: PyMC's chains in worker processes (its default on a 2-CPU machine runs them in this one)


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state, ppid, ...), or None when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"  # a zombie has exited; only its parent's reaping is left


@pytest.mark.parametrize("backend, engine", [pytest.param("numpyro", "auto", marks=pytest.mark.numpyro),
                                             pytest.param("pymc", "pymc", marks=[pytest.mark.pymc, pytest.mark.slow]),
                                             pytest.param("pymc", "nutpie", marks=[pytest.mark.pymc, pytest.mark.slow])])
def test_sigkill_leaves_every_finished_chunk_readable(backend, engine, tmp_path):
    folder = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(root=str(ROOT), backend=backend, engine=engine,
                                                                 folder=str(folder))],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while len(list(folder.glob("attempt-01/chunk-*.nc"))) < 3:
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no chunk reached the disk within 240 s"
            time.sleep(0.2)
        workers = _children(child.pid) if sys.platform.startswith("linux") else []
    finally:
        with contextlib.suppress(ProcessLookupError):  # the child may have died already: its error is the news
            os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        child.stderr.close()
    try:
        if engine == "pymc" and sys.platform.startswith("linux"):
            # PyMC's chain workers would outlive a SIGKILLed parent (each holds its siblings' pipe
            # ends, so none sees EOF); the adapter's mp_ctx makes them die with it.
            assert len(workers) == 2, f"expected 2 chain workers, found {workers}"
            deadline = time.monotonic() + 30
            while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not any(_alive(pid) for pid in workers), f"chain workers {workers} outlived their parent"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == -signal.SIGKILL
    files = sorted(folder.glob("attempt-01/chunk-*.nc"))
    per_chain = {}
    for file in files:
        with xr.open_dataset(file) as chunk:  # a plain netCDF file any reader opens
            for chain in chunk["chain"].values.tolist():
                per_chain[chain] = per_chain.get(chain, 0) + chunk.sizes["draw"]
    data = read_checkpoint(folder)
    assert data.posterior.sizes["draw"] == min(per_chain.values()) > 0
    assert np.all(np.isfinite(data.posterior["beta"].values))


@pytest.mark.numpyro
@pytest.mark.slow  # 7 s cold; CI runs it
def test_a_finished_numpyro_run_is_extended_from_its_checkpoint(tmp_path):
    folder = str(tmp_path / "run")
    # one attempt: the loop does not run the chains longer itself (more_draws), so 300 stay 300
    first = resilient.sample(pathologies.mirrored, draws=300, random_seed=3, progressbar=False, checkpoint=folder,
                             policy=resilient.Policy(max_attempts=1))
    assert first.posterior.sizes["draw"] == 300
    second = resilient.resume(folder, pathologies.mirrored, draws=600, progressbar=False)
    assert second.posterior.sizes["draw"] == 600, "resume's draws are the whole run's: 300 more here"
    assert np.array_equal(second.posterior["mu"].values[:, :300], first.posterior["mu"].values)
    step_before = first.sample_stats["step_size"].values[:, -1]
    step_after = second.sample_stats["step_size"].values[:, 300]
    assert np.allclose(step_before, step_after), "the adapted step size carries over: no new warm-up"
    assert np.allclose(second["sampler_state"]["step_size"].values, step_before)
    combined = read_checkpoint(folder)
    assert combined.posterior.sizes["draw"] == 600
    assert np.array_equal(combined.posterior["mu"].values, second.posterior["mu"].values)


STATS = {"diverging": np.array([[True, False, False], [False, True, False]]),
         "tree_depth": np.full((2, 3), 3, np.int64), "lp": np.array([[-1.5, -2.0, -1.0], [-0.5, -3.0, -2.5]], np.float32)}


def _written(tmp_path, posterior):
    store = Checkpoint(tmp_path, {})
    store.start_attempt(1)
    store.write_chunk(Chunk((0, 1), 0, False, posterior, STATS))
    (file,) = (tmp_path / "attempt-01").glob("chunk-*.nc")
    return file.read_bytes()[:4], read_checkpoint(tmp_path)


def test_chunk_files_are_classic_netcdf_and_keep_values_and_types(tmp_path):
    posterior = {"flag": np.ones((2, 3), np.uint8), "small": np.arange(6, dtype=np.int64).reshape(2, 3),
                 "x": np.arange(12.0).reshape(2, 3, 2), "half": np.full((2, 3), 0.5, np.float16)}
    magic, data = _written(tmp_path, posterior)
    assert magic[:3] == b"CDF"
    assert data.posterior["small"].dtype == np.int64 and data.posterior["small"].values.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert data.posterior["flag"].dtype == np.int64 and data.sample_stats["tree_depth"].dtype == np.int64
    assert data.sample_stats["diverging"].dtype == bool
    assert data.sample_stats["diverging"].values.tolist() == STATS["diverging"].tolist()
    assert data.sample_stats["lp"].dtype == np.float32 and data.posterior["half"].dtype == np.float32
    assert data.posterior["x"].values.tolist() == posterior["x"].tolist()


@pytest.mark.parametrize("name, values", [
    ("β", np.arange(6.0).reshape(2, 3)),  # SciPy writes names as Latin-1
    ("count", np.array([[1, 2, 3], [4, 5, 6]], np.int64) + 2**53),  # past int32 (and float64)
    ("z", np.full((2, 3), 1 + 2j)),
    ("empty", np.zeros((2, 3, 0))),  # a zero-length dimension is the unlimited one in classic netCDF
])
def test_a_chunk_classic_netcdf_cannot_hold_is_written_as_netcdf4(tmp_path, name, values):
    magic, data = _written(tmp_path, {name: values})
    assert magic == b"\x89HDF"
    assert data.posterior[name].dtype == values.dtype and data.posterior[name].shape == values.shape
    assert data.posterior[name].values.tolist() == values.tolist()


def test_older_netcdf4_chunks_still_read(tmp_path):
    older = tmp_path / "old" / "attempt-01"
    older.mkdir(parents=True)
    xr.Dataset({"posterior__x": (["chain", "draw", "x_dim_0"], np.full((2, 3, 2), 9.0)),
                "sample_stats__diverging": (["chain", "draw"], np.ones((2, 3), bool))},
               coords={"chain": [0, 1], "draw": [0, 1, 2]}).to_netcdf(older / "chunk-000001.nc", engine="h5netcdf")
    old = read_checkpoint(tmp_path / "old")
    assert (old.posterior["x"].values == 9.0).all() and old.posterior["x"].shape == (2, 3, 2)
    assert old.sample_stats["diverging"].values.all()


def test_a_new_run_sets_an_earlier_run_in_the_same_folder_aside(tmp_path):
    first = Checkpoint(tmp_path, {"run": 1})
    first.start_attempt(1)
    first.write_chunk(Chunk((0, 1), 0, False, {"x": np.zeros((2, 3))}, STATS))
    resumed = Checkpoint(tmp_path, {"run": 1})  # a resumed run keeps adding to the same attempt
    resumed.start_attempt(1)
    resumed.write_chunk(Chunk((0, 1), 3, False, {"x": np.ones((2, 3))}, STATS))
    assert read_checkpoint(tmp_path).posterior["x"].shape == (2, 6)
    with pytest.warns(ResilientWarning, match=r"held an earlier run; it was moved to .*previous-1"):
        second = Checkpoint(tmp_path, {"run": 2}, fresh=True)
    second.start_attempt(1)
    second.write_chunk(Chunk((0, 1), 0, False, {"x": np.full((2, 3), 2.0)}, STATS))
    assert (read_checkpoint(tmp_path).posterior["x"].values == 2.0).all()
    assert read_checkpoint(tmp_path).posterior["x"].shape == (2, 3)
    earlier = read_checkpoint(tmp_path / "previous-1")
    assert earlier.posterior["x"].shape == (2, 6) and '"run": 1' in (tmp_path / "previous-1" / "meta.json").read_text()
    with pytest.warns(ResilientWarning, match="previous-2"):
        Checkpoint(tmp_path, {"run": 3}, fresh=True)
    assert not list(tmp_path.glob("attempt-*"))


# --- fault injection (#22): a full disk, a corrupt chunk, SIGKILL at random moments ---


@contextlib.contextmanager
def _small_filesystem(tmp_path, monkeypatch, size="48k"):
    """A real 48 KB tmpfs where the machine lets us mount one (root on Linux); elsewhere the same
    failure injected: every netCDF write past the third raises OSError(ENOSPC)."""
    import errno
    import shutil

    folder = tmp_path / "small"
    folder.mkdir()
    mounted = shutil.which("mount") is not None and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True).returncode == 0
    if not mounted:
        real = xr.Dataset.to_netcdf
        calls = {"n": 0}

        def full(self, path=None, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] > 3:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return real(self, path, *args, **kwargs)

        monkeypatch.setattr(xr.Dataset, "to_netcdf", full)
    try:
        yield folder, mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], capture_output=True)


@pytest.mark.numpyro
def test_a_full_disk_stops_the_checkpoint_not_the_run(tmp_path, monkeypatch):
    from resilient import record

    with _small_filesystem(tmp_path, monkeypatch) as (folder, mounted):
        with pytest.warns(ResilientWarning, match=r"failed: .*No space left on device.*goes on without checkpoints"):
            data = resilient.sample(pathologies.mirrored, backend="numpyro", draws=3000, tune=200, chains=2,
                                    random_seed=3, progressbar=False, checkpoint=str(folder / "run"),
                                    policy=resilient.Policy(chunk_size=50))
        run = record.read_run(data)
        attempts = {a["attempt"]: a for a in record.read_attempts(data)}
        returned = attempts[run["returned_attempt"]]["draws"]  # 3000, or more where the loop ran the chains longer
        assert data.posterior.sizes["draw"] == returned >= 3000, "the draws in memory are all returned"
        assert "No space left on device" in run["checkpoint_error"]
        assert not list((folder / "run").glob("attempt-*/.*.tmp")), "no half-written file is left"
        on_disk = read_checkpoint(folder / "run")  # what fitted is readable
        assert 0 < on_disk.posterior.sizes["draw"] < 3000


def test_after_a_failed_write_a_later_attempt_makes_no_folder(tmp_path):
    """Checkpointing stopped (a full disk) leaves the chunks written before as the latest attempt a reader finds: a
    later attempt of the loop adds no empty folder (CI, 2026-12-06: read_checkpoint then found attempt-02 empty)."""
    store = Checkpoint(tmp_path, {})
    store.start_attempt(1)
    store.write_chunk(Chunk((0, 1), 0, False, {"x": np.zeros((2, 10))}, {"diverging": np.zeros((2, 10), bool)}))
    store.error = "writing a chunk failed: [Errno 28] No space left on device"
    store.start_attempt(2)
    store.write_chunk(Chunk((0, 1), 0, False, {"x": np.ones((2, 10))}, {"diverging": np.zeros((2, 10), bool)}))
    assert sorted(p.name for p in tmp_path.glob("attempt-*")) == ["attempt-01"]
    assert read_checkpoint(tmp_path).posterior.sizes["draw"] == 10


def test_a_corrupt_chunk_file_is_skipped_with_a_warning_naming_it(tmp_path):
    store = Checkpoint(tmp_path, {})
    store.start_attempt(1)
    rng = np.random.default_rng(0)
    for start in (0, 10, 20):
        store.write_chunk(Chunk((0, 1), start, False, {"x": rng.normal(size=(2, 10))},
                                {"diverging": np.zeros((2, 10), bool)}))
    second = tmp_path / "attempt-01" / "chunk-000002.nc"
    second.write_bytes(second.read_bytes()[:100])  # truncated, as by a failed copy
    with pytest.warns(ResilientWarning, match=r"skipped 1 unreadable chunk file\(s\).*chunk-000002\.nc"):
        data = read_checkpoint(tmp_path)
    assert data.posterior["x"].shape == (2, 20)
    (tmp_path / "attempt-01" / "chunk-000001.nc").write_bytes(b"")
    (tmp_path / "attempt-01" / "chunk-000003.nc").write_bytes(b"not netcdf")
    with pytest.warns(ResilientWarning, match="skipped 3"), pytest.raises(resilient.ResilientError,
                                                                           match="holds no readable chunk"):
        read_checkpoint(tmp_path)


KILLED = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import resilient
    from examples import pathologies
    resilient.sample(pathologies.mirrored, backend={backend!r}, engine={engine!r}, draws=200_000, tune=300, chains=2,
                     random_seed=1, progressbar=False, checkpoint={folder!r}, policy=resilient.Policy(chunk_size=50))
""")


@pytest.mark.slow
@pytest.mark.parametrize("backend, engine", [pytest.param("numpyro", "numpyro", marks=pytest.mark.numpyro),
                                             pytest.param("pymc", "pymc", marks=pytest.mark.pymc),
                                             pytest.param("pymc", "nutpie", marks=pytest.mark.pymc)])
def test_sigkill_at_random_moments_never_leaves_a_half_written_chunk_read_as_data(backend, engine, tmp_path):
    """SIGKILL at seeded random moments (while compiling, warming up, sampling and writing chunks): the folder
    then reads back as whole chunks only, or says clearly that nothing was finished."""
    delays = np.random.default_rng(22).uniform(0.5, 12.0, size=4)
    for index, delay in enumerate(sorted(delays)):
        folder = tmp_path / f"run-{index}"
        child = subprocess.Popen([sys.executable, "-c", KILLED.format(root=str(ROOT), backend=backend, engine=engine,
                                                                      folder=str(folder))],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(delay)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        chunks = sorted(folder.glob("attempt-*/chunk-*.nc"))
        if not chunks:
            if folder.exists() and list(folder.glob("attempt-*")):
                with pytest.raises(resilient.ResilientError, match="no finished chunk"):
                    read_checkpoint(folder)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a half-written file would be skipped with a warning: none may be
            data = read_checkpoint(folder)
        assert data.posterior.sizes["draw"] > 0
        assert all(np.all(np.isfinite(v.values)) for v in data.posterior.data_vars.values())
