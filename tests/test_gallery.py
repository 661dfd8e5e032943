"""The gallery corpus (examples/gallery): models nobody here wrote, run raw and through Resilient at the
same settings (2 chains x 500 + 500, one seed), on a subset that fits CI. The invariants of issue #20:

* where the raw tool returns a usable answer (worst R-hat <= 1.01, no divergences), Resilient returns one
  too;
* where the raw answer is not usable, Resilient's is usable or its run record says why not;
* Resilient is never worse than raw on worst R-hat, nor (where raw is usable) on the smallest bulk ESS.

Seeds are fixed but trajectories differ between CPUs, so each comparison carries an MCSE-sized slack
(benchmarks.gallery.rhat_worse, ESS_RATIO): R-hat from 2 x 500 draws moves by a few thousandths between
runs of the same sampler on a healthy posterior and by a share of its distance from 1 on a poorly mixed
one; the smallest bulk ESS over many components of 1,000 draws by some tens of percent.
Each model runs in a child process with a hard limit, so a hang fails the test instead of the run.
The other slow tests check that every corpus model builds and has a finite log density at its initial point.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.gallery import MODELS  # noqa: E402

#: fits CI: both dialects, raw usable (best, ar2) and not (eight schools, the two baseballs, Dawid-Skene's
#: label switching), enumeration and scan. Not ucbadmit: its raw R-hat sits at the 1.01 line (1.011 here).
SUBSET = ("pymc-best", "pymc-eight_schools_centered", "pymc-baseball", "numpyro-baseball_logit",
          "numpyro-dawid_skene", "numpyro-ar2")
USABLE_RHAT = 1.01
LIMIT = 300  # seconds per model, both sides


def test_corpus_has_the_issue_models():
    dialects = [m.dialect for m in MODELS.values()]
    assert dialects.count("pymc") >= 15 and dialects.count("numpyro") >= 10
    for needed in ("pymc-stochastic_volatility", "numpyro-stochastic_volatility", "numpyro-horseshoe",
                   "numpyro-dawid_skene", "numpyro-hmm_enum", "pymc-gp_marginal", "pymc-lkj",
                   "pymc-marginalized_gmm", "pymc-rolling_regression"):
        assert needed in MODELS
    for model in MODELS.values():
        assert model.source.startswith(("pymc-devs/pymc-examples:", "pyro-ppl/numpyro:"))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*BLAS:UserWarning")  # PyTensor's note on a pip-installed BLAS (LKJ)
@pytest.mark.parametrize("name", [n for n, m in MODELS.items() if m.dialect == "pymc"])
def test_pymc_model_builds_with_finite_log_density(name):
    model = MODELS[name].build()
    point = model.initial_point()
    assert np.isfinite(model.compile_logp()(point))


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n, m in MODELS.items() if m.dialect == "numpyro"])
def test_numpyro_model_builds_with_finite_log_density(name):
    import jax
    from numpyro.infer.util import initialize_model

    fn, args = MODELS[name].build()  # NumPyro's default precision, as its examples run
    info = initialize_model(jax.random.PRNGKey(0), fn, model_args=args)
    value = info.potential_fn(info.param_info.z)
    assert np.isfinite(float(value))


def _usable(row: dict) -> bool:
    return row.get("outcome") == "ok" and row["worst_rhat"] <= USABLE_RHAT and row["divergences"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", SUBSET)
def test_resilient_never_worse_than_raw(name):
    from benchmarks.gallery import ESS_RATIO, RHAT_SLACK, rhat_worse, run_model

    rows = {r["side"]: r for r in run_model(name, ["raw", "resilient"], LIMIT)}
    raw, res = rows["raw"], rows["resilient"]
    assert res["outcome"] in ("ok", "failed"), res  # returned draws, or gave up with its attempt log
    attempts = res.get("attempts") or []
    log = "\n".join(str(a) for a in attempts)
    if raw.get("outcome") != "ok":  # the raw tool gave no answer: nothing to be worse than
        assert res["outcome"] == "ok" or res.get("message"), res
        return
    if _usable(raw):
        assert res["outcome"] == "ok", res
        if res["divergences"]:
            # raw's 0 is its seed's; on some CPU a few under the limit come back, after the loop tried a remedy
            # for them (one higher target_accept, the better attempt returned): never over the loop's limit
            returned = next(a for a in attempts if a["attempt"] == res["returned_attempt"])
            size = returned["draws"] * returned["settings"]["chains"]
            assert len(attempts) > 1 and res["divergences"] <= 0.005 * size, log
        assert res["worst_rhat"] <= USABLE_RHAT + RHAT_SLACK / 2, (raw["worst_rhat"], res["worst_rhat"], log)
        assert res["min_ess_bulk"] >= ESS_RATIO * raw["min_ess_bulk"], (raw["min_ess_bulk"], res["min_ess_bulk"], log)
    else:  # silently wrong raw: fixed, or the record names why not
        assert _usable(res) or res.get("message"), (res, log)
    if res["outcome"] == "ok":
        assert not rhat_worse(raw["worst_rhat"], res["worst_rhat"]) or math.isinf(raw["worst_rhat"]), \
            (raw["worst_rhat"], res["worst_rhat"], log)
