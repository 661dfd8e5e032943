"""``more_draws``: the loop continues an attempt's chains (no new warm-up) when R-hat is over
``Policy.rhat_goal``; on every engine the continuation's draws follow the attempt's own, in memory and on disk.

The goal is set just over 1 here so that every first attempt is continued: what is checked is how a
continuation is made and returned, not when one is needed (that is :func:`resilient.loop.extension`'s, tested
in test_loop_logic). Divergences under the limit are accepted as they are (``retry_divergences=False``): on some
CPU a first attempt with one would otherwise get a higher target_accept before any continuation.
"""

import numpy as np
import pytest

import resilient
from examples import reference_models
from resilient.checkpoint import read_checkpoint, read_state
from resilient.record import read_attempts, read_run

_, DATA, _ = reference_models.load("sblrc-blr")
ALWAYS = resilient.Policy(rhat_goal=1.0 + 1e-9, retry_divergences=False)


def _continued(tmp_path, backend, engine):
    folder = tmp_path / "run"
    data = resilient.sample(reference_models.blr, backend=backend, engine=engine, draws=150, tune=200, chains=2,
                            random_seed=5, progressbar=False, checkpoint=str(folder), policy=ALWAYS, **DATA)
    first, second = read_attempts(data)
    assert first["outcome"] == "retry" and "next: the same chains continued for" in first["message"]
    assert second["remedy"] == "more_draws" and second["outcome"] == "accepted"
    extra = second["settings"]["continued"]["extra_draws"]
    assert second["settings"]["continued"]["from_attempt"] == 1 and extra >= 150
    assert read_run(data)["returned_attempt"] == 2
    total = 150 + extra
    assert data.posterior.sizes["draw"] == total and second["draws"] == total
    # the first attempt's draws come first, unchanged; the warm-up statistics are the run's own, not re-run
    before = read_checkpoint(folder, attempt=1)
    for name in data.posterior.data_vars:
        assert np.array_equal(data.posterior[name].values[:, :150], before.posterior[name].values)
    assert data.warmup_sample_stats.sizes["draw"] == 200
    # on disk, the continuing attempt's folder holds the whole chains and a state counted over them
    whole = read_checkpoint(folder, attempt=2)
    assert np.array_equal(whole.posterior["beta"].values, data.posterior["beta"].values)
    assert list(read_state(folder).draws_done) == [total, total]
    assert list(data.sampler_state["draws_done"].values) == [total, total]
    return data, second


def test_numpyro_continues_its_chains_with_its_whole_state(tmp_path):
    import warnings

    data, second = _continued(tmp_path, "numpyro", "numpyro")
    assert second["settings"]["continued"]["random_state"] == "continued"
    assert "readapted" not in second["settings"]["continued"]
    total = data.posterior.sizes["draw"]
    # NumPyro's whole state goes on: the continued chains are, bitwise, one uninterrupted run of that length
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one attempt whatever its R-hat: what is compared is the draws
        whole = resilient.sample(reference_models.blr, backend="numpyro", engine="numpyro", draws=total, tune=200,
                                 chains=2, random_seed=5, progressbar=False,
                                 policy=resilient.Policy(max_attempts=1), **DATA)
    assert np.array_equal(whole.posterior["beta"].values, data.posterior["beta"].values)
    # a resume of the folder (the continuing attempt's) has the whole chains and nothing to add
    resumed = resilient.resume(str(tmp_path / "run"), reference_models.blr, progressbar=False, **DATA)
    assert np.array_equal(resumed.posterior["beta"].values, data.posterior["beta"].values)


@pytest.mark.slow
def test_pymc_continues_its_chains_with_the_saved_step_size_and_mass_matrix(tmp_path):
    data, second = _continued(tmp_path, "pymc", "pymc")
    assert second["settings"]["continued"]["random_state"].startswith("new (random_seed")
    assert "readapted" not in second["settings"]["continued"]


@pytest.mark.slow
def test_nutpie_continues_its_chains_after_a_short_readaptation(tmp_path):
    from resilient.resumption import READAPT_TUNE

    data, second = _continued(tmp_path, "pymc", "nutpie")
    assert second["settings"]["continued"]["readapted"] == min(READAPT_TUNE, 200)


def test_a_running_divergence_count_goes_on_from_where_each_chain_stood():
    """PyMC's and nutpie's ``divergences`` statistic is a running count that the engine restarts in a new run; a
    continuation's chunks carry it on from each chain's last count (seen on PyMC: the joined chains' count ended at
    [29, 33] where their ``diverging`` summed to [45, 45])."""
    from resilient.backend import Chunk
    from resilient.draws import DrawBuffer
    from resilient.draws import running_counts_on as _counted_on

    buffer = DrawBuffer(2)
    buffer.add(Chunk((0, 1), 0, False, {"x": np.zeros((2, 3))},
                     {"diverging": np.array([[1, 0, 1], [0, 0, 1]], bool), "divergences": np.array([[1, 1, 2], [0, 0, 1]])}))
    before = {chain: buffer.last_stat(chain, "divergences") for chain in (0, 1)}
    assert before == {0: 2, 1: 1} and buffer.last_stat(0, "no such statistic") is None
    continued = Chunk((1, 0), 0, False, {"x": np.zeros((2, 2))},
                      {"diverging": np.array([[1, 0], [0, 1]], bool), "divergences": np.array([[1, 1], [0, 1]])})
    stats = _counted_on(continued, before)
    np.testing.assert_array_equal(stats["divergences"], [[2, 2], [2, 3]])  # rows are chains 1 and 0
    np.testing.assert_array_equal(continued.sample_stats["divergences"], [[1, 1], [0, 1]]), "the chunk is not changed"
    assert set(_counted_on(Chunk((0,), 0, False, {}, {"diverging": np.zeros((1, 2), bool)}), before)) == {"diverging"}
