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
@pytest.mark.filterwarnings("ignore::resilient.ResilientWarning")  # 60 draws may fail the policy: not checked here
def test_seeds_nuts_options_and_var_names_are_honoured(compiled):
    sampler = compiled(tiny, "numpyro")
    # one attempt: the loop's remedies for 60 draws are not what this checks (each compiles NUTS again)
    run = dict(draws=60, tune=60, chains=2, progressbar=False, max_attempts=1)
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
    # one attempt: on some CPU an R-hat over the goal would run the chains longer (more_draws), up to 4 x the draws,
    # and so many draws can pass the ESS check this test needs to fail
    run = dict(draws=40, tune=200, chains=2, random_seed=3, progressbar=False, max_attempts=1)
    with pytest.warns(resilient.ResilientWarning, match=r"convergence checks: .*ess_bulk \(warn\)"):
        resilient.sample(model, compute_convergence_checks=True, **run)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = resilient.sample(model, compute_convergence_checks=False, **run)
    assert resilient.diagnose(data).verdict == "warn"


# ---- idata_kwargs: every key of pm.to_inference_data, as pm.sample passes it on ---------------------------------

@pytest.mark.pymc
def test_every_idata_kwargs_key_has_a_stated_fate_and_the_guide_shows_its_table():
    import pymc as pm

    from resilient.arguments import IDATA_KWARGS

    keys = [n for n, p in inspect.signature(pm.to_inference_data).parameters.items() if p.kind is not p.VAR_KEYWORD]
    assert sorted(keys) == sorted(IDATA_KWARGS)
    assert markdown_table("idata_kwargs") in (ROOT / "docs" / "guide" / "native-models.md").read_text()


def _layout(data):
    """Each group's variables with their dims, and its index coordinates (sample dims' excepted)."""
    layout = {}
    for group in data.children:
        dataset = data[group].to_dataset()
        layout[group] = ({str(n): tuple(v.dims) for n, v in dataset.data_vars.items()},
                         {str(n): list(np.asarray(dataset[n].values)) for n in dataset.indexes
                          if n not in ("chain", "draw")})
    return layout


@pytest.mark.pymc
@pytest.mark.slow  # ~15 s: PyMC compiles the model for our run, for log_prior and for pm.sample's own run
def test_idata_kwargs_dims_coords_log_prior_and_transformed_as_pm_sample_gives_them():
    import warnings

    import pymc as pm

    with pm.Model(coords={"obs": range(4)}) as model:
        x = pm.Data("x", np.arange(4.0))
        mu = pm.Normal("mu", 0, 1)
        sigma = pm.HalfNormal("sigma", 1)
        pm.Normal("theta", mu, 1, shape=3)  # not a funnel: the loop keeps the model as it is
        pm.Normal("y", mu + 0.1 * x, sigma, observed=np.array([0.3, -0.2, 1.1, 0.5]))
    kwargs = {"dims": {"theta": ["group"], "y": ["row"], "x": ["row"]},
              "coords": {"group": ["a", "b", "c"], "row": [10, 11, 12, 13]},
              "include_transformed": True, "log_prior": True, "log_likelihood": True}
    run = dict(draws=300, tune=300, chains=2, random_seed=1, progressbar=False)
    ours = resilient.sample(model, engine="pymc", idata_kwargs=kwargs, **run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = pm.sample(model=model, nuts_sampler="pymc", idata_kwargs=kwargs, **run)
    mine, pymc = _layout(ours), _layout(theirs)
    for group in ("posterior", "observed_data", "constant_data", "log_likelihood", "log_prior"):
        assert mine[group] == pymc[group], group
    assert mine["posterior"][0]["theta"] == ("chain", "draw", "group") and "sigma_log__" in mine["posterior"][0]
    np.testing.assert_allclose(ours.posterior["sigma_log__"].values, np.log(ours.posterior["sigma"].values))
    prior = pm.logp(pm.HalfNormal.dist(1), ours.posterior["sigma"].values).eval()
    np.testing.assert_allclose(ours.log_prior["sigma"].values, prior)


@pytest.mark.numpyro
def test_idata_kwargs_dims_coords_warmup_and_predictive_groups(compiled):
    sampler = compiled(tiny, "numpyro")
    run = dict(draws=30, tune=30, chains=2, random_seed=2, progressbar=False)
    data = resilient.sample(sampler, discard_tuned_samples=False, idata_kwargs={
        "dims": {"y": ["row"]}, "coords": {"row": ["r1", "r2", "r3"]}, "save_warmup": False, "sample_dims": None,
        "prior": {"mu": np.zeros(5), "y": np.zeros((5, 3))},
        "posterior_predictive": {"y": np.ones((2, 30, 3))}}, **run)
    assert data.observed_data["y"].dims == ("row",) and list(data.observed_data["row"].values) == ["r1", "r2", "r3"]
    assert data.log_likelihood["y"].dims[:2] == ("chain", "draw")  # the model's dims, as pm.sample's
    assert not {"warmup_posterior", "warmup_sample_stats"} & set(data.children)
    assert data.prior["mu"].shape == (1, 5) and data.prior_predictive["y"].dims == ("chain", "draw", "row")
    assert data.posterior_predictive["y"].dims == ("chain", "draw", "row")
    assert list(data.posterior_predictive["row"].values) == ["r1", "r2", "r3"]
    narrowed = resilient.sample(sampler, idata_kwargs={"log_likelihood": ["y"]}, **run)
    assert list(narrowed.log_likelihood.data_vars) == ["y"]
    assert resilient.diagnose(data).verdict in ("ok", "warn", "fail")


@pytest.mark.numpyro
def test_idata_kwargs_that_cannot_mean_anything_here_are_refused_with_the_reason(compiled):
    sampler = compiled(tiny, "numpyro")
    run = dict(draws=20, tune=20, chains=1, progressbar=False)
    refused = [({"trace": object()}, r"pm.sample passes its own trace"),
               ({"sample_dims": ["sample"]}, r"sample dimensions \['chain', 'draw'\]"),
               ({"log_prior": True}, r"keys \['log_prior'\] are pm.to_inference_data's, computed from a pm.Model"),
               ({"include_transformed": True}, r"\['include_transformed'\]"),
               ({"model": object()}, r"must be the model being sampled"),
               ({"log_likelihood": ["mu"]}, r"names \['mu'\], which are not observed variables of the model; it has y"),
               ({"dims": {"y": ["a", "b"]}}, r"`y` has 1 dimension\(s\) after \[\], got 2 names"),
               ({"coords": {"row": [1, 2]}, "dims": {"y": ["row"]}}, r"`row` has 2 values but the dimension has length 3"),
               ({"group": 1}, r"idata_kwargs=\{...\} keys \['group'\] are not passed on")]
    for kwargs, message in refused:
        with pytest.raises(ResilientError, match=message):
            resilient.sample(sampler, idata_kwargs=kwargs, **run)
