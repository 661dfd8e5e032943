"""Native models through resilient.sample: a pm.Model and a NumPyro function of eight schools."""

import numpy as np
import pytest

import resilient
from examples import reference_models
from resilient.errors import UnsupportedModelError
from tests.loop_paths import draws_returned
from tests.reference_checks import mismatches

SEED = 20261126


@pytest.fixture(scope="module")
def eight_schools():
    _, data, reference = reference_models.load("eight_schools-eight_schools_noncentered")
    return data, reference


@pytest.mark.pymc
def test_native_pymc_model_in_a_with_block_gives_the_reference(eight_schools):
    import pymc as pm

    data, reference = eight_schools
    with pm.Model():
        mu = pm.Normal("mu", 0, 5)
        tau = pm.HalfCauchy("tau", 5)
        theta_trans = pm.Normal("theta_trans", 0, 1, shape=data["J"])
        theta = pm.Deterministic("theta", mu + tau * theta_trans)
        pm.Normal("y", theta, data["sigma"], observed=data["y"])
        result = resilient.sample(1000, tune=1000, chains=4, random_seed=SEED, progressbar=False, cores=2)
    assert mismatches(result, reference, ["mu", "tau", "theta"]) == []
    assert set(result.children) >= {"posterior", "sample_stats", "observed_data"}
    # 1000 draws, or more where the loop ran the chains longer (an R-hat just over the goal on some CPU)
    assert result.posterior["theta"].shape == (4, draws_returned(result, 1000), 8)


@pytest.mark.numpyro
def test_native_numpyro_function_gives_the_reference(eight_schools):
    import numpyro
    import numpyro.distributions as dist

    def eight_schools_model(J, sigma, y=None):
        mu = numpyro.sample("mu", dist.Normal(0, 5))
        tau = numpyro.sample("tau", dist.HalfCauchy(5))
        with numpyro.plate("J", J):
            theta_trans = numpyro.sample("theta_trans", dist.Normal(0, 1))
            theta = numpyro.deterministic("theta", mu + tau * theta_trans)
            numpyro.sample("y", dist.Normal(theta, sigma), obs=y)

    data, reference = eight_schools
    result = resilient.sample(eight_schools_model, data["J"], data["sigma"], y=data["y"], draws=1000,
                              random_seed=SEED, progressbar=False)
    assert mismatches(result, reference, ["mu", "tau", "theta"]) == []
    assert np.allclose(result.observed_data["y"].values, data["y"])


def test_unsupported_models_get_a_clear_error():
    with pytest.raises(UnsupportedModelError, match=r"`model` must be a shared-API model function .* got builtins.str"):
        resilient.sample(model="not a model")
    with pytest.raises(UnsupportedModelError, match=r"No model given. Pass one as the first argument"):
        resilient.sample()


@pytest.mark.numpyro
def test_numpyro_function_on_the_pymc_backend_is_refused():
    import numpyro
    import numpyro.distributions as dist

    def native():
        numpyro.sample("x", dist.Normal(0, 1))

    with pytest.raises(UnsupportedModelError, match=r"native numpyro model, so `backend` must be 'numpyro', got 'pymc'"):
        resilient.sample(native, backend="pymc")


def _builder_sqrt():
    import pymc as pm

    with pm.Model() as model:
        x = pm.Normal("x", 0, 1)
        pm.Normal("y", pm.math.sqrt(x), 1, observed=1.0)
    return model


def _builder_negative_scale():
    import pymc as pm

    with pm.Model() as model:
        pm.Normal("y", 0, -1, observed=1.0)
    return model


def _builder_without_return():
    import pymc as pm

    with pm.Model():
        pm.Normal("x", 0, 1)


@pytest.mark.pymc
def test_a_function_that_returns_a_pm_model_is_a_pymc_model_on_every_entry_point():
    sick = resilient.preflight(_builder_sqrt)
    assert sick.backend == "pymc"
    assert any(f.site == "y" and f.parameter == "x" for f in sick.findings), sick.table()
    negative = resilient.preflight(_builder_negative_scale)
    assert negative.backend == "pymc" and negative.exit_code == 1 and negative.errors[0].site == "y"
    with pytest.raises(UnsupportedModelError, match=r"_builder_without_return\(\) refers to PyMC but returned NoneType"):
        resilient.preflight(_builder_without_return)


def test_a_function_that_declares_no_site_is_an_error_not_a_clean_report():
    def empty(y=1.0):
        return y

    report = resilient.preflight(empty, y=2.0)
    assert report.exit_code == 1
    assert report.errors[0].message.startswith("empty declares no site")
    with pytest.raises(resilient.PreflightError, match="empty declares no site"):
        resilient.sample(empty, y=2.0, progressbar=False)


def _unbounded_truncation_model(lower=None, upper=np.inf, initval=None):
    """mu ~ Normal(0, 1) written as a pm.Truncated with no finite bound; y ~ Normal(mu, 1): mu's posterior is
    Normal(sum(y) / (n + 1), 1 / sqrt(n + 1)), that of the untruncated model."""
    import pymc as pm

    with pm.Model() as model:
        mu = pm.Truncated("mu", pm.Normal.dist(0.0, 1.0), lower=lower, upper=upper, initval=initval)
        pm.Normal("y", mu, 1.0, observed=UNBOUNDED_Y)
    return model


UNBOUNDED_Y = np.array([0.8, 1.6, 0.3, 1.1])


@pytest.mark.pymc
def test_every_pm_truncation_with_no_finite_bound_is_found():
    import pymc as pm

    from resilient.adapters.pymc.native import unbounded_truncations

    with pm.Model() as model:
        pm.Truncated("a", pm.Cauchy.dist(0.0, 1.0), lower=None, upper=np.inf)
        pm.Truncated("b", pm.Gamma.dist(2.0, 1.0), lower=-np.inf, upper=None)
        pm.Truncated("c", pm.Normal.dist(0.0, 1.0), lower=-np.inf, upper=np.inf, shape=3)
        pm.TruncatedNormal("d", 0.0, 1.0)
        pm.Truncated("kept_lower", pm.Cauchy.dist(0.0, 1.0), lower=0.0, upper=np.inf)
        pm.TruncatedNormal("kept_upper", 0.0, 1.0, upper=[1.0, np.inf])
        pm.Normal("plain", 0.0, 1.0)
    assert unbounded_truncations(model) == ["a", "b", "c", "d"]


@pytest.mark.pymc
def test_a_pm_truncated_with_no_finite_bound_is_rewritten_and_named_by_preflight():
    """pm.sample stops on such a site with KeyError: 'mu_interval__' (PyMC 6.4); Resilient drops the truncation
    on the model's fgraph (the same density: its normaliser is log 1) and says so, naming the site."""
    from resilient.backend import get_adapter
    from resilient.model import NativeModel

    model = _unbounded_truncation_model()
    report = resilient.preflight(model)
    assert report.ok
    [finding] = [f for f in report.findings if f.check == "rewrite"]
    assert (finding.severity, finding.site, finding.fix) == ("fixed", "mu", "mu ~ Normal(0, 1)")
    assert "Truncated(Normal(0, 1), lower=-inf, upper=inf)" in finding.message and "KeyError" in finding.message
    suggested = resilient.preflight(model, fix=False)
    assert [(f.severity, f.site) for f in suggested.findings if f.check == "rewrite"] == [("warning", "mu")]
    fixed = get_adapter("pymc").compile(NativeModel("pymc", model))
    as_written = get_adapter("pymc").compile(NativeModel("pymc", model, fix=False))
    assert list(fixed.latent_names) == list(as_written.latent_names) == ["mu"]
    for value in (-2.0, 0.3, 4.0):  # the same density, with and without the rewrite
        np.testing.assert_allclose(fixed.log_density(fixed.unconstrain({"mu": value})),
                                   as_written.log_density(as_written.unconstrain({"mu": value})), rtol=1e-12)
    assert type(model.free_RVs[0].owner.op).__name__.startswith("Truncated"), "the user's model is left as it was"


@pytest.mark.pymc
@pytest.mark.parametrize("engine, fix", [("pymc", True), pytest.param("nutpie", True, marks=pytest.mark.slow),
                                         pytest.param("pymc", False, marks=pytest.mark.slow)])
def test_a_pm_truncated_with_no_finite_bound_samples_the_untruncated_posterior(engine, fix):
    from arviz_stats.base import array_stats

    data = resilient.sample(_unbounded_truncation_model(), draws=1000, tune=500, chains=2, random_seed=SEED,
                            progressbar=False, engine=engine, fix=fix, cores=1)
    draws = np.asarray(data.posterior["mu"].values, float)
    n = len(UNBOUNDED_Y)
    mean, sd = UNBOUNDED_Y.sum() / (n + 1), 1 / np.sqrt(n + 1)
    mcse = float(array_stats.mcse(draws, chain_axis=0, draw_axis=1, method="mean"))
    sd_mcse = float(array_stats.mcse(draws, chain_axis=0, draw_axis=1, method="sd"))
    assert abs(draws.mean() - mean) < 4 * mcse, (draws.mean(), mean, mcse)
    assert abs(draws.std() - sd) < 4 * sd_mcse, (draws.std(), sd, sd_mcse)


@pytest.mark.pymc
def test_a_pm_truncated_with_no_finite_bound_that_cannot_be_rewritten_is_named_with_the_fix():
    """PyMC's model fgraph cannot hold a model with initial values set: preflight names the site and the fix."""
    report = resilient.preflight(_unbounded_truncation_model(initval=0.5))
    [finding] = report.findings
    assert (finding.severity, finding.site) == ("error", "mu") and not report.ok
    assert finding.fix == "write mu ~ Normal(0, 1) without pm.Truncated"
