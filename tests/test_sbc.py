"""Simulation-based calibration: the uniformity test's stated false-alarm rate, ranks, prior draws with each
backend's forward sampler, and SBC runs on real Dask clusters (a LocalCluster with two worker processes;
in the slow tests also a `dask scheduler` and two `dask worker` subprocesses, one of them killed mid-run)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from examples import sbc_models
from resilient.errors import ResilientError
from resilient.batch import worker_environment
from resilient.sbc import analyse, null_statistics, prior_draw, rank_rows, sbc, uniformity_test

ROOT = Path(__file__).resolve().parents[1]
MODELS = str(ROOT / "examples" / "sbc_models.py")
FAST = {"draws": 200, "tune": 200, "chains": 2, "rank_draws": 39, "fit_timeout": 120}


# ------------------------------------------------------------------------------------------------
# The test itself, on simulated ranks (no fits)
# ------------------------------------------------------------------------------------------------

def test_uniform_ranks_are_flagged_at_most_at_the_stated_rate():
    """prob=0.99: a calibrated parameter fails with probability <= 1%. Over 400 uniform rank sets the
    count of failures is Binomial(400, <=0.01): more than 4 + 3 sd (10) would break the stated rate."""
    rng = np.random.default_rng(7)
    failures = sum(uniformity_test(rng.integers(0, 20, 50), 19, prob=0.99).verdict == "fail" for _ in range(400))
    assert failures <= 10


def test_the_band_level_matches_arviz_stats_simulation():
    """The simultaneous band's marginal level agrees with arviz_stats' simulation method (continuous uniform
    PIT values at the same evaluation points), within Monte Carlo error."""
    from arviz_stats.ecdf_utils import simulate_confidence_bands

    n, rank_draws = 100, 49
    z = np.arange(1, rank_draws + 1) / (rank_draws + 1)
    ours = float(np.quantile(null_statistics(n, rank_draws, 4000), 0.95))
    theirs = float(simulate_confidence_bands(n, 1, z, 0.95, 4000, np.random.default_rng(3)))
    assert abs(ours - theirs) < 0.003


@pytest.mark.parametrize(("a", "b", "words"), [(0.5, 0.5, "U shape"), (3.0, 3.0, "hump"), (2.0, 1.0, "biased low")])
def test_non_uniform_ranks_fail_and_say_what_they_look_like(a, b, words):
    rng = np.random.default_rng(11)
    ranks = np.minimum((rng.beta(a, b, 300) * 40).astype(int), 39)
    check = uniformity_test(ranks, 39, prob=0.99, parameter="theta")
    assert check.verdict == "fail" and check.p_value < 0.01 and words in check.shape
    assert len(check.ecdf) == len(check.lower) == len(check.upper) == 39


def test_bad_inputs_to_the_test():
    with pytest.raises(ResilientError, match="ranks must lie in 0..9"):
        uniformity_test([0, 10], 9)
    with pytest.raises(ResilientError, match="`prob` must be in"):
        uniformity_test([0, 1], 9, prob=1.5)
    assert uniformity_test([3], 9).verdict == "n/a"


def test_ranks_among_thinned_draws():
    draws = {"mu": np.arange(200, dtype=float).reshape(2, 100),
             "beta": np.stack([np.arange(200.0), -np.arange(200.0)], axis=-1).reshape(2, 100, 2)}
    truth = {"mu": 50.5, "beta": np.array([1000.0, -1000.0])}
    rows = {row["parameter"]: row for row in rank_rows("sim-00000", 0, truth, draws, 20)}
    assert set(rows) == {"mu", "beta[0]", "beta[1]"}
    assert rows["mu"]["rank"] == 6  # kept draws 0, 10, ..., 190: six are below 50.5
    assert rows["beta[0]"]["rank"] == 20 and rows["beta[1]"]["rank"] == 0
    assert rows["mu"]["thinned_by"] == 10 and rows["mu"]["rank_draws"] == 20
    tied = rank_rows("f", 0, {"mu": 1.0}, {"mu": np.ones((2, 50))}, 10, random_seed=1)[0]
    assert 0 <= tied["rank"] <= 10  # a stuck chain's ties are broken at random
    with pytest.raises(ResilientError, match="same parameters"):
        rank_rows("f", 0, {"mu": np.zeros(3)}, {"mu": np.zeros((2, 50))}, 10)
    with pytest.raises(ResilientError, match="at most chains x draws"):
        rank_rows("f", 0, {"mu": 0.0}, {"mu": np.zeros((2, 5))}, 20)


# ------------------------------------------------------------------------------------------------
# Prior draws with each backend's own forward sampler
# ------------------------------------------------------------------------------------------------

@pytest.mark.numpyro
@pytest.mark.parametrize("function", [sbc_models.normal, sbc_models.normal_numpyro], ids=["shared", "native"])
def test_prior_draw_on_numpyro(function):
    draw = prior_draw(function, {"N": 5, "y": None}, backend="numpyro", random_seed=1)
    assert {"mu", "sigma", "y"} <= set(draw) and draw["y"].shape == (5,) and draw["sigma"] > 0
    again = prior_draw(function, {"N": 5, "y": None}, backend="numpyro", random_seed=1)
    assert again["mu"] == draw["mu"]


@pytest.mark.pymc
@pytest.mark.parametrize("function", [sbc_models.normal, sbc_models.normal_pymc], ids=["shared", "builder"])
def test_prior_draw_on_pymc(function):
    draw = prior_draw(function, {"N": 5, "y": None}, backend="pymc", random_seed=1)
    assert {"mu", "sigma", "y"} <= set(draw) and draw["y"].shape == (5,) and draw["sigma"] > 0
    assert prior_draw(function, {"N": 5, "y": None}, backend="pymc", random_seed=2)["mu"] != draw["mu"]


@pytest.mark.numpyro
def test_sbc_says_what_it_needs_before_any_fit_runs(tmp_path):
    with pytest.raises(ResilientError, match="must know which sites those are"):
        sbc(sbc_models.normal, 2, data={"N": 5, "y": np.zeros(5)}, out=tmp_path / "a", progressbar=False)
    with pytest.raises(ResilientError, match="`var_names` lists \\['tau'\\]"):
        sbc(sbc_models.normal, 2, data={"N": 5}, var_names=["tau"], out=tmp_path / "b", progressbar=False)
    with pytest.raises(ResilientError, match="`rank_draws` \\(500\\) must be at most"):
        sbc(sbc_models.normal, 2, data={"N": 5}, rank_draws=500, draws=100, chains=2, out=tmp_path / "c")
    with pytest.raises(ResilientError, match="takes `N` without a default and `data` does not give it"):
        sbc(sbc_models.normal, 2, data={}, out=tmp_path / "d", progressbar=False)
    with pytest.raises(ResilientError, match="Simulating from normal"):
        sbc(sbc_models.normal, 2, data={"N": -1}, out=tmp_path / "e", progressbar=False)
    assert not (tmp_path / "a").exists()


# ------------------------------------------------------------------------------------------------
# SBC on a LocalCluster with two worker processes (the `client` fixture, tests/conftest.py)
# ------------------------------------------------------------------------------------------------

@pytest.mark.pymc
@pytest.mark.slow  # 7-8 s and a cluster start; the default suite keeps test_many's cluster tests
def test_a_small_sbc_run_writes_ranks_summary_and_report(client, tmp_path):
    result = sbc(sbc_models.normal, 6, data={"N": 5}, backend="pymc", random_seed=2, out=tmp_path, client=client,
                 progressbar=False, **FAST)
    assert result.used == 6 and not result.dropped and [c.parameter for c in result.checks] == ["mu", "sigma"]
    assert all(c.fits == 6 and c.rank_draws == 39 and c.verdict in ("pass", "fail") for c in result.checks)
    with open(tmp_path / "ranks.csv") as handle:
        ranks = list(csv.DictReader(handle))
    assert len(ranks) == 12 and all(0 <= int(r["rank"]) <= 39 for r in ranks)
    html = (tmp_path / "sbc.html").read_text()
    assert "Simulation-based calibration" in html and html.count("data:image/png;base64,") == 4
    report = json.loads((tmp_path / "sbc.json").read_text())
    assert report["used"] == 6 and {p["parameter"] for p in report["parameters"]} == {"mu", "sigma"}
    # the same folder read back gives the same verdicts (a killed run can be analysed too)
    assert [c.verdict for c in analyse(tmp_path).checks] == [c.verdict for c in result.checks]


@pytest.mark.slow
@pytest.mark.pymc
def test_a_calibrated_model_passes(client, tmp_path):
    """Simulator and fitted model agree: no parameter leaves its band. The bands are Bonferroni over the two
    parameters (prob 0.995 each), so a seeded run on any CPU raises a false alarm with probability 1% at most (at
    the default 0.99 each it was up to 2%)."""
    result = sbc(sbc_models.normal, 60, data={"N": 5}, backend="pymc", random_seed=5, out=tmp_path, client=client,
                 progressbar=False, prob=1 - 0.01 / 2, **FAST)
    assert result.used == 60 and not result.dropped
    assert [(c.parameter, c.verdict) for c in result.checks] == [("mu", "pass"), ("sigma", "pass")]
    assert result.verdict == "pass"


@pytest.mark.slow
@pytest.mark.pymc
def test_a_miscalibrated_model_is_flagged(client, tmp_path):
    """The fitted prior of mu is 4 times narrower than the simulator's: its posteriors are too narrow and
    the true values land in their tails (U-shaped ranks)."""
    result = sbc(sbc_models.normal_narrow, 40, simulator=sbc_models.normal, data={"N": 5}, backend="pymc",
                 random_seed=5, out=tmp_path, client=client, progressbar=False, **FAST)
    mu = next(c for c in result.checks if c.parameter == "mu")
    assert mu.verdict == "fail" and "U shape" in mu.shape and result.verdict == "fail"
    assert "Miscalibrated" in (tmp_path / "sbc.html").read_text()


# ------------------------------------------------------------------------------------------------
# Through the CLI on a subprocess cluster, with a worker killed mid-run
# ------------------------------------------------------------------------------------------------

def _start(arguments: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "w") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(arguments, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                cwd=ROOT)


def _end(process: subprocess.Popen) -> None:
    """End the process group we started (scheduler, nanny and worker, CLI), politely then by force."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)
    except ProcessLookupError:
        pass


def _wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {seconds:g} s waiting for {what}")


@pytest.mark.slow
@pytest.mark.numpyro
def test_cli_sbc_on_a_subprocess_cluster_survives_a_killed_worker(tmp_path):
    """`dask scheduler` and two `dask worker` processes on 127.0.0.1; `resilient sbc --scheduler` runs 12
    simulations; one worker is SIGKILLed while it runs a fit. Every fit ends with one row, the lost one
    is run again on the other worker, and the report is written."""
    from distributed import Client

    python = sys.executable
    env = {**os.environ, **worker_environment(1, 2), "CI": "true"}
    scheduler_file = tmp_path / "scheduler.json"
    out = tmp_path / "sbc"
    processes: list[subprocess.Popen] = []
    try:
        processes.append(_start([python, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                                 "--no-dashboard", "--scheduler-file", str(scheduler_file)], env,
                                tmp_path / "scheduler.log"))
        address = _wait_for(lambda: scheduler_file.is_file() and json.loads(scheduler_file.read_text() or "{}")
                            .get("address"), 60, "the scheduler")
        for name in ("w0", "w1"):
            processes.append(_start([python, "-m", "dask", "worker", address, "--nworkers", "1", "--nthreads", "1",
                                     "--host", "127.0.0.1", "--no-dashboard", "--name", name], env,
                                    tmp_path / f"{name}.log"))
        workers = {"w0": processes[1], "w1": processes[2]}
        with Client(address, timeout=30) as watcher:
            watcher.wait_for_workers(2, timeout=60)
            cli = _start([python, "-m", "resilient", "sbc", f"{MODELS}:normal", "--simulations", "12", "--out",
                          str(out), "--scheduler", address, "--draws", "100", "--tune", "100", "--rank-draws", "19",
                          "--seed", "3"], env, tmp_path / "cli.log")
            processes.append(cli)

            def busy_worker():
                if not (out / "summary.csv").is_file() or len((out / "summary.csv").read_text().splitlines()) < 3:
                    return None
                info = watcher.scheduler_info(n_workers=-1)["workers"]
                busy = [info[address]["name"] for address, keys in watcher.processing().items() if keys]
                return busy[0] if busy else None

            victim = _wait_for(busy_worker, 180, "two finished fits and a busy worker")
            os.killpg(workers[victim].pid, signal.SIGKILL)
            workers[victim].wait(timeout=15)
            cli.wait(timeout=240)
        log = (tmp_path / "cli.log").read_text()
        assert cli.returncode in (0, 1), log
        with open(out / "summary.csv") as handle:
            rows = list(csv.DictReader(handle))
        final = {row["fit_id"]: row for row in rows}
        assert sorted(final) == [f"sim-{i:05d}" for i in range(12)], log
        # accounted for: a row with a status and, unless ok, its reason; none lost (Dask ran the killed fit again)
        assert all(row["status"] == "ok" or (row["status"] in ("exhausted", "budget", "failed") and row["reason"])
                   for row in final.values()), log
        rerun = [row for row in final.values() if int(row["starts"]) >= 2]
        assert rerun and all("died while running this fit" in row["reason"] for row in rerun), log
        assert (out / "sbc.html").is_file() and "verdict:" in log
    finally:
        for process in reversed(processes):
            _end(process)


def test_core_reaches_the_backends_forward_samplers_only_through_the_registry():
    """SBC's prior draws are the adapters' (resilient.backend.simulate_prior finds them by language): no module
    of resilient/sbc/ or resilient/batch/ imports an adapter or a backend at its top, and nutpie's models are
    simulated in their language, PyMC's."""
    from resilient import backend

    for folder in ("sbc", "batch"):
        for path in (ROOT / "resilient" / folder).glob("*.py"):
            text = path.read_text()
            assert "resilient.adapters" not in text, path
            assert not any(line.startswith(("import numpyro", "import pymc", "from numpyro", "from pymc"))
                           for line in text.splitlines()), path
    assert backend.capabilities("nutpie").language in backend.PRIOR_SIMULATORS
    assert all(backend.capabilities(name).prior_simulation for name in backend.PRIOR_SIMULATORS)


@pytest.mark.slow
@pytest.mark.numpyro  # one engine: PyMC's auto may move to nutpie mid-run, whose fits a PyMC state cannot start
def test_sbc_warm_start_true_starts_later_fits_warm_and_still_ranks_every_fit(client, tmp_path):
    """``warm_start=True`` (opt-in): fits after the first on a worker start from the last accepted fit's
    adaptation there; every fit is still ranked; a non-bool is refused before any fit runs."""
    from resilient import record

    with pytest.raises(ResilientError, match="`warm_start` must be True or False"):
        sbc(sbc_models.normal, 2, data={"N": 5}, backend="numpyro", out=tmp_path / "bad", client=client,
            progressbar=False, warm_start="auto", **FAST)
    result = sbc(sbc_models.normal, 6, data={"N": 5}, backend="numpyro", random_seed=2, out=tmp_path / "warm",
                 client=client, progressbar=False, warm_start=True, **{**FAST, "tune": 400})
    assert result.used + len(result.dropped) == 6 and all(c.fits == result.used for c in result.checks)
    import xarray as xr

    entries = []
    for path in sorted((tmp_path / "warm" / "fits").glob("sim-*.nc")):
        entries.append(record.read_attempts(xr.open_datatree(path))[0]["settings"].get("warm_start"))
    assert len(entries) == 6
    # each worker's first fit has nothing to start from; a later fit on the same worker is offered
    # the last accepted fit's state (used where the run's settings allow it)
    assert sum(e is None for e in entries) >= 1 and any(e and e.get("used") for e in entries), entries
