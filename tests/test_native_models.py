"""Native models through resilient.sample: a pm.Model and a NumPyro function of eight schools."""

import numpy as np
import pytest

import resilient
from examples import reference_models
from resilient.errors import UnsupportedModelError
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
    assert result.posterior["theta"].shape == (4, 1000, 8)


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
