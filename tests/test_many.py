"""sample_many on a real dask.distributed cluster (a LocalCluster with two worker processes on 127.0.0.1),
and its pieces without one: the output folder, the per-worker compile cache and its with_data contract."""

from __future__ import annotations

import csv
import os
import signal
import threading
import time

import numpy as np
import pytest

from examples import sbc_models
from resilient.errors import ResilientError
from resilient.many import (
    SUMMARY_COLUMNS, FitStore, ModelSpec, data_fingerprint, read_summary, sample_many, sampler_for,
    worker_environment,
)

RUN = {"draws": 100, "tune": 100, "chains": 2, "fit_timeout": 120}


def napping(N, y=None, nap=0.0):
    """:func:`examples.sbc_models.normal` after ``nap`` seconds of sleep (a fit stuck outside the loop)."""
    time.sleep(nap)
    sbc_models.normal(N, y)


@pytest.fixture(scope="module")
def client():
    """Two worker processes, one thread each, on 127.0.0.1; closed (and the processes ended) after the module."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           host="127.0.0.1", env=worker_environment(1, 2))
    client = Client(cluster)
    try:
        client.wait_for_workers(2, timeout=60)
        yield client
    finally:
        client.close(timeout=10)
        cluster.close(timeout=30)


def _rows(out):
    with open(out / "summary.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.numpyro
def test_fits_stream_to_disk_failures_are_rows_and_a_rerun_skips_them(client, tmp_path):
    datasets = sbc_models.datasets(3, seed=1)
    datasets.insert(1, {"N": 5, "y": np.array([np.nan, 0.1, 0.2, 0.3, 0.4])})  # preflight refuses NaN data
    out = tmp_path / "many"
    result = sample_many(sbc_models.normal, datasets, out=out, client=client, random_seed=3, progressbar=False, **RUN)
    assert result.counts["ok"] == 3 and result.counts["failed"] == 1 and result.total == 4
    rows = {row["fit_id"]: row for row in _rows(out)}
    assert sorted(rows) == [f"fit-{i:05d}" for i in range(4)]
    failed = rows["fit-00001"]
    assert failed["status"] == "failed" and failed["reason"].startswith("PreflightError") and failed["file"] == ""
    for fit_id in ("fit-00000", "fit-00002", "fit-00003"):
        assert rows[fit_id]["status"] == "ok" and (out / rows[fit_id]["file"]).is_file()
        assert rows[fit_id]["compile"] in ("first", "recompiled", "with-data")
        assert int(rows[fit_id]["draws"]) == 100 and int(rows[fit_id]["chains"]) == 2
    assert rows["fit-00000"]["data_hash"] == data_fingerprint(datasets[0])
    tree = result.fit(0)
    assert tree["posterior"]["mu"].shape == (2, 100)
    # fit i's seed is fixed by the run's seed and i, whichever worker ran it
    assert len({row["random_seed"] for row in rows.values()}) == 4

    started = time.monotonic()
    again = sample_many(sbc_models.normal, datasets, out=out, client=client, random_seed=3, progressbar=False, **RUN)
    assert again.skipped == 4 and len(_rows(out)) == 4 and time.monotonic() - started < 10

    with pytest.raises(ResilientError, match="holds a run with other settings"):
        sample_many(sbc_models.normal, datasets, out=out, client=client, random_seed=3, progressbar=False,
                    **{**RUN, "draws": 200})


def test_a_truncated_row_left_by_a_killed_run_is_dropped_and_its_fit_runs_again(tmp_path):
    manifest = {"kind": "test"}
    store = FitStore(tmp_path, manifest)
    store.write({"row": {"fit_id": "fit-00000", "index": 0, "status": "ok", "reason": ""}})
    store.write({"row": {"fit_id": "fit-00001", "index": 1, "status": "lost", "reason": "KilledWorker"}})
    store.close()
    with open(tmp_path / "summary.csv", "a") as handle:
        handle.write("fit-00002,2,ok,,numpy")  # the process died inside this write
    reopened = FitStore(tmp_path, manifest)
    assert reopened.finished("fit-00000")
    assert not reopened.finished("fit-00001")  # lost fits run again on a restart
    assert not reopened.finished("fit-00002")
    reopened.close()
    assert [row["fit_id"] for row in read_summary(tmp_path)] == ["fit-00000", "fit-00001"]
    assert (tmp_path / "summary.csv").read_text().splitlines()[0] == ",".join(SUMMARY_COLUMNS)
    with pytest.raises(ResilientError, match="other settings"):
        FitStore(tmp_path, {"kind": "another"})


def test_model_references_and_bad_inputs():
    spec = ModelSpec.of("examples/sbc_models.py:normal")
    assert spec.reference.endswith("examples/sbc_models.py:normal") and os.path.isabs(spec.reference.split(":")[0])
    assert spec.load().__name__ == "normal"
    assert ModelSpec.of(sbc_models.normal).key == ModelSpec.of(sbc_models.normal).key
    with pytest.raises(ResilientError, match="file.py:name"):
        ModelSpec.of("no_colon_here")
    with pytest.raises(ResilientError, match="does not exist"):
        ModelSpec.of("examples/missing.py:normal").load()
    with pytest.raises(ResilientError, match="must be a model function"):
        ModelSpec.of(42)
    with pytest.raises(ResilientError, match="`ids` must be unique"):
        sample_many(sbc_models.normal, [{}, {}], ids=["a", "a"], out=None, progressbar=False)


class _RecordingCompiled:
    """Stands in for an adapter's CompiledModel that has ``with_data``: records the call and returns
    the model compiled for the new data."""

    def __init__(self, real, make):
        self.real, self.make, self.calls = real, make, []

    def __getattr__(self, name):
        return getattr(self.real, name)

    def with_data(self, args, kwargs):
        self.calls.append((args, kwargs))
        return self.make(kwargs)


@pytest.mark.numpyro
def test_with_data_contract_is_called_with_the_model_functions_arguments(monkeypatch):
    """The cache asks the first compile's ``compiled.with_data(args, kwargs)`` for each new data set."""
    import resilient
    from resilient import many

    monkeypatch.setattr(many, "_SAMPLERS", many.OrderedDict())
    monkeypatch.setattr(many, "_BASES", {})
    spec = ModelSpec.of(sbc_models.normal)
    first, second = sbc_models.datasets(2, seed=2)
    base, how, _ = sampler_for(spec, "numpyro", first)
    assert how == "first"
    recording = _RecordingCompiled(base.compiled, lambda kwargs: resilient.compile(
        sbc_models.normal, backend="numpyro", **kwargs).compiled)
    base.cache[(base.backend, base.model)] = recording
    sampler, how, _ = sampler_for(spec, "numpyro", second)
    assert how == "with-data"
    (args, kwargs), = recording.calls
    assert args == () and kwargs["N"] == 5 and np.array_equal(kwargs["y"], second["y"])
    assert sampler.compiled is not recording and sampler.model.kwargs["y"] is kwargs["y"]
    assert sampler_for(spec, "numpyro", second)[1] == "reused"


@pytest.mark.numpyro
def test_adapters_with_data_reuses_the_compiled_model():
    """Compile once, sample many: runs once an adapter implements ``CompiledModel.with_data``."""
    import resilient

    sampler = resilient.compile(sbc_models.normal, backend="numpyro", **sbc_models.datasets(1)[0])
    if not hasattr(sampler.compiled, "with_data"):
        pytest.skip("no adapter implements CompiledModel.with_data(args, kwargs) yet: sample_many compiles each "
                    "data set again (the 'recompiled' rows of summary.csv)")
    other = sbc_models.datasets(2, seed=5)[1]
    moved = sampler.compiled.with_data((), other)
    fresh = resilient.compile(sbc_models.normal, backend="numpyro", **other).compiled
    x = np.linspace(-0.5, 0.5, fresh.dimension)
    assert moved.log_density(x) == pytest.approx(fresh.log_density(x), rel=1e-10)


@pytest.mark.slow
@pytest.mark.numpyro
def test_a_worker_killed_mid_fit_loses_only_that_fit_which_runs_again(client, tmp_path):
    """SIGKILL one worker process while it runs a fit: Dask runs the fit again on the other worker (the
    nanny restarts the killed one) and every fit ends with a row; the fit it was running has starts >= 2."""
    pids = client.run(os.getpid)
    out = tmp_path / "killed"
    killed: list[int] = []

    def kill_one_busy_worker():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if (out / "summary.csv").is_file() and len(_rows(out)) >= 1:
                busy = [worker for worker, keys in client.processing().items() if keys]
                if busy:
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    killed.append(pids[busy[0]])
                    return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_one_busy_worker, daemon=True)
    killer.start()
    result = sample_many(sbc_models.normal, sbc_models.datasets(8, seed=4), out=out, client=client,
                         progressbar=False, **RUN)
    killer.join(timeout=10)
    assert killed, "no worker was busy to kill"
    rows = _rows(out)
    assert sorted(row["fit_id"] for row in rows) == [f"fit-{i:05d}" for i in range(8)]
    assert result.counts["ok"] == 8
    rerun = [row for row in rows if int(row["starts"]) >= 2]
    assert rerun and all("died while running this fit" in row["reason"] for row in rerun)


@pytest.mark.slow
@pytest.mark.numpyro
def test_a_stuck_fit_is_recorded_lost_after_fit_timeout_and_the_batch_goes_on(client, tmp_path):
    first, second = sbc_models.datasets(2, seed=6)
    started = time.monotonic()
    result = sample_many(napping, [first, {**second, "nap": 600.0}], out=tmp_path, client=client,
                         progressbar=False, **{**RUN, "fit_timeout": 30})
    assert time.monotonic() - started < 120
    rows = {row["fit_id"]: row for row in _rows(tmp_path)}
    assert rows["fit-00000"]["status"] == "ok"
    assert rows["fit-00001"]["status"] == "lost" and "ran past fit_timeout=30 s" in rows["fit-00001"]["reason"]
    assert result.counts == {"ok": 1, "exhausted": 0, "budget": 0, "failed": 0, "lost": 1}
    client.wait_for_workers(2, timeout=60)  # the stuck worker was restarted
