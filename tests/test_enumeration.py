"""NumPyro models whose discrete sites are marked ``infer={"enumerate": "parallel"}`` (issue #16, item 4): the
NumPyro adapter marginalises them as NumPyro's NUTS does (``enum(config_enumerate(model))``, funsor), so they
are not latents: not in the unconstrained vector, not in the posterior, as ``az.from_numpyro`` of a raw run
shows. Each model is sampled raw (``MCMC(NUTS(model))`` under x64, as tests/test_corpus.py does) and through
``resilient.sample`` with the same seed and run lengths; the posteriors agree within MCSE-based bands
(``agreement_problems`` of the corpus: Bonferroni-corrected z at a 1% suite-wide rate, no hand-set tolerance)
and have the same variables and dims. A discrete site without the mark is refused, naming it and the fix."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("funsor")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
import numpyro.infer.initialization  # noqa: E402,F401  (arviz_base.from_numpyro reads it without importing it)

import resilient  # noqa: E402
from resilient.errors import DiscreteLatentError  # noqa: E402
from tests.test_corpus import FAMILY_ALPHA, agreement_problems, reference_problems, structure_problems  # noqa: E402

pytestmark = pytest.mark.numpyro

SEED = 20261128
RUN = dict(draws=300, tune=300, chains=2)


# --- models (synthetic data, fixed seeds) --------------------------------------------------------------

def mixture(y):
    """Two Gaussian components, a per-observation assignment summed out (NumPyro's Gaussian-mixture shape)."""
    weights = numpyro.sample("weights", dist.Dirichlet(jnp.ones(2)))
    locs = numpyro.sample("locs", dist.Normal(jnp.array([-2.0, 2.0]), 1.0).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    with numpyro.plate("data", len(y)):
        z = numpyro.sample("z", dist.Categorical(weights), infer={"enumerate": "parallel"})
        numpyro.sample("obs", dist.Normal(locs[z], sigma), obs=y)


MIXTURE_Y = np.concatenate([np.random.default_rng(1).normal(-2.0, 1.0, 60),
                            np.random.default_rng(2).normal(2.0, 1.0, 40)])


def changepoint(counts):
    """Counts whose rate changes once, at an unknown step ``tau`` summed out (one global discrete site)."""
    steps = len(counts)
    early = numpyro.sample("early_rate", dist.Exponential(0.5))
    late = numpyro.sample("late_rate", dist.Exponential(0.5))
    tau = numpyro.sample("tau", dist.Categorical(logits=jnp.zeros(steps)), infer={"enumerate": "parallel"})
    rate = jnp.where(jnp.arange(steps) < tau, early, late)
    with numpyro.plate("steps", steps):
        numpyro.sample("obs", dist.Poisson(rate), obs=counts)


CHANGEPOINT_COUNTS = np.concatenate([np.random.default_rng(3).poisson(4.0, 25),
                                     np.random.default_rng(4).poisson(1.0, 25)])


def unmarked(y):
    """The mixture with the assignment not marked for enumeration."""
    weights = numpyro.sample("weights", dist.Dirichlet(jnp.ones(2)))
    with numpyro.plate("data", len(y)):
        z = numpyro.sample("z", dist.Categorical(weights))
        numpyro.sample("obs", dist.Normal(jnp.array([-2.0, 2.0])[z], 1.0), obs=y)


# --- runs ----------------------------------------------------------------------------------------------

def _both(model, data):
    """(az.from_numpyro of a raw MCMC run, resilient.sample), same seed and run lengths."""
    import arviz as az
    from numpyro.infer import MCMC, NUTS

    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcmc = MCMC(NUTS(model), num_warmup=RUN["tune"], num_samples=RUN["draws"], num_chains=RUN["chains"],
                    chain_method="sequential", progress_bar=False)
        mcmc.run(jax.random.PRNGKey(SEED), data)
        theirs = az.from_numpyro(mcmc)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = resilient.sample(model, data, random_seed=SEED, progressbar=False, **RUN)
    return theirs, ours, [str(w.message) for w in caught]


@pytest.fixture(scope="module")
def mixture_runs():
    return _both(mixture, MIXTURE_Y)


@pytest.fixture(scope="module")
def changepoint_runs():
    return _both(changepoint, CHANGEPOINT_COUNTS)


# --- tests ---------------------------------------------------------------------------------------------

def _numpyro_potential(model, *args):
    """NumPyro's own potential for ``model``, built as ``initialize_model`` builds it (its model transforms,
    ``_prepare_model_for_potential``: ``enum(config_enumerate(model))`` where a site enumerates), without
    its search for valid initial parameters (4 s here, eagerly through funsor)."""
    from numpyro import handlers
    from numpyro.infer.util import _get_model_transforms, _prepare_model_for_potential, get_potential_fn

    inv_transforms, _, enum, model_trace = _get_model_transforms(handlers.seed(model, 0), args)
    prepared = _prepare_model_for_potential(model, model_trace, enum=enum)
    potential, _ = get_potential_fn(prepared, inv_transforms, enum=enum, model_args=args)
    return enum, jax.jit(potential)


def test_enumerated_sites_are_not_latents_and_the_density_is_numpyros():
    """The compiled model's log density is NumPyro's own enumerated potential, to rounding (both in float64)."""
    compiled = resilient.compile(mixture, MIXTURE_Y, float32=False).compiled
    assert compiled.latent_names == ("weights", "locs", "sigma") and compiled.dimension == 1 + 2 + 1
    assert compiled.enumerated == ("z",) and compiled.sites["z"].kind == "enumerated"
    with jax.enable_x64(True):
        enum, potential = _numpyro_potential(mixture, jnp.asarray(MIXTURE_Y))
        assert enum, "NumPyro enumerates z"
        for seed in range(3):
            x = compiled.initial_point("default", seed)
            ours, gradient = compiled.log_density_and_gradient(x)
            theirs = -float(potential(compiled.unravel(jnp.asarray(x))))
            assert ours == pytest.approx(theirs, rel=1e-12) and np.all(np.isfinite(gradient))
            terms = compiled.site_log_densities(x)  # z's term is the marginal of z and what depends on it (obs)
            assert set(terms) == {"weights", "locs", "sigma", "z"}
            assert sum(terms.values()) == pytest.approx(ours, rel=1e-10)
            assert set(compiled.constrain(x)) == {"weights", "locs", "sigma"}
    assert resilient.preflight(mixture, MIXTURE_Y).ok


def _assert_agree(theirs, ours):
    """The raw run is a usable reference, ours agrees with it within the MCSE bands, and has its structure."""
    assert not reference_problems(theirs), reference_problems(theirs)
    assert not (problems := agreement_problems(theirs, ours)), "\n".join(problems)
    assert not (problems := structure_problems(theirs, ours)), "\n".join(problems)


@pytest.mark.slow
def test_a_mixture_with_enumerated_assignments_agrees_with_raw_numpyro(mixture_runs):
    theirs, ours, messages = mixture_runs
    _assert_agree(theirs, ours)
    assert set(ours.posterior.data_vars) == set(theirs.posterior.data_vars) == {"weights", "locs", "sigma"}
    # the one thing ours adds by default on NumPyro, a log_likelihood group, cannot be made: said, not hidden
    assert "log_likelihood" not in ours.children
    assert any("depends on the enumerated site z" in m for m in messages), messages


@pytest.mark.slow
def test_a_changepoint_with_an_enumerated_step_agrees_with_raw_numpyro(changepoint_runs):
    theirs, ours, _ = changepoint_runs
    _assert_agree(theirs, ours)
    assert set(ours.posterior.data_vars) == {"early_rate", "late_rate"}
    assert float(ours.posterior["early_rate"].mean()) > 2 * float(ours.posterior["late_rate"].mean())


def test_an_unmarked_discrete_site_is_refused_with_its_name_and_the_fix():
    with pytest.raises(DiscreteLatentError, match=r"`z` \(Categorical\) is not marked for enumeration: annotate "
                                                  r"it with infer=\{'enumerate': 'parallel'\}") as caught:
        resilient.compile(unmarked, MIXTURE_Y)
    assert caught.value.site == "z" and "enumerate" in caught.value.fix

    def poisson_latent(y):
        k = numpyro.sample("k", dist.Poisson(3.0), infer={"enumerate": "parallel"})
        numpyro.sample("obs", dist.Normal(k, 1.0), obs=y)

    with pytest.raises(DiscreteLatentError, match=r"`k` \(Poisson\) has infinitely many values"):
        resilient.compile(poisson_latent, MIXTURE_Y[:3])


# --- issue #26, item 2: NumPyro's own hmm_enum model_1, which float64 cannot run -------------------------

HMM_RUN = dict(draws=100, tune=100, chains=2)  # 7 min on 2 busy cores at 150 + 150


def _hmm_invariants(probs_x: np.ndarray, probs_y: np.ndarray) -> dict:
    """Quantities the hidden states' labels do not change (the posterior is symmetric under relabelling, so a
    chain may settle on any labelling): the mean staying probability and each tone's mean emission probability."""
    return {"stay": np.trace(probs_x, axis1=-2, axis2=-1) / probs_x.shape[-1],
            **{f"tone{j}": probs_y[..., j].mean(-1) for j in range(probs_y.shape[-1])}}


@pytest.fixture(scope="module")
def hmm_runs():
    """(raw ``MCMC(NUTS(model_1))`` in jax's default precision, as NumPyro's example runs it; resilient.sample
    with its defaults), the label-invariant quantities of each as ``{name: (chain, draw)}``."""
    from numpyro.infer import MCMC, NUTS

    from examples.hmm_enum import model_1, simulate

    data = simulate(num_sequences=4, max_length=8, data_dim=3)
    arguments = (data["sequences"], data["lengths"], data["args"])
    assert not jax.config.read("jax_enable_x64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcmc = MCMC(NUTS(model_1), num_warmup=HMM_RUN["tune"], num_samples=HMM_RUN["draws"],
                    num_chains=HMM_RUN["chains"], chain_method="sequential", progress_bar=False)
        mcmc.run(jax.random.PRNGKey(SEED), *arguments)
        raw = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
        # max_attempts=1: a float32 attempt over the divergence limit would get the float64 rung, which cannot
        # compile this model (the loop does not yet treat a remedy that does not compile as a failed rung)
        ours = resilient.sample(model_1, *arguments, random_seed=SEED, progressbar=False, max_attempts=1,
                                **HMM_RUN)
    return raw, ours


@pytest.mark.slow
def test_hmm_enum_samples_by_default_in_raw_numpyros_precision_and_agrees_with_it(hmm_runs):
    from statistics import NormalDist

    from arviz_stats.base import array_stats

    from resilient import record

    raw, ours = hmm_runs
    assert set(ours.posterior.data_vars) == {"probs_x", "probs_y"}
    assert ours.posterior["probs_x"].dtype == raw["probs_x"].dtype == np.float32
    reason = record.read_run(ours)["precision_reason"]
    assert reason.startswith("raw: float32:") and "does not run in float64" in reason
    theirs = _hmm_invariants(raw["probs_x"], raw["probs_y"])
    mine = _hmm_invariants(ours.posterior["probs_x"].values, ours.posterior["probs_y"].values)
    critical = NormalDist().inv_cdf(1 - FAMILY_ALPHA / (2 * len(theirs)))  # Bonferroni, 1% over the suite

    def mcse(x: np.ndarray) -> float:
        return float(array_stats.mcse(x, chain_axis=0, draw_axis=1, method="mean"))

    for name in theirs:
        difference = abs(float(mine[name].mean()) - float(theirs[name].mean()))
        band = critical * np.hypot(mcse(theirs[name]), mcse(mine[name]))
        assert difference <= band, f"{name}: ours {mine[name].mean():.4g}, raw {theirs[name].mean():.4g}, band {band:.3g}"
