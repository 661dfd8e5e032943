"""A pm.Model on NumPyro's NUTS through PyMC's JAX translation (issue #24, item 3): ``engine="numpyro"`` or
pm.sample's ``nuts_sampler="numpyro"`` on a pm.Model runs the pymc_numpyro engine, opt-in (auto does not pick it),
differentiated by PyTensor's symbolic gradient (JAX's autodiff of the translation gives NaN through PyMC's guarded
log CDFs).

Every guarantee holds there: preflight evaluates the JAX function NUTS runs, a time budget stops the run between
chunks and keeps the finished draws, the checkpoint's sampler state resumes it, the DataTree has pm.sample's groups,
names and dims, and jax's global x64 flag is left as the user set it. The posterior agrees with PyMC's NUTS within
MCSE and with the posteriordb reference (``slow``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytestmark = [pytest.mark.pymc, pytest.mark.numpyro]
pm = pytest.importorskip("pymc")
pytest.importorskip("numpyro")

import resilient  # noqa: E402
from resilient import record  # noqa: E402
from resilient.adapters.pymc_numpyro.compiled import PYMC_COMPUTED  # noqa: E402
from resilient.backend import STAT_NAMES  # noqa: E402
from resilient.errors import ResilientError  # noqa: E402

SEED = 20261206
Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
SCHOOLS = list("ABCDEFGH")
RUN = dict(tune=200, chains=2, random_seed=SEED, progressbar=False)


def _schools():
    """Eight schools, non-centred, with coords and dims, a pm.Data and a Deterministic (the reference's names:
    theta_trans, theta)."""
    with pm.Model(coords={"school": SCHOOLS}) as model:
        sigma = pm.Data("sigma", SIGMA, dims="school")
        mu = pm.Normal("mu", 0, 5)
        tau = pm.HalfCauchy("tau", 5)
        theta_trans = pm.Normal("theta_trans", 0, 1, dims="school")
        theta = pm.Deterministic("theta", mu + tau * theta_trans, dims="school")
        pm.Normal("y", theta, sigma, observed=Y, dims="school")
    return model


def _quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


@pytest.fixture(scope="module")
def model():
    return _schools()


@pytest.fixture(scope="module")
def sampler(model):
    """The model compiled once for NumPyro's NUTS (later runs reuse its JAX programs)."""
    return resilient.compile(model, engine="numpyro")


@pytest.fixture(scope="module")
def run(sampler):
    import jax

    before = bool(jax.config.jax_enable_x64)
    data = resilient.sample(sampler, draws=200, **RUN)
    return data, before, bool(jax.config.jax_enable_x64)


# --- choosing the engine (no sampling) ---


def test_numpyro_on_a_pm_model_selects_numpyros_nuts_over_pymcs_jax_translation():
    from resilient.engine import choose_engine, resolve_engine

    assert resolve_engine("auto", "numpyro", None) == ("numpyro", None)  # the model's language decides
    choice = choose_engine("numpyro", "pymc", native=True)
    assert choice.engine == "pymc_numpyro" and "nuts_sampler='numpyro'" in choice.reason
    assert choose_engine("numpyro", "numpyro", native=True).engine == "numpyro"  # a NumPyro model: its own
    assert choose_engine("pymc_numpyro", "pymc", native=False).engine == "pymc_numpyro"
    assert choose_engine("auto", "pymc", native=True).engine in ("pymc", "nutpie")  # opt-in: auto never picks it


def test_a_shared_api_model_with_engine_numpyro_and_backend_pymc_is_refused_by_name():
    from resilient.distributions import Normal
    from resilient.model import sample as site

    def tiny():
        site("x", Normal(0, 1))

    with pytest.raises(ResilientError, match="engine='numpyro' and backend='pymc' disagree for a shared-API model.*"
                                             "engine='pymc_numpyro'"):
        resilient.sample(tiny, engine="numpyro", backend="pymc")


def test_a_discrete_latent_is_refused_with_the_engine_that_samples_it():
    from resilient.adapters.pymc import PyMCAdapter
    from resilient.backend import get_adapter
    from resilient.errors import DiscreteLatentError
    from resilient.model import NativeModel

    with pm.Model() as model:
        p = pm.Beta("p", 2, 2)
        z = pm.Bernoulli("z", p)
        pm.Normal("y", z, 1, observed=np.array([0.3, 1.1]))
    inner = PyMCAdapter().compile(NativeModel("pymc", model))
    with pytest.raises(DiscreteLatentError, match="`z` is discrete. engine='pymc' runs PyMC's compound step"):
        get_adapter("pymc_numpyro").wrap(inner)


# --- one run, its result (fast) ---


def test_the_result_has_pm_samples_groups_names_and_dims(run):
    data, _, _ = run
    assert set(data.children) >= {"posterior", "sample_stats", "observed_data", "constant_data"}
    assert "warmup_posterior" not in data.children
    posterior = data.posterior
    assert list(posterior.data_vars) == ["mu", "tau", "theta_trans", "theta"]  # free variables, then deterministics
    assert posterior["theta"].dims == ("chain", "draw", "school") and posterior["mu"].dims == ("chain", "draw")
    assert posterior["school"].values.tolist() == SCHOOLS and posterior.sizes["draw"] >= 200
    # the names pm.sample(nuts_sampler="numpyro") gives (lp is the log density: PyMC's JAX path puts the potential),
    # and PyMC's NUTS names that NumPyro's NUTS has a value for, as on every engine auto picks for a pm.Model
    assert set(data.sample_stats.data_vars) == set(STAT_NAMES) | set(PYMC_COMPUTED)
    stats = data.sample_stats
    assert stats["divergences"].dtype == np.int64 and np.array_equal(
        stats["divergences"].values, np.cumsum(stats["diverging"].values, axis=1))
    assert np.array_equal(stats["step_size_bar"].values, stats["step_size"].values)
    assert np.isnan(stats["largest_eigval"].values).all()
    assert data.sample_stats["diverging"].dtype == bool
    assert data.observed_data["y"].dims == ("school",) and np.array_equal(data.observed_data["y"].values, Y)
    assert np.array_equal(data.constant_data["sigma"].values, SIGMA)
    np.testing.assert_allclose(data.posterior["theta"].values,
                               data.posterior["mu"].values[..., None]
                               + data.posterior["tau"].values[..., None] * data.posterior["theta_trans"].values)


def test_the_run_record_and_sampler_state_name_the_engine_and_why(run):
    data, _, _ = run
    run_info = record.read_run(data)
    assert run_info["backend"] == "pymc_numpyro"
    assert "NumPyro's NUTS over PyMC's JAX translation" in run_info["engine_reason"]
    state = data["sampler_state"]
    assert state.attrs["engine"] == "pymc_numpyro" and state.attrs["adaptation"] == "whole"
    assert state["draws_done"].values.tolist() == [data.posterior.sizes["draw"]] * 2


def test_a_later_call_warm_starts_from_a_results_adaptation(run, sampler):
    data, _, _ = run
    later = _quiet(sampler.sample, draws=100, warm_start=data, **RUN)
    warm = record.read_attempts(later)[0]["settings"]["warm_start"]
    assert warm["used"] and warm["window"] < RUN["tune"], warm
    assert later["sampler_state"].attrs["engine"] == "pymc_numpyro"


def test_float64_without_touching_the_users_x64_flag(run, sampler):
    data, before, after = run
    assert before == after
    assert data.posterior["mu"].dtype == np.float64
    compiled = sampler.cache[("pymc_numpyro", sampler.model)]
    x = compiled.initial_point("default", 1)
    value, gradient = compiled.log_density_and_gradient(x)  # the JAX function NUTS runs (preflight evaluates it)
    reference, reference_gradient = compiled.inner.log_density_and_gradient(x)  # PyMC's own (PyTensor)
    assert value == pytest.approx(reference, rel=1e-12)
    np.testing.assert_allclose(gradient, reference_gradient, rtol=1e-10, atol=1e-12)


def test_a_time_budget_stops_it_between_chunks_and_keeps_the_finished_draws(sampler):
    with pytest.warns(resilient.ResilientWarning, match="The result holds only the finished draws"):
        data = resilient.sample(sampler, draws=10**7, time_budget=2.5, **RUN)
    run_info = record.read_run(data)
    assert run_info["status"] == "budget" and run_info["backend"] == "pymc_numpyro"
    draws = data.posterior.sizes["draw"]
    assert 0 < draws < 10**7 and np.all(np.isfinite(data.posterior["mu"].values))
    assert data["sampler_state"]["draws_done"].values.tolist() == [draws, draws]


def test_a_checkpointed_run_stopped_by_its_budget_resumes_where_it_stopped(sampler, model, tmp_path):
    folder = str(tmp_path / "run")
    with pytest.warns(resilient.ResilientWarning):
        stopped = resilient.sample(sampler, draws=10**7, time_budget=2.5, checkpoint=folder, **RUN)
    done = stopped.posterior.sizes["draw"]
    assert done > 0, "stopped while sampling, not in warm-up"
    resumed = _quiet(resilient.resume, folder, model, draws=done + 300, progressbar=False)
    attempt = record.read_attempts(resumed)[-1]
    assert record.read_run(resumed)["backend"] == "pymc_numpyro"
    assert attempt["settings"]["resumed"]["warmup_iterations_run"] == [0, 0], "no warm-up ran again"
    assert resumed.posterior.sizes["draw"] == done + 300
    # the draws made before the stop are the resumed run's first ones, as they were
    assert np.array_equal(resumed.posterior["theta"].values[:, :done], stopped.posterior["theta"].values)


# --- agreement (slow: PyMC's NUTS and a longer run) ---


def _far_tail():
    """P4 as a pm.Model: a Normal truncated 40 sd out, whose log normaliser PyMC guards with a switch."""
    with pm.Model() as model:
        mu = pm.Normal("mu", 0, 1)
        pm.Truncated("V", pm.Normal.dist(mu, 1), lower=40.0)
    return model


def test_the_gradient_is_pytensors_where_jaxs_autodiff_of_a_switch_gives_nan():
    """JAX's autodiff of the translation differentiates both branches of PyMC's guarded log CDF (the branch not
    taken has an infinite derivative, times zero: NaN in mu at every point). The engine's gradient is PyTensor's,
    as PyMC's NUTS has it: equal to PyMC's own at the initial point and in the tail."""
    import jax

    sampler = resilient.compile(_far_tail(), engine="numpyro")
    assert sampler.choose_engine().engine == "pymc_numpyro"
    engine_model = sampler.cache[("pymc_numpyro", sampler.model)]
    inner = engine_model.inner
    logp = engine_model.jax_functions[0]
    assert engine_model.gradient == "pytensor"
    for mu, v in ((0.0, 40.5), (-0.5354, 41.93), (2.0, 45.0)):
        x = inner.unconstrain({"mu": np.array(mu), "V": np.array(v)})
        value, gradient = engine_model.log_density_and_gradient(x)
        expected_value, expected_gradient = inner.log_density_and_gradient(x)
        assert np.isfinite(gradient).all() and value == pytest.approx(expected_value, rel=1e-10)
        np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-8)
    with jax.enable_x64(True):  # what the bare translation's autodiff gives, so this test fails if PyMC fixes it
        from pymc.sampling.jax import get_jaxified_graph

        bare = get_jaxified_graph(inputs=inner.value_vars, outputs=[inner.model.logp()])
        point = [np.asarray(a) for a in inner._inputs(inner.unconstrain({"mu": np.array(0.0), "V": np.array(40.5)}))]
        assert np.isnan(jax.grad(lambda *a: bare(*a)[0])(*point))
        assert np.isfinite(jax.grad(lambda *a: logp(*a)[0])(*point))


@pytest.mark.slow  # a JAX compilation; the default suite is near its 4 minutes
def test_a_gradient_graph_jax_cannot_trace_falls_back_to_jaxs_autodiff():
    """The corpus's GaussianRandomWalk (its length from dims): its PyTensor gradient splits by sizes computed from
    values, which jit cannot trace, so the engine takes JAX's autodiff of the translated log density instead; its
    gradient still equals PyMC's."""
    from tests.corpus.pymc_models import gaussian_random_walk

    sampler = resilient.compile(gaussian_random_walk(), engine="numpyro")
    sampler.choose_engine()
    engine_model = sampler.cache[("pymc_numpyro", sampler.model)]
    x = engine_model.inner.initial_point("median") + 0.3
    value, gradient = engine_model.log_density_and_gradient(x)
    assert engine_model.gradient == "jax"
    expected_value, expected_gradient = engine_model.inner.log_density_and_gradient(x)
    assert value == pytest.approx(expected_value, rel=1e-10)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-8)


@pytest.mark.slow  # a JAX compilation; the default suite is near its 4 minutes
def test_preflight_names_the_variable_whose_gradient_alone_is_not_finite(monkeypatch):
    """With JAX's autodiff (PyTensor's gradient switched off here), P4's log density is finite and its gradient in mu
    NaN, while PyMC's per-site terms and gradients are finite: preflight says so and names mu (it said the log
    density was -inf and blamed a transform's Jacobian)."""
    from resilient.adapters.pymc_numpyro import compiled as module
    from resilient.checks import run_preflight

    def untraceable(*args, **kwargs):
        raise NotImplementedError("switched off by the test")

    monkeypatch.setattr(module, "_pytensor_gradient", untraceable)
    sampler = resilient.compile(_far_tail(), engine="numpyro")
    sampler.choose_engine()
    engine_model = sampler.cache[("pymc_numpyro", sampler.model)]
    report = run_preflight(sampler.model, "pymc", compiled=engine_model)[0]
    assert engine_model.gradient == "jax"
    found = [f for f in report.errors if f.check == "gradient" and f.site is None]
    assert found and found[0].parameter == "mu"
    assert "with respect to mu is NaN or infinite" in found[0].message and "-inf" not in found[0].message


@pytest.mark.slow
def test_the_far_tail_samples_where_raw_pm_sample_on_numpyro_diverges_on_every_draw():
    """P4 on engine='numpyro': every draw of raw pm.sample(nuts_sampler='numpyro') diverges (NaN gradients) and mu's
    sd is far from its prior's 1; Resilient's draws are mu ~ Normal(0, 1) within MCSE and V above the bound."""
    model = _far_tail()
    raw = _quiet(pm.sample, draws=500, tune=500, chains=2, nuts_sampler="numpyro", random_seed=SEED,
                 progressbar=False, model=model)
    assert raw.sample_stats["diverging"].values.mean() > 0.5
    result = _quiet(resilient.sample, model, engine="numpyro", draws=1000, **RUN)
    assert record.read_run(result)["status"] == "ok" and result.sample_stats["diverging"].values.sum() == 0
    mu = result.posterior["mu"].values
    ess = _ess_bulk(mu)
    assert abs(mu.mean()) < 4 / np.sqrt(ess)  # 4 MCSE of the mean of a unit-sd posterior
    assert abs(mu.std() - 1.0) < 4 / np.sqrt(2 * ess)  # 4 MCSE of its sd (normal approximation)
    assert (result.posterior["V"].values >= 40.0).all()


def _ess_bulk(values: np.ndarray) -> float:
    from arviz_stats.base import array_stats

    return float(array_stats.ess(values, chain_axis=0, draw_axis=1, method="bulk"))


@pytest.mark.slow
def test_the_posterior_agrees_with_pymcs_nuts_and_the_reference():
    from examples import reference_models
    from tests.reference_checks import mismatches
    from tests.test_corpus import agreement_problems

    options = dict(draws=1500, tune=1000, chains=4, progressbar=False)
    ours = _quiet(resilient.sample, _schools(), nuts_sampler="numpyro", random_seed=SEED, **options)
    assert record.read_run(ours)["backend"] == "pymc_numpyro"
    theirs = _quiet(resilient.sample, _schools(), engine="pymc", random_seed=SEED + 1, **options)
    assert record.read_run(theirs)["backend"] == "pymc"
    assert agreement_problems(theirs, ours) == []
    assert mismatches(ours, reference_models.load("eight_schools-eight_schools_noncentered")[2],
                      ["mu", "tau", "theta"]) == []


@pytest.mark.slow
def test_the_layout_equals_raw_pm_sample_on_numpyro():
    """Raw pm.sample(nuts_sampler="numpyro") on the same model: the same groups (its constant_data is there when the
    model has pm.Data), variables, dims and coordinates."""
    import jax

    from tests.test_corpus import layout_problems

    before = bool(jax.config.jax_enable_x64)
    try:
        theirs = _quiet(pm.sample, 100, tune=100, chains=2, model=_schools(), nuts_sampler="numpyro",
                        random_seed=SEED, progressbar=False, compute_convergence_checks=False)
    finally:
        jax.config.update("jax_enable_x64", before)  # pm.sample turns x64 on for the process
    ours = _quiet(resilient.sample, _schools(), nuts_sampler="numpyro", draws=100, **RUN)
    for group in ("posterior", "observed_data", "constant_data"):
        assert layout_problems(theirs, ours, group) == [], group
    # every statistic of theirs, with its dims, and PyMC's NUTS names besides (PYMC_COMPUTED)
    assert set(ours.sample_stats.data_vars) == set(theirs.sample_stats.data_vars) | set(PYMC_COMPUTED)
    assert [name for name in theirs.sample_stats.data_vars
            if ours.sample_stats[name].dims != theirs.sample_stats[name].dims] == []
    assert set(ours.children) - set(theirs.children) <= {"warmup_sample_stats", "sampler_state"}


def _corpus_cases():
    from tests.corpus import pymc_models

    return [pytest.param(name, marks=pytest.mark.slow) for name, case in pymc_models.CASES.items()
            if name != "switchpoint"]  # discrete latents: PyMC's compound step only


@pytest.mark.parametrize("name", _corpus_cases())
def test_the_corpus_pm_models_agree_with_pymcs_nuts_and_keep_its_layout(name):
    """Each continuous pm.Model of the corpus (tests/corpus/pymc_models.py: dims, pm.Data, Potential, CustomDist,
    mixtures, random walks, ZeroSumNormal, LKJ, censoring, truncation, imputed missing values, dependent bounds) on
    NumPyro's NUTS agrees with raw pm.sample on PyMC's NUTS within the corpus's MCSE band, with its groups, names,
    dims and coordinates."""
    from tests.test_corpus import agreement_problems, layout_problems, pymc_run

    run = pymc_run(name)
    case, theirs = run["case"], run["theirs"]
    ours = _quiet(resilient.sample, run["model"], nuts_sampler="numpyro", draws=case.draws, tune=case.tune,
                  chains=case.chains, random_seed=SEED, progressbar=False)
    assert record.read_run(ours)["backend"] == "pymc_numpyro"
    problems = agreement_problems(theirs, ours)
    for group in ("posterior", "observed_data", "constant_data"):
        if group in theirs.children:
            problems += layout_problems(theirs, ours, group)
    assert problems == []
