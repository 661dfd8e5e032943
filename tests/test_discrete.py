"""Discrete latents run under the loop with PyMC's compound step (issue #16): NUTS on the continuous
latents, PyMC's default step on the discrete ones, as pm.sample assigns them; preflight checks the
continuous part at the discrete latents' initial values; nutpie and NumPyro refuse them by name."""

import numpy as np
import pytest

import resilient
from resilient import record
from resilient.errors import DiscreteLatentError, PreflightError
from resilient.model import sample as site
from resilient.distributions import Bernoulli, Beta, Normal
from tests.corpus.pymc_models import switchpoint  # PyMC's coal-mining shape; the counts change after 1924

pytestmark = pytest.mark.pymc

SEED = 20261128
YEARS = np.arange(1900, 1960)


@pytest.fixture(scope="module")
def run():
    return resilient.sample(switchpoint(), draws=500, tune=500, chains=2, random_seed=SEED, progressbar=False)


def test_a_switchpoint_samples_with_the_compound_step_and_finds_the_change(run):
    assert set(run.posterior.data_vars) == {"switchpoint", "early_rate", "late_rate"}
    assert run.posterior["switchpoint"].dtype.kind == "i"
    years = run.posterior["switchpoint"].values.ravel()
    assert np.all((YEARS.min() <= years) & (years <= YEARS.max()))
    assert 1918 <= np.median(years) <= 1930, "the counts change after 1924"
    early, late = float(run.posterior["early_rate"].mean()), float(run.posterior["late_rate"].mean())
    assert early > 2 * late
    engine = record.read_run(run)
    assert engine["backend"] == "pymc" and "compound step" in engine["engine_reason"]
    assert record.read_attempts(run)[-1]["outcome"] == "accepted"


def test_preflight_sees_the_continuous_part_at_the_discrete_initial_value():
    compiled = resilient.compile(switchpoint()).compiled
    assert compiled.discrete_latents == ("switchpoint",)
    assert set(compiled.latent_names) == {"early_rate", "late_rate"} and compiled.dimension == 2
    assert compiled.sites["switchpoint"].kind == "latent"
    x = compiled.initial_point("default", 1)
    value, gradient = compiled.log_density_and_gradient(x)
    assert np.isfinite(value) and np.all(np.isfinite(gradient))
    assert "switchpoint" in compiled.site_log_densities(x)
    report = resilient.preflight(switchpoint())
    assert report.ok


def test_nutpie_refuses_a_discrete_latent_by_name_and_says_what_to_use():
    with pytest.raises(DiscreteLatentError, match=r"nutpie samples continuous latent variables only, and "
                                                  r"`switchpoint` is discrete. engine='pymc'"):
        resilient.sample(switchpoint(), engine="nutpie", draws=10, tune=10, chains=1, progressbar=False)


def mixture_membership(y):
    """A shared-API model with a Bernoulli latent per observation."""
    p = site("p", Beta(2, 2))
    z = site("z", Bernoulli(p, shape=len(y)))
    site("y", Normal(-2 + 4 * z, 1.0), obs=y)


def test_a_shared_api_discrete_latent_runs_on_pymc_and_numpyro_says_to_use_it():
    y = np.array([-2.1, -1.7, 2.2, 1.9, 2.4])
    data = resilient.sample(mixture_membership, y, backend="pymc", draws=300, tune=300, chains=2, random_seed=SEED,
                            progressbar=False)
    z = data.posterior["z"].values
    assert z.shape[-1] == 5 and set(np.unique(z)) <= {0, 1}
    assert z[..., :2].mean() < 0.2 and z[..., 2:].mean() > 0.8
    with pytest.raises(PreflightError, match=r"sample on PyMC \(backend='pymc'"):
        resilient.sample(mixture_membership, y, backend="numpyro", draws=10, tune=10, chains=1, progressbar=False)
