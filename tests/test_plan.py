"""One way through a call (#21, item 2): what the user passed is resolved once, up front, into a
:class:`resilient.plan.Plan`; the loop runs the plan and the result is shaped as it says."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import resilient
from resilient import record
from resilient.distributions import HalfNormal, Normal
from resilient.model import sample as site
from resilient.options import RunOptions
from resilient.plan import Plan

Y = np.random.default_rng(1).normal(1.0, 2.0, 30)


def location(y):
    mu = site("mu", Normal(0, 5))
    sigma = site("sigma", HalfNormal(5))
    site("y", Normal(mu, sigma), obs=y)


@pytest.fixture(scope="module")
def sampler():
    return resilient.compile(location, y=Y, backend="numpyro")


@pytest.mark.numpyro
def test_a_plan_holds_every_decision_before_anything_samples(sampler, tmp_path):
    options = RunOptions(draws=200, tune=300, chains=2, random_seed=4, var_names=("mu",), progressbar=False,
                         checkpoint=str(tmp_path / "run"))
    plan = sampler.plan(options)
    assert isinstance(plan, Plan) and plan.engine == "numpyro" and plan.engine_reason.startswith("auto")
    assert (plan.settings.draws, plan.settings.tune, plan.settings.chains) == (200, 300, 2)
    assert plan.keep == ["mu"] and plan.warm is None and plan.checkpoint is not None
    assert sampler.last_state is None and not list((tmp_path / "run").glob("attempt-*")), "nothing sampled yet"
    said = plan.describe()
    assert "2 chains x (300 warm-up + 200 draws)" in said and "on numpyro" in said and "checkpoint in" in said
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field .engine."):
        plan.engine = "pymc"


@pytest.mark.numpyro
def test_the_run_does_what_its_plan_says(sampler):
    plan = sampler.plan(RunOptions(draws=200, tune=300, chains=2, random_seed=4, var_names=("mu",),
                                   progressbar=False), warm_start=False)
    data = sampler.execute(plan)
    run = record.read_run(data)
    assert run["backend"] == plan.engine and run["engine_reason"] == plan.engine_reason
    assert list(data.posterior.data_vars) == ["mu"] and data.posterior.sizes["chain"] == 2
    assert data.posterior.sizes["draw"] >= 200  # the loop may run the chains longer, never shorter
    assert record.read_attempts(data)[0]["settings"]["random_seed"] == plan.settings.random_seed


@pytest.mark.numpyro
def test_bad_arguments_are_refused_by_the_plan_not_mid_run(sampler):
    with pytest.raises(resilient.ResilientError, match=r"mass_matrix='low_rank' is not adapted by 'numpyro'"):
        sampler.plan(RunOptions(mass_matrix="low_rank"))
    with pytest.raises(resilient.ResilientError, match=r"`var_names` lists \['nope'\]"):
        sampler.plan(RunOptions(var_names=("nope",)))
    with pytest.raises(resilient.ResilientError, match="A resumed run continues the plan its checkpoint holds"):
        sampler.plan(RunOptions(resume="somewhere"))


@pytest.mark.numpyro
def test_a_plan_with_a_checkpoint_runs_once(sampler, tmp_path):
    """Its checkpoint holds that run; executing the plan again would mix two runs in one folder."""
    plan = sampler.plan(RunOptions(draws=50, tune=50, chains=2, random_seed=1, progressbar=False,
                                   checkpoint=str(tmp_path / "run")), warm_start=False)
    sampler.execute(plan)
    with pytest.raises(resilient.ResilientError, match="already holds its run: make a new plan"):
        sampler.execute(plan)
