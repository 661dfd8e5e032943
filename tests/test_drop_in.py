"""resilient.sample as a drop-in for pm.sample: every pm.sample argument has a stated fate, and the
fate is what happens (the table in resilient.arguments is the one docs/guide/native-models.md shows)."""

import inspect
from pathlib import Path

import numpy as np
import pytest

import resilient
from resilient.arguments import PM_SAMPLE_ARGUMENTS, markdown_table
from resilient.distributions import HalfNormal, Normal
from resilient.errors import ResilientError
from resilient.model import sample

ROOT = Path(__file__).resolve().parents[1]


def tiny(y=np.array([0.3, -0.2, 1.1])):
    mu = sample("mu", Normal(0, 1))
    sigma = sample("sigma", HalfNormal(1))
    sample("y", Normal(mu, sigma), obs=y)


@pytest.mark.pymc
def test_every_pm_sample_argument_has_a_stated_fate_and_the_guide_shows_the_table():
    import pymc as pm

    arguments = [n for n, p in inspect.signature(pm.sample).parameters.items() if p.kind is not p.VAR_KEYWORD]
    assert [n for n in arguments if n not in PM_SAMPLE_ARGUMENTS] == []
    assert markdown_table() in (ROOT / "docs" / "guide" / "native-models.md").read_text()


@pytest.mark.parametrize("name", sorted(n for n, (fate, _) in PM_SAMPLE_ARGUMENTS.items()
                                        if fate == "refused" and n != "backend"))
def test_refused_arguments_say_why(name):
    with pytest.raises(ResilientError, match=rf"pm.sample's `{name}` is not supported by resilient.sample: "):
        resilient.sample(tiny, **{name: object()})


def test_refused_values_and_unknown_nuts_options_name_themselves():
    with pytest.raises(resilient.BackendUnavailableError, match=r"`backend` must be one of 'numpyro', 'pymc'"):
        resilient.sample(tiny, backend="zarr")
    with pytest.raises(ResilientError, match="return_inferencedata=False"):
        resilient.sample(tiny, return_inferencedata=False)
    with pytest.raises(ResilientError, match=r"nuts=\{...\} keys \['step_scale'\]"):
        resilient.sample(tiny, nuts={"step_scale": 0.1})
    with pytest.raises(ResilientError, match="nuts_sampler='blackjax' is not an engine Resilient runs"):
        resilient.sample(tiny, nuts_sampler="blackjax")
    with pytest.raises(ResilientError, match=r"`random_seed` as a list needs one non-negative int per chain \(4\)"):
        resilient.sample(tiny, random_seed=[1, 2])


def test_a_function_parameter_named_like_a_pm_sample_argument_is_data():
    def model(init):
        sample("x", Normal(init, 1))

    report = resilient.preflight(model, init=3.0)
    assert report.ok


@pytest.mark.numpyro
def test_seeds_nuts_options_and_var_names_are_honoured(compiled):
    sampler = compiled(tiny, "numpyro")
    run = dict(draws=60, tune=60, chains=2, progressbar=False)
    for seed in (lambda: np.random.default_rng(5), lambda: np.random.SeedSequence(5), lambda: [5, 6]):
        first = resilient.sample(sampler, random_seed=seed(), **run)
        again = resilient.sample(sampler, random_seed=seed(), **run)
        assert np.array_equal(first.posterior["mu"].values, again.posterior["mu"].values)
    shallow = resilient.sample(sampler, random_seed=1, nuts={"max_treedepth": 4, "target_accept": 0.9}, **run)
    assert int(shallow.sample_stats["tree_depth"].max()) <= 4 and resilient.record.read_run(shallow)["max_tree_depth"] == 4
    assert resilient.record.read_attempts(shallow)[0]["settings"]["target_accept"] == 0.9
    assert resilient.record.read_run(resilient.sample(sampler, random_seed=1, max_treedepth=5, **run))["max_tree_depth"] == 5
    only_mu = resilient.sample(sampler, random_seed=1, var_names=["mu"], **run)
    assert list(only_mu.posterior.data_vars) == ["mu"]
    with pytest.raises(ResilientError, match=r"`var_names` lists \['nu'\], which the model does not sample"):
        resilient.sample(sampler, var_names=["nu"], **run)


@pytest.mark.pymc
def test_nuts_sampler_chooses_the_backend_of_a_shared_api_model():
    data = resilient.sample(tiny, nuts_sampler="pymc", draws=50, tune=50, chains=1, random_seed=1, progressbar=False)
    assert resilient.record.read_run(data)["backend"] == "pymc"
    with pytest.raises(ResilientError, match="nuts_sampler='pymc' and backend='numpyro' disagree"):
        resilient.sample(tiny, nuts_sampler="pymc", backend="numpyro")


@pytest.mark.parametrize("engine", [pytest.param("numpyro", marks=pytest.mark.numpyro),
                                    pytest.param("pymc", marks=pytest.mark.pymc),
                                    pytest.param("nutpie", marks=[pytest.mark.pymc, pytest.mark.slow])])
def test_discard_tuned_samples_false_keeps_the_warm_up_draws(engine):
    data = resilient.sample(tiny, engine=engine, draws=200, tune=40, chains=2, random_seed=1, progressbar=False,
                            discard_tuned_samples=False)
    warm = data["warmup_posterior"]
    assert warm.sizes["chain"] == 2 and warm.sizes["draw"] == 40
    assert set(warm.data_vars) == set(data.posterior.data_vars)
    assert data["warmup_sample_stats"].sizes["draw"] == 40
    assert "warmup_posterior" not in resilient.sample(tiny, engine=engine, draws=200, tune=40, chains=2, random_seed=1,
                                                      progressbar=False).children


@pytest.mark.pymc
def test_compute_convergence_checks_true_warns_as_pm_sample_does():
    """A short run whose ESS is under 100 per chain: given True, one warning names the check and the fix;
    not given, the verdict stays in the record (the loop accepted the run) and nothing is warned."""
    import warnings

    import pymc as pm

    with pm.Model() as model:
        pm.Normal("x", 0, 1, shape=3)
    run = dict(draws=40, tune=200, chains=2, random_seed=3, progressbar=False)
    with pytest.warns(resilient.ResilientWarning, match=r"convergence checks: .*ess_bulk \(warn\)"):
        resilient.sample(model, compute_convergence_checks=True, **run)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = resilient.sample(model, compute_convergence_checks=False, **run)
    assert resilient.diagnose(data).verdict == "warn"
