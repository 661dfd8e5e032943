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


@pytest.fixture(scope="module")
def switchpoint_compiled():
    return resilient.compile(switchpoint()).compiled


def test_the_compound_steps_statistics_are_pm_samples(run):
    """PyMC's 18 NUTS statistics and the Metropolis step's (switchpoint is a DiscreteUniform), with PyMC's
    names, in sample_stats and warmup_sample_stats, as pm.sample gives them (issue #26)."""
    from resilient.adapters.pymc.runner import EXTRA_STATS

    metropolis = {"accept", "accepted", "scaling"}
    for group in ("sample_stats", "warmup_sample_stats"):
        names = set(run[group].data_vars)
        assert metropolis | set(EXTRA_STATS) | {"diverging", "tree_depth", "lp"} <= names, group
    stats = run.sample_stats
    assert all(stats[name].dtype == np.float64 for name in metropolis)
    assert set(np.unique(stats["accepted"].values)) <= {0.0, 1.0}
    assert (stats["scaling"].values > 0).all() and (stats["accept"].values >= 0).all()


def test_compound_stats_copied_per_draw_equal_those_sliced_from_pymcs_trace(switchpoint_compiled, monkeypatch):
    """The Metropolis statistics come through both of the collector's paths, with the same names and dtypes."""
    import resilient.adapters.pymc.runner as pymc_runner
    from resilient.backend import NUTSSettings

    settings = NUTSSettings(draws=12, tune=8, chains=1, random_seed=SEED, chunk_size=5)
    sliced, copied = [], []
    switchpoint_compiled.run_nuts(settings, lambda chunk: sliced.append(chunk) or True)
    monkeypatch.setattr(pymc_runner, "_recorded_in", lambda trace, names: False)
    switchpoint_compiled.run_nuts(settings, lambda chunk: copied.append(chunk) or True)
    assert [(c.start, c.warmup, c.size) for c in sliced] == [(c.start, c.warmup, c.size) for c in copied]
    for a, b in zip(sliced, copied):
        assert {"accept", "accepted", "scaling"} <= set(a.sample_stats)
        assert list(a.sample_stats) == list(b.sample_stats)
        for name in a.sample_stats:
            assert a.sample_stats[name].dtype == b.sample_stats[name].dtype, name
            if not name.startswith(("perf_counter", "process_time")):  # clocks differ run to run
                assert np.array_equal(a.sample_stats[name], b.sample_stats[name], equal_nan=True), name


def test_preflight_sees_the_continuous_part_at_the_discrete_initial_value(switchpoint_compiled):
    compiled = switchpoint_compiled
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


@pytest.mark.pymc
@pytest.mark.filterwarnings("ignore::resilient.errors.ResilientWarning")  # 100 draws: the diagnostics are not the point
def test_a_dense_mass_matrix_asked_beside_discrete_latents_is_the_one_nuts_adapts(switchpoint_compiled):
    """pm.sample ignores ``init`` when discrete latents make it assign the steps: NUTS adapted a diagonal mass
    matrix while the loop's dense-mass remedy said dense (and for ``diag_grad``). The adapter builds the NUTS
    step with the mass matrix asked."""
    from pymc.step_methods.hmc.quadpotential import QuadPotentialFullAdapt

    nuts = {"target_accept": 0.8, "max_treedepth": 10, "early_max_treedepth": 8}
    from pymc.step_methods.hmc.quadpotential import QuadPotentialDiagAdaptExp

    (dense,) = switchpoint_compiled._compound_nuts(nuts, "full", 1)
    (diagonal,) = switchpoint_compiled._compound_nuts(nuts, "diag", 1)
    (gradients,) = switchpoint_compiled._compound_nuts(nuts, "diag_grad", 1, 1000)
    assert isinstance(dense.potential, QuadPotentialFullAdapt)
    assert not isinstance(diagonal.potential, (QuadPotentialFullAdapt, QuadPotentialDiagAdaptExp))
    assert isinstance(gradients.potential, QuadPotentialDiagAdaptExp)
    data = resilient.sample(switchpoint(), engine="pymc", mass_matrix="full", draws=100, tune=200, chains=2,
                            progressbar=False, random_seed=1, policy=resilient.Policy(max_attempts=1))
    assert set(data.posterior.data_vars) >= {"switchpoint"}
