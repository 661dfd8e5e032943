"""sample_many on a real dask.distributed cluster (a LocalCluster with two worker processes on 127.0.0.1),
and its pieces without one: the output folder, the per-worker compile cache and its with_data contract."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import threading
import time

import numpy as np
import pytest

from examples import sbc_models
from resilient.errors import ResilientError
from resilient.batch import (
    SUMMARY_COLUMNS, FitStore, ModelSpec, data_fingerprint, read_summary, sample_many, sampler_for,
)

RUN = {"draws": 100, "tune": 100, "chains": 2, "fit_timeout": 120}


def napping(N, y=None, nap=0.0):
    """:func:`examples.sbc_models.normal` after ``nap`` seconds of sleep (a fit stuck outside the loop)."""
    time.sleep(nap)
    sbc_models.normal(N, y)


def _rows(out):
    with open(out / "summary.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.numpyro
@pytest.mark.slow  # 11 s on a Dask cluster (CI runs it)
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
        assert int(rows[fit_id]["draws"]) >= 100 and int(rows[fit_id]["chains"]) == 2  # a remedy may add draws
    assert rows["fit-00000"]["data_hash"] == data_fingerprint(datasets[0])
    tree = result.fit(0)
    assert tree["posterior"]["mu"].shape == (2, int(rows["fit-00000"]["draws"]))
    # fit i's seed is fixed by the run's seed and i, whichever worker ran it
    assert len({row["random_seed"] for row in rows.values()}) == 4

    started = time.monotonic()
    again = sample_many(sbc_models.normal, datasets, out=out, client=client, random_seed=3, progressbar=False, **RUN)
    assert again.skipped == 4 and len(_rows(out)) == 4 and time.monotonic() - started < 10

    with pytest.raises(ResilientError, match="holds a run with other settings"):
        sample_many(sbc_models.normal, datasets, out=out, client=client, random_seed=3, progressbar=False,
                    **{**RUN, "draws": 200})


def _write_locks() -> tuple[str, str]:
    """The module of xarray's write lock for a file, as xarray picks it and as resilient.netcdf.write asks."""
    from xarray.backends.locks import get_write_lock

    from resilient import netcdf

    outside = type(get_write_lock("fit.nc")).__module__
    with netcdf._local_lock():
        inside = type(get_write_lock("fit.nc")).__module__
    return outside, inside


@pytest.mark.slow  # a Dask cluster
def test_a_fit_file_is_written_on_the_worker_without_a_distributed_lock(client):
    """On a worker, xarray would guard each variable's write with a distributed.Lock (a round trip to the
    scheduler each: 0.4-0.6 s a fit, 2026-12-06); resilient.netcdf.write takes a lock of the worker's own."""
    outside, inside = client.submit(_write_locks, pure=False).result(timeout=60)
    assert outside.startswith("distributed") and not inside.startswith("distributed"), (outside, inside)


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
    from collections import OrderedDict

    from resilient.batch import worker

    monkeypatch.setattr(worker, "_SAMPLERS", OrderedDict())
    monkeypatch.setattr(worker, "_BASES", {})
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
def test_sampler_for_derives_each_data_set_from_a_base_of_its_shape(monkeypatch):
    """With the NumPyro adapter's own ``with_data``: the first data set compiles, the next of the same shape is
    derived, one of a new ``N`` compiles again and becomes a second base, and both shapes are then derived."""
    from collections import OrderedDict

    from resilient.batch import worker

    monkeypatch.setattr(worker, "_SAMPLERS", OrderedDict())
    monkeypatch.setattr(worker, "_BASES", {})
    spec = ModelSpec.of(sbc_models.normal)
    five = sbc_models.datasets(3, N=5, seed=7)
    six = sbc_models.datasets(2, N=6, seed=8)
    hows = [sampler_for(spec, "numpyro", data)[1] for data in (five[0], five[1], six[0], five[2], six[1])]
    assert hows == ["first", "with-data", "recompiled", "with-data", "with-data"]
    sampler, _, _ = sampler_for(spec, "numpyro", six[1])
    assert np.array_equal(sampler.compiled.observed_data()["y"], six[1]["y"])


_TRACED_CALLS = []


def counting_numpyro(N, y=None, x=None):
    """A native NumPyro regression that counts the calls in which its data are traced (jax retraced it)."""
    import jax
    import numpyro
    import numpyro.distributions as dist

    if isinstance(y, jax.core.Tracer):
        _TRACED_CALLS.append(N)
    a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("N", N):
        numpyro.sample("y", dist.Normal(a + b * x, sigma), obs=y)


def _regression(seed, N=6):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=N)
    return {"N": N, "x": x, "y": 0.5 + 2.0 * x + rng.normal(scale=0.3, size=N)}


@pytest.mark.numpyro
@pytest.mark.parametrize("model", [sbc_models.normal, sbc_models.normal_numpyro, counting_numpyro])
def test_adapters_with_data_reuses_the_compiled_model(model):
    """Compile once, sample many: ``with_data`` gives exactly the log density, gradient, per-site terms and
    NUTS draws of a model compiled afresh on the new data (the same XLA programs), shared-API and native."""
    import resilient

    first, other = (_regression(1), _regression(2)) if model is counting_numpyro else sbc_models.datasets(2, seed=5)
    sampler = resilient.compile(model, backend="numpyro", **first)
    moved = sampler.compiled.with_data((), other)
    fresh = resilient.compile(model, backend="numpyro", **other).compiled
    for x in (np.linspace(-0.5, 0.5, fresh.dimension), np.full(fresh.dimension, 0.3)):
        assert moved.log_density_and_gradient(x)[0] == fresh.log_density_and_gradient(x)[0]
        assert np.array_equal(moved.log_density_and_gradient(x)[1], fresh.log_density_and_gradient(x)[1])
        assert moved.site_log_densities(x) == fresh.site_log_densities(x)
        assert moved.log_density(x) != sampler.compiled.log_density(x)  # the new data, not the first
    observed = np.asarray(moved.observed_data()["y"])  # in the model's precision (a native NumPyro one: float32)
    assert np.array_equal(observed, np.asarray(other["y"]).astype(observed.dtype))
    run = {"draws": 30, "tune": 30, "chains": 2, "random_seed": 3, "progressbar": False, "preflight": False,
           "max_attempts": 1}
    again = resilient.compile(model, backend="numpyro", **other)
    again.cache[(again.backend, again.model)] = moved
    with _no_check():
        draws_moved = again.sample(**run).posterior
        draws_fresh = resilient.compile(model, backend="numpyro", **other).sample(**run).posterior
    for name in draws_fresh.data_vars:
        assert np.array_equal(draws_moved[name].values, draws_fresh[name].values), name


class _no_check:
    """Lets the short runs' diagnostics warnings pass (they are not what is tested)."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)


@pytest.mark.numpyro
def test_with_data_does_not_trace_again_and_refuses_what_needs_another_program():
    """Same shapes: no new trace of the model under jax (the traced calls are counted by the model itself)
    and one entry in the jitted program's cache. New shapes, another ``N`` or a missing array: ValueError;
    a model that uses its data's values in Python keeps them as constants: NotImplementedError."""
    import resilient
    from resilient.distributions import HalfNormal, Normal, Truncated
    from resilient.model import sample

    compiled = resilient.compile(counting_numpyro, backend="numpyro", **_regression(1)).compiled
    x = np.full(compiled.dimension, 0.1)
    compiled.log_density(x)
    traced = len(_TRACED_CALLS)
    assert traced >= 1
    moved = [compiled.with_data((), _regression(seed)) for seed in (2, 3, 4)]
    values = {m.log_density(x) for m in moved}
    assert len(values) == 3 and len(_TRACED_CALLS) == traced
    assert compiled._programs["value_and_grad"]._cache_size() == 1
    with pytest.raises(ValueError, match="shape"):
        compiled.with_data((), {**_regression(2), "x": np.zeros(7), "y": np.zeros(7)})
    with pytest.raises(ValueError, match="non-array argument is 7"):
        compiled.with_data((), _regression(2, N=7))
    with pytest.raises(ValueError, match="structure"):
        compiled.with_data((), {**_regression(2), "y": None})

    def python_uses_values(y):
        mu = sample("mu", Normal(0, 1))
        sample("y", Normal(mu, float(np.std(y)), shape=len(y)), obs=y)

    constant = resilient.compile(python_uses_values, backend="numpyro", y=np.array([0.0, 1.0, 3.0])).compiled
    with pytest.raises(NotImplementedError, match="constants"):
        constant.with_data((), {"y": np.array([0.0, 2.0, 5.0])})
    fresh = resilient.compile(python_uses_values, backend="numpyro", y=np.array([0.0, 2.0, 5.0])).compiled
    assert constant.log_density(np.zeros(1)) != fresh.log_density(np.zeros(1))

    def bounded(lower, y):
        scale = sample("scale", HalfNormal(1))
        v = sample("v", Truncated(Normal(0, scale, shape=2), lower=lower))
        sample("y", Normal(v, 1), obs=y)

    finite = resilient.compile(bounded, backend="numpyro", lower=np.array([0.5, 1.0]), y=np.ones(2)).compiled
    with pytest.raises(ValueError, match="rewrites differ"):  # an infinite bound is dropped: another program
        finite.with_data((), {"lower": np.array([-np.inf, -np.inf]), "y": np.ones(2)})
    point = np.array([0.2, -0.3, 0.4])
    assert finite.with_data((), {"lower": np.array([0.2, 0.1]), "y": np.ones(2)}).log_density(point) == (
        resilient.compile(bounded, backend="numpyro", lower=np.array([0.2, 0.1]), y=np.ones(2)).compiled
        .log_density(point))


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


def test_sample_many_takes_an_engine_and_each_fit_runs_on_it(monkeypatch):
    """engine= reaches every fit's sampler (sample_many had none: fits ran on auto's choice)."""
    from collections import OrderedDict

    from resilient.batch import worker

    monkeypatch.setattr(worker, "_SAMPLERS", OrderedDict())
    monkeypatch.setattr(worker, "_BASES", {})
    spec = ModelSpec.of(sbc_models.normal)
    data, = sbc_models.datasets(1, seed=3)
    sampler, _, _ = sampler_for(spec, None, data, engine="pymc")
    assert (sampler.engine, sampler.backend) == ("pymc", "pymc")
    again, how, _ = sampler_for(spec, None, data, engine="numpyro")
    assert (again.engine, again.backend, how) == ("numpyro", "numpyro", "first")
    from resilient.batch import run_settings
    from resilient.options import RunOptions

    assert run_settings(RunOptions(), fix=True, float32=False, engine="nutpie")["engine"] == "nutpie"


CLIENT = """
import sys
sys.path.insert(0, {root!r})
from tests.test_many import RUN, napping
from examples import sbc_models
from resilient.batch import sample_many
datasets = [{{**d, "nap": 1.0}} for d in sbc_models.datasets(8, seed=4)]
sample_many(napping, datasets, out={out!r}, workers=2, random_seed=5, progressbar=False, **RUN)
"""


@pytest.mark.slow
@pytest.mark.numpyro
def test_a_client_killed_mid_batch_is_completed_by_a_restart_with_no_fit_run_twice(client, tmp_path):
    """#22.4: SIGKILL the process that runs sample_many (its LocalCluster with it) after some fits are on disk;
    the same call again finishes the batch, skipping every fit that had finished and running the rest once."""
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "many"
    root = str(Path(__file__).resolve().parents[1])
    child = subprocess.Popen([sys.executable, "-c", CLIENT.format(root=root, out=str(out))],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while not ((out / "summary.csv").exists() and len(_rows(out)) >= 2):
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no fit finished within 300 s"
            time.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # the client and the cluster it started
        child.wait(timeout=30)
        child.stderr.close()
    before = {row["fit_id"] for row in _rows(out)}
    assert 2 <= len(before) < 8, "killed mid-batch"
    datasets = [{**d, "nap": 1.0} for d in sbc_models.datasets(8, seed=4)]
    again = sample_many(napping, datasets, out=out, client=client, random_seed=5, progressbar=False, **RUN)
    rows = _rows(out)
    ids = [row["fit_id"] for row in rows]
    assert sorted(ids) == [f"fit-{i:05d}" for i in range(8)], "every fit once: none twice, none missing"
    assert again.skipped == len(before) and again.counts["ok"] == 8  # counts include the fits found done
    assert all(row["status"] == "ok" for row in rows)


def test_the_old_module_path_reaches_the_batch_package():
    """sample_many moved from resilient/many.py into the package resilient/batch/ (one topic a module);
    ``from resilient.many import ...`` still gives the same objects, and the public function is the same."""
    import resilient
    from resilient import batch, many

    for name in batch.__all__:
        assert getattr(many, name) is getattr(batch, name), name
    assert resilient.sample_many is batch.sample_many is many.sample_many


@pytest.mark.slow
def test_warm_start_true_starts_each_later_fit_on_a_worker_from_the_last_accepted_one(tmp_path):
    from resilient import record

    datasets = sbc_models.datasets(4, seed=6)
    run = dict(draws=200, tune=400, chains=2, progressbar=False, random_seed=2, workers=1)
    warm = sample_many(sbc_models.normal, datasets, out=tmp_path / "warm", warm_start=True, **run)
    entries = [record.read_attempts(warm.fit(i))[0]["settings"].get("warm_start") for i in range(4)]
    assert entries[0] is None, "the first fit on the worker has nothing to start from"
    used = [e for e in entries[1:] if e and e.get("used")]
    assert used, entries
    assert all(e["window"] < run["tune"] for e in used)
    cold = sample_many(sbc_models.normal, datasets, out=tmp_path / "cold", **run)
    assert all(record.read_attempts(cold.fit(i))[0]["settings"].get("warm_start") is None for i in range(4)), \
        "off by default"
    with pytest.raises(ResilientError, match="`warm_start` must be True or False"):
        sample_many(sbc_models.normal, datasets, out=tmp_path / "bad", warm_start="auto", **run)


def _allocator_settings() -> dict:
    return {name: os.environ.get(name) for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}


def test_workers_resilient_starts_keep_glibcs_settled_allocator_thresholds():
    """Dask's MALLOC_TRIM_THRESHOLD_=65536 turns glibc's dynamic mmap threshold off, and a NumPyro fit of 20,000
    observations took 2.2 x as long: the workers Resilient starts get the thresholds glibc settles at instead,
    and a value the user configured in Dask is kept."""
    import dask

    from resilient.batch.cluster import WORKER_MALLOC, Cluster, _use_worker_malloc

    before = _allocator_settings()
    os.environ["MALLOC_TRIM_THRESHOLD_"] = "65536"  # as an earlier Dask cluster in this process leaves it
    os.environ.pop("MALLOC_MMAP_THRESHOLD_", None)
    try:
        cluster = Cluster(workers=1)
        try:
            found = list(cluster.client.run(_allocator_settings).values())
        finally:
            cluster.close()
        assert found == [{name: str(value) for name, value in WORKER_MALLOC.items()}]
        os.environ.pop("MALLOC_MMAP_THRESHOLD_")
        os.environ["MALLOC_TRIM_THRESHOLD_"] = "0"
        assert not _use_worker_malloc() and _allocator_settings() == {
            "MALLOC_MMAP_THRESHOLD_": None, "MALLOC_TRIM_THRESHOLD_": "0"}, "the user's own value is kept"
        del os.environ["MALLOC_TRIM_THRESHOLD_"]
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 0}):
            assert not _use_worker_malloc() and _allocator_settings() == {
                "MALLOC_MMAP_THRESHOLD_": None, "MALLOC_TRIM_THRESHOLD_": None}, \
                "the user's own value in Dask's config is kept"
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
