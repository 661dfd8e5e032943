"""The PyMC adapter: record translation, log densities, native models and chunked NUTS runs."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from scipy import stats

from resilient import record

from examples.pathologies import far_tail, improper, motivating
from resilient import deterministic, sample
from resilient import math as rm
from resilient.backend import STAT_NAMES, CompiledModel, NUTSSettings
from resilient.distributions import (
    Bernoulli, Beta, Binomial, Categorical, Cauchy, Dirichlet, Exponential, Flat, Gamma, HalfCauchy,
    HalfFlat, HalfNormal, HalfStudentT, InverseGamma, Laplace, LKJCholesky, Logistic, LogNormal,
    Mixture, MvNormal, NegativeBinomial, Normal, Poisson, StudentT, Truncated, Uniform, Weibull,
)
from resilient.errors import ModelError, SamplerError, SamplingFailed, UnsupportedModelError
from resilient.math import FUNCTIONS
from resilient.model import Model, NativeModel

pm = pytest.importorskip("pymc")
import pytensor.tensor as pt  # noqa: E402
from pytensor.graph.basic import Apply  # noqa: E402
from pytensor.graph.op import Op  # noqa: E402

from resilient.adapters.pymc import PYTENSOR_MATH, PyMCAdapter  # noqa: E402
from resilient.adapters.pymc.runner import EXTRA_STATS  # noqa: E402

pytestmark = pytest.mark.pymc

SEED = 20261126
MOTIVATING_LOGP = -3.0285668  # sigma ~ InverseGamma(2, 3), V ~ Truncated(Normal(0, sigma), 0, inf) at (1, 2)


@pytest.fixture(scope="module")
def adapter():
    return PyMCAdapter(cores=1)


@pytest.fixture(scope="module")
def motivating_raw(adapter):
    """P1 as written (fix=False): PyMC sees the infinite upper bound."""
    return adapter.compile(Model(motivating, fix=False))


@pytest.fixture(scope="module")
def sampler_model(adapter):
    """One small model for every NUTS run here, so PyTensor compiles its sampler once."""

    def model():
        sigma = sample("sigma", HalfNormal(1.0))
        theta = sample("theta", Normal(0.0, sigma, shape=3))
        deterministic("scaled", 2.0 * theta)

    return adapter.compile(Model(model))


# ---- the math namespace -----------------------------------------------------------------------


def test_math_namespace_matches_numpy():
    import pytensor

    from resilient.adapters.pymc.compiled import _no_c_compilation, _preflight_mode
    from resilient.numpy_math import NUMPY_MATH

    assert [name for name in FUNCTIONS if not hasattr(PYTENSOR_MATH, name)] == []
    x = np.array([[-1.5, 0.2, 3.0], [0.7, -0.1, 2.2]])
    p = np.array([0.1, 0.5, 0.9])
    cases = {
        "sigmoid": lambda m: m.sigmoid(x), "logit": lambda m: m.logit(p), "softplus": lambda m: m.softplus(x),
        "logsumexp": lambda m: m.logsumexp(x, axis=1), "logsumexp_all": lambda m: m.logsumexp(x),
        "log_softmax": lambda m: m.log_softmax(x), "softmax": lambda m: m.softmax(x, axis=0),
        "erf": lambda m: m.erf(x), "lgamma": lambda m: m.lgamma(np.abs(x) + 0.5),
        "where": lambda m: m.where(x > 0, x, -x), "clip": lambda m: m.clip(x, -1.0, 1.0),
        "sum": lambda m: m.sum(x, axis=0), "mean": lambda m: m.mean(x, axis=1, keepdims=True),
        "prod": lambda m: m.prod(x), "dot": lambda m: m.dot(x, p), "matmul": lambda m: m.matmul(x, x.T),
        "stack": lambda m: m.stack([p, p], axis=1), "concatenate": lambda m: m.concatenate([p, p]),
        "cumsum": lambda m: m.cumsum(x, axis=1), "reshape": lambda m: m.reshape(x, (3, 2)),
        "transpose": lambda m: m.transpose(x), "outer": lambda m: m.outer(p, p), "diag": lambda m: m.diag(p),
        "zeros": lambda m: m.zeros((2, 2)), "ones": lambda m: m.ones(3), "arange": lambda m: m.arange(4),
        "maximum": lambda m: m.maximum(x, 0.5), "square": lambda m: m.square(x), "expm1": lambda m: m.expm1(x),
    }
    expected = {name: np.asarray(case(NUMPY_MATH)) for name, case in cases.items()}
    outputs = [case(PYTENSOR_MATH) for case in cases.values()]
    with _no_c_compilation():
        values = pytensor.function([], outputs, mode=_preflight_mode())()
    for (name, want), got in zip(expected.items(), values):
        assert np.allclose(got, want), name


# ---- record translation -------------------------------------------------------------------------

TRANSLATIONS = [
    (Normal(1.0, 2.0), 0.3, stats.norm(1.0, 2.0).logpdf(0.3)),
    (HalfNormal(2.0), 0.7, stats.halfnorm(scale=2.0).logpdf(0.7)),
    (StudentT(4.0, 1.0, 2.0), -0.5, stats.t(4.0, 1.0, 2.0).logpdf(-0.5)),
    (HalfStudentT(4.0, 2.0), 0.5, np.log(2) + stats.t(4.0, 0.0, 2.0).logpdf(0.5)),
    (Cauchy(1.0, 2.0), 0.3, stats.cauchy(1.0, 2.0).logpdf(0.3)),
    (HalfCauchy(2.0), 0.3, stats.halfcauchy(scale=2.0).logpdf(0.3)),
    (Laplace(1.0, 2.0), 0.3, stats.laplace(1.0, 2.0).logpdf(0.3)),
    (Logistic(1.0, 2.0), 0.3, stats.logistic(1.0, 2.0).logpdf(0.3)),
    (LogNormal(0.5, 0.8), 1.3, stats.lognorm(s=0.8, scale=np.exp(0.5)).logpdf(1.3)),
    (Exponential(2.0), 0.3, stats.expon(scale=0.5).logpdf(0.3)),
    (Gamma(2.0, 3.0), 0.4, stats.gamma(2.0, scale=1 / 3.0).logpdf(0.4)),
    (InverseGamma(2.0, 3.0), 1.0, stats.invgamma(2.0, scale=3.0).logpdf(1.0)),
    (Beta(2.0, 3.0), 0.3, stats.beta(2.0, 3.0).logpdf(0.3)),
    (Uniform(-1.0, 2.0), 0.3, stats.uniform(-1.0, 3.0).logpdf(0.3)),
    (Flat(), 12.0, 0.0),
    (HalfFlat(), 12.0, 0.0),
    (Weibull(1.5, 2.0), 0.8, stats.weibull_min(1.5, scale=2.0).logpdf(0.8)),
    (Bernoulli(0.3), 1, np.log(0.3)),
    (Binomial(10, 0.3), 4, stats.binom(10, 0.3).logpmf(4)),
    (Poisson(3.0), 2, stats.poisson(3.0).logpmf(2)),
    (NegativeBinomial(3.0, 2.0), 4, stats.nbinom(2.0, 2.0 / (2.0 + 3.0)).logpmf(4)),
    (Categorical([0.2, 0.5, 0.3]), 1, np.log(0.5)),
    (Dirichlet([1.0, 2.0, 3.0]), np.array([0.2, 0.3, 0.5]),
     stats.dirichlet([1.0, 2.0, 3.0]).logpdf([0.2, 0.3, 0.5])),
    (MvNormal(np.zeros(2), cov=np.array([[2.0, 0.5], [0.5, 1.0]])), np.array([0.3, -0.2]),
     stats.multivariate_normal(np.zeros(2), [[2.0, 0.5], [0.5, 1.0]]).logpdf([0.3, -0.2])),
    (MvNormal(np.zeros(2), chol=np.array([[1.0, 0.0], [0.5, 2.0]])), np.array([0.3, -0.2]),
     stats.multivariate_normal(np.zeros(2), [[1.0, 0.5], [0.5, 4.25]]).logpdf([0.3, -0.2])),
    (Truncated(Normal(1.0, 2.0), lower=0.0, upper=3.0), 0.5,
     stats.truncnorm(-0.5, 1.0, loc=1.0, scale=2.0).logpdf(0.5)),
    (Truncated(StudentT(3.0, 0.0, 1.0), lower=-1.0), 0.5,
     stats.t(3.0).logpdf(0.5) - stats.t(3.0).logsf(-1.0)),
    # n = 2: L = [[1, 0], [r, sqrt(1 - r^2)]] and (r + 1) / 2 ~ Beta(eta, eta)
    (LKJCholesky(2, 2.0), np.array([[1.0, 0.0], [0.3, np.sqrt(1 - 0.09)]]),
     stats.beta(2.0, 2.0).logpdf(0.65) - np.log(2.0)),
    (Truncated(Gamma(2.0, 1.0), upper=2.0), 0.5, stats.gamma(2.0).logpdf(0.5) - stats.gamma(2.0).logcdf(2.0)),
]


@pytest.mark.parametrize("record, value, expected", TRANSLATIONS, ids=[r.family if not isinstance(r, Truncated)
                                                                      else f"Truncated-{r.base.family}"
                                                                      for r, _, _ in TRANSLATIONS])
def test_an_observed_record_has_the_reference_log_density(adapter, record, value, expected):
    def model():
        sample("y", record, obs=value)

    compiled = adapter.compile(Model(model, fix=False))
    assert compiled.dimension == 0 and compiled.sites["y"].kind == "observed"
    assert np.isclose(compiled.log_density(np.zeros(0)), expected, rtol=1e-6, atol=1e-9)
    assert np.allclose(compiled.observed_data()["y"], value)


def test_lkj_cholesky_latent_is_a_correlation_cholesky_factor(adapter):
    def model():
        L = sample("L", LKJCholesky(3, 2.0))
        sample("z", MvNormal(np.zeros(3), chol=L), obs=np.array([0.3, -0.2, 0.1]))

    compiled = adapter.compile(Model(model))
    x = compiled.initial_point("prior", 4)
    L = compiled.constrain(x)["L"]
    assert np.allclose(np.triu(L, 1), 0) and np.allclose(np.sum(L**2, axis=1), 1.0)
    observed = stats.multivariate_normal(np.zeros(3), L @ L.T).logpdf([0.3, -0.2, 0.1])
    assert np.isclose(compiled.site_log_densities(x)["z"], observed)
    assert np.allclose(compiled.unconstrain(compiled.constrain(x)), x)


def test_numpy_data_with_pytensor_values_and_integer_data(adapter):
    rng = np.random.default_rng(SEED)
    X = rng.integers(0, 5, size=(20, 3))  # integer design matrix
    group = rng.integers(0, 4, size=20)
    counts = rng.poisson(3.0, size=20)

    def model(X, group, counts):
        beta = sample("beta", Normal(0, 1, shape=3))
        alpha = sample("alpha", Normal(0, 1, shape=4))
        sample("counts", Poisson(rm.exp(X @ beta * 0.1 + alpha[group])), obs=counts)

    compiled = adapter.compile(Model(model, (X, group, counts)))
    x = compiled.initial_point("uniform", 1)
    beta, alpha = x[compiled.blocks()["beta"]], x[compiled.blocks()["alpha"]]
    expected = (stats.norm.logpdf(x).sum()
                + stats.poisson(np.exp(X @ beta * 0.1 + alpha[group])).logpmf(counts).sum())
    assert np.isclose(compiled.log_density(x), expected)
    assert compiled.observed_data()["counts"].dtype.kind == "i"


# ---- the motivating model and the far tail -----------------------------------------------------


def test_motivating_model_log_density_and_pymc_gradient(motivating_raw):
    compiled = motivating_raw
    assert isinstance(compiled, CompiledModel) and compiled.backend == "pymc"
    assert compiled.latent_names == ("sigma", "V") and compiled.dimension == 2
    assert compiled.blocks() == {"sigma": slice(0, 1), "V": slice(1, 2)}
    site = compiled.sites["V"]
    assert site.description == "Truncated(Normal(0, sigma), lower=0, upper=inf)" and site.inputs == ("sigma",)
    assert [r.rule for r in site.rewrites] == ["drop-infinite-bounds", "half-form"]  # suggested, not applied
    assert site.used is site.declared
    x = compiled.unconstrain({"sigma": 1.0, "V": 2.0})
    assert np.allclose(x, [0.0, np.log(2.0)])  # log transforms: PyMC reads [0, inf) as a log transform
    terms = compiled.site_log_densities(x)
    jacobians = x[0] + x[1]  # log |d sigma / dx| + log |d V / dx|
    assert np.isclose(sum(terms.values()) - jacobians, MOTIVATING_LOGP, atol=1e-7)
    assert np.isclose(compiled.log_density(x) - jacobians, MOTIVATING_LOGP, atol=1e-7)
    # PyMC 6 canonicalises the infinite bound: the gradient is finite (NumPyro's is NaN here).
    value, gradient = compiled.log_density_and_gradient(x)
    assert np.all(np.isfinite(gradient))
    step = 1e-6
    numeric = [(compiled.log_density(x + step * e) - compiled.log_density(x - step * e)) / (2 * step)
               for e in np.eye(2)]
    assert np.allclose(gradient, numeric, rtol=1e-5)
    per_site = compiled.site_gradients(x)
    total = sum(np.concatenate([per_site[s]["sigma"], per_site[s]["V"]]) for s in per_site)
    assert np.allclose(total, gradient)
    assert np.all(np.isfinite(per_site["V"]["sigma"]))


def test_motivating_model_fixed_is_a_half_normal_with_the_same_density(adapter, motivating_raw):
    fixed = adapter.compile(Model(motivating))
    assert fixed.sites["V"].used.family == "HalfNormal"
    x = np.array([0.3, -0.4])
    assert np.isclose(fixed.log_density(x), motivating_raw.log_density(x))


def test_far_tail_truncation_is_finite_with_a_finite_gradient(adapter):
    compiled = adapter.compile(Model(far_tail, fix=False))  # mu ~ Normal(0, 1); V ~ Truncated(Normal(mu, 1), lower=40)
    x = np.zeros(2)  # mu = 0, V = 40 + exp(0) = 41
    assert np.allclose(compiled.constrain(x)["V"], 41.0)
    expected = stats.norm.logpdf(0.0) + stats.norm.logpdf(41.0) - stats.norm.logsf(40.0)
    value, gradient = compiled.log_density_and_gradient(x)
    assert np.isclose(value, expected, rtol=1e-9)
    assert np.all(np.isfinite(gradient))
    for strategy in ("median", "default", "prior"):
        value, gradient = compiled.log_density_and_gradient(compiled.initial_point(strategy, 2))
        assert np.isfinite(value) and np.all(np.isfinite(gradient))


def test_nan_and_inf_are_returned_not_raised(adapter):
    def sqrt_of_negative():
        x = sample("x", Normal(0, 1))
        sample("y", Normal(rm.sqrt(x), 1), obs=1.0)

    compiled = adapter.compile(Model(sqrt_of_negative))
    value, gradient = compiled.log_density_and_gradient(np.array([-1.0]))
    assert np.isnan(value) and np.isnan(gradient).all()
    terms = compiled.site_log_densities(np.array([-1.0]))
    assert np.isfinite(terms["x"]) and np.isnan(terms["y"])
    assert np.isnan(compiled.site_gradients(np.array([-1.0]))["y"]["x"]).all()


def test_noncentred_sites_sample_the_raw_variable(adapter):
    def centred():
        mu = sample("mu", Normal(0, 5))
        tau = sample("tau", HalfCauchy(5))
        sample("theta", Normal(mu, tau, shape=4))

    compiled = adapter.compile(Model(centred, noncentered=frozenset({"theta"})))
    assert sorted(compiled.latent_names) == ["mu", "tau", "theta_raw"]
    assert compiled.posterior_names == ("mu", "tau", "theta_raw", "theta"), "the posterior keeps the declared order"
    x = compiled.initial_point("uniform", 3)
    values = compiled.constrain(x)
    assert np.allclose(values["theta"], values["mu"] + values["tau"] * values["theta_raw"])


# ---- native models -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def native_model():
    y = np.array([1.2, 0.4, 2.5, 1.9])
    with pm.Model() as model:
        sigma = pm.InverseGamma("sigma", 2, 3)
        mu = pm.Normal("mu", 0, 2)
        V = pm.Truncated("V", pm.Normal.dist(mu, sigma), lower=0, upper=np.inf)
        pm.Deterministic("double", 2 * V)
        pm.Potential("pull", -0.5 * mu**2)
        pm.Normal("y", mu, sigma, observed=y)
    return model


def test_native_pymc_model_compiles_and_its_site_terms_add_up(adapter, native_model):
    compiled = adapter.compile(NativeModel("pymc", native_model))
    assert compiled.latent_names == ("sigma", "mu", "V")
    assert {name: site.kind for name, site in compiled.sites.items()} == {
        "sigma": "latent", "mu": "latent", "V": "latent", "y": "observed", "double": "deterministic",
        "pull": "potential",
    }
    assert compiled.sites["V"].description == "Truncated(Normal(mu, sigma), lower=0, upper=inf)"
    assert compiled.sites["sigma"].description == "InverseGamma(2, 3)"
    assert set(compiled.sites["y"].inputs) == {"mu", "sigma"}
    for seed in (1, 2):
        x = compiled.initial_point("uniform", seed)
        value, gradient = compiled.log_density_and_gradient(x)
        terms = compiled.site_log_densities(x)
        assert set(terms) == {"sigma", "mu", "V", "y", "pull"}
        assert np.isclose(sum(terms.values()), value)
        v = compiled.constrain(x)
        sigma, mu, V = v["sigma"], v["mu"], v["V"]
        by_hand = (stats.invgamma(2, scale=3).logpdf(sigma) + stats.norm(0, 2).logpdf(mu)
                   + stats.truncnorm(-mu / sigma, np.inf, mu, sigma).logpdf(V) - 0.5 * mu**2
                   + stats.norm(mu, sigma).logpdf([1.2, 0.4, 2.5, 1.9]).sum())
        assert np.isclose(value - x[0] - x[2], by_hand)  # minus the log transforms' Jacobians
        per_site = compiled.site_gradients(x)
        total = sum(np.concatenate([per_site[s][latent] for latent in compiled.latent_names]) for s in per_site)
        assert np.allclose(total, gradient)
        values = compiled.constrain(x)
        assert np.isclose(values["double"], 2 * values["V"])
        assert np.allclose(compiled.unconstrain(values), x)
    assert np.allclose(compiled.observed_data()["y"], [1.2, 0.4, 2.5, 1.9])
    median = compiled.initial_point("median")
    assert np.allclose(median, compiled._flatten(native_model.initial_point()))


def test_native_options_without_a_pymc_equivalent_are_reported(adapter, native_model):
    compiled = adapter.compile(NativeModel("pymc", native_model, noncentered=frozenset({"mu"}), float32=True))
    assert compiled.ignored_options == ("float32",), "PyMC runs in float64; non-centring is real (fgraph)"
    assert "mu_decentered" in compiled.latent_names and compiled.hidden == frozenset({"mu_decentered"})
    assert not compiled.sites["V"].noncenterable, "a truncated Normal is not loc + scale * Normal(0, 1)"
    with pytest.raises(ModelError, match=r"Cannot non-centre `V`: only an untransformed Normal latent"):
        adapter.compile(NativeModel("pymc", native_model, noncentered=frozenset({"V"})))
    with pytest.raises(ModelError, match=r"Cannot non-centre `nope`: the model has no latent variable of that name"):
        adapter.compile(NativeModel("pymc", native_model, noncentered=frozenset({"nope"})))


def test_models_the_adapter_cannot_run_are_refused(adapter):
    with pytest.raises(UnsupportedModelError, match=r"The pymc backend cannot run a native numpyro model"):
        adapter.compile(NativeModel("numpyro", lambda: None))
    with pytest.raises(UnsupportedModelError, match=r"must be a pm.Model \(or a frozen one\), got str"):
        adapter.compile(NativeModel("pymc", "model"))
    with pytest.raises(UnsupportedModelError, match=r"compiles resilient.model.Model or NativeModel"):
        adapter.compile(42)

    def discrete_latent():
        sample("k", Poisson(3.0))

    assert adapter.compile(Model(discrete_latent)).discrete_latents == ("k",), "PyMC's compound step samples it"


def test_initial_points(sampler_model):
    compiled = sampler_model
    median = compiled.initial_point("median")
    assert np.allclose(median, compiled._flatten(compiled.model.initial_point()))
    default = compiled.initial_point("default", 7)
    assert np.allclose(default, compiled.initial_point("default", 7))
    assert 0 < np.max(np.abs(default - median)) <= 1.0  # PyMC's uniform(-1, 1) jitter
    uniform = compiled.initial_point("uniform", 7)
    assert uniform.shape == (4,) and np.all(np.abs(uniform) <= 2.0)
    prior = compiled.initial_point("prior", 7)
    assert np.allclose(prior, compiled.initial_point("prior", 7))
    assert not np.allclose(prior, compiled.initial_point("prior", 8))
    assert np.isfinite(compiled.log_density(prior))
    with pytest.raises(ValueError, match=r"`strategy` must be one of 'default', 'uniform', 'prior', 'median', got 'sobol'"):
        compiled.initial_point("sobol")
    with pytest.raises(ValueError, match=r"must hold every latent variable \(sigma, theta\); missing: theta"):
        compiled.unconstrain({"sigma": 1.0})


# ---- NUTS ---------------------------------------------------------------------------------------


def _check_contiguous(chunks):
    """Each chain's warm-up and sampling draws arrive in order, once each; returns the counts."""
    counts = {}
    for chunk in chunks:
        (chain,) = chunk.chains
        key = (chain, chunk.warmup)
        assert chunk.start == counts.get(key, 0), "chunks of a chain arrive in order, without gaps"
        counts[key] = counts.get(key, 0) + chunk.size
    return counts


def test_run_nuts_chunks_follow_the_contract(sampler_model):
    compiled = sampler_model
    chunks = []
    settings = NUTSSettings(draws=30, tune=20, chains=2, random_seed=SEED, chunk_size=16)
    outcome = compiled.run_nuts(settings, lambda chunk: chunks.append(chunk) or True)
    assert outcome.completed and outcome.reason == ""
    assert outcome.extra["cores"] == 1 and outcome.sampling_seconds > 0
    counts = _check_contiguous(chunks)
    assert counts == {(0, True): 20, (0, False): 30, (1, True): 20, (1, False): 30}
    assert max(c.size for c in chunks) <= 16
    for chunk in chunks:
        n = chunk.size
        assert set(chunk.posterior) == {"sigma", "theta", "scaled"}
        assert chunk.posterior["sigma"].shape == (1, n) and chunk.posterior["theta"].shape == (1, n, 3)
        assert np.allclose(chunk.posterior["scaled"], 2 * chunk.posterior["theta"])
        assert tuple(chunk.sample_stats)[:len(STAT_NAMES)] == STAT_NAMES
        assert set(chunk.sample_stats) - set(STAT_NAMES) == set(EXTRA_STATS)  # PyMC's other stats, its names
        assert chunk.sample_stats["reached_max_treedepth"].dtype == bool
        assert np.all(np.isfinite(chunk.sample_stats["energy_error"]))
        assert all(v.shape == (1, n) for v in chunk.sample_stats.values())
        assert chunk.sample_stats["diverging"].dtype == bool
        assert chunk.sample_stats["tree_depth"].dtype.kind == "i"
        assert np.all(chunk.sample_stats["n_steps"] >= 1) and np.all(chunk.sample_stats["step_size"] > 0)
        # lp is the log density at the draw: the posterior values are those of the draw
        x = compiled.unconstrain({"sigma": chunk.posterior["sigma"][0, -1], "theta": chunk.posterior["theta"][0, -1]})
        assert np.isclose(chunk.sample_stats["lp"][0, -1], compiled.log_density(x))
    # same seed, same draws
    again = []
    compiled.run_nuts(settings, lambda chunk: again.append(chunk) or True)
    assert np.array_equal(np.concatenate([c.posterior["theta"] for c in chunks], axis=1),
                          np.concatenate([c.posterior["theta"] for c in again], axis=1))


def test_preflight_and_pm_sample_share_one_compiled_density(adapter):
    """The compiled model is PyMC's frozen copy: the logp-and-gradient function preflight
    evaluates is the one NUTS then runs, compiled once however often the loop retries."""
    from pymc.model.core import FrozenModel

    def model():
        mu = sample("mu", Normal(0.0, 1.0))
        sample("y", Normal(mu, 1.0), obs=np.array([0.3, -0.2]))

    compiled = adapter.compile(Model(model))
    assert isinstance(compiled.model, FrozenModel)
    assert np.isfinite(compiled.log_density_and_gradient(np.zeros(1))[0])
    settings = NUTSSettings(draws=10, tune=10, chains=1, random_seed=SEED)
    for _ in range(2):
        assert compiled.run_nuts(settings, lambda chunk: True).completed
    assert len(compiled.model._cache["_logp_dlogp_function"]) == 1, "pm.sample compiled its own logp_dlogp"


def test_draws_copied_per_draw_equal_draws_sliced_from_pymcs_trace(sampler_model, monkeypatch):
    """The callback slices chunks out of PyMC's NDArray trace; for any other trace it copies each
    draw. Same seed, same chunks either way."""
    import resilient.adapters.pymc.runner as pymc_adapter

    settings = NUTSSettings(draws=12, tune=8, chains=2, random_seed=SEED, chunk_size=5)
    sliced, copied = [], []
    sampler_model.run_nuts(settings, lambda chunk: sliced.append(chunk) or True)
    monkeypatch.setattr(pymc_adapter, "_recorded_in", lambda trace, names: False)
    sampler_model.run_nuts(settings, lambda chunk: copied.append(chunk) or True)
    assert [(c.chains, c.start, c.warmup, c.size) for c in sliced] == [(c.chains, c.start, c.warmup, c.size) for c in copied]
    for a, b in zip(sliced, copied):
        for name in a.posterior:
            assert np.allclose(a.posterior[name], b.posterior[name]), name
        assert list(a.sample_stats) == list(b.sample_stats)
        for name in a.sample_stats:
            assert a.sample_stats[name].dtype == b.sample_stats[name].dtype
            if not name.startswith(("perf_counter", "process_time")):  # clocks differ run to run
                assert np.array_equal(a.sample_stats[name], b.sample_stats[name], equal_nan=True), name


def test_run_nuts_in_parallel_processes_and_from_given_initial_points(sampler_model):
    compiled = PyMCAdapter(cores=2).compile(NativeModel("pymc", sampler_model.model))
    start = np.array([[0.5, 1.0, -1.0, 0.0], [-0.5, 0.0, 1.0, 2.0]])
    chunks = []
    settings = NUTSSettings(draws=25, tune=15, chains=2, random_seed=SEED, chunk_size=10, initial_points=start,
                            max_tree_depth=4)
    outcome = compiled.run_nuts(settings, lambda chunk: chunks.append(chunk) or True)
    assert outcome.completed and outcome.extra == {**outcome.extra, "cores": 2, "init": "adapt_diag"}
    assert _check_contiguous(chunks) == {(0, True): 15, (0, False): 25, (1, True): 15, (1, False): 25}
    assert max(int(c.sample_stats["tree_depth"].max()) for c in chunks) <= 4
    for chunk in chunks[-2:]:  # values read from PyMC's trace belong to the draw (lp is at the draw)
        x = compiled.unconstrain({"sigma": chunk.posterior["sigma"][0, 0], "theta": chunk.posterior["theta"][0, 0]})
        assert np.isclose(chunk.sample_stats["lp"][0, 0], compiled.log_density(x))
    with pytest.raises(ValueError, match=r"initial_points must have shape \(chains, dimension\) = \(2, 4\)"):
        compiled.run_nuts(NUTSSettings(chains=2, initial_points=np.zeros((2, 3))), lambda chunk: True)


class _BreaksAfter(Op):
    """0 for a process's first ``calls`` evaluations, then NaN (or, with ``exit``, a chain worker
    exits on the spot): a model that breaks mid-run."""

    __props__ = ("calls", "exit")

    def __init__(self, calls, exit=False):
        self.calls = calls
        self.exit = exit
        self.count = 0
        self.parent = os.getpid()

    def make_node(self, x):
        return Apply(self, [pt.as_tensor_variable(x)], [pt.dscalar()])

    def perform(self, node, inputs, outputs):
        self.count += 1
        if self.exit and self.count > self.calls and os.getpid() != self.parent:
            os._exit(9)
        outputs[0][0] = np.array(0.0 if self.exit or self.count <= self.calls else np.nan)

    def pullback(self, inputs, outputs, cotangents):
        return [pt.zeros_like(inputs[0])]


@pytest.mark.filterwarnings("ignore:Numba will use object mode")
@pytest.mark.parametrize("cores", [1, 2])
def test_pymc_failing_mid_run_is_a_sampler_error_after_the_finished_draws(cores):
    with pm.Model() as model:
        x = pm.Normal("x")
        pm.Potential("breaks", _BreaksAfter(1500)(x))
    compiled = PyMCAdapter(cores=cores).compile(NativeModel("pymc", model))
    chunks = []
    settings = NUTSSettings(draws=500, tune=500, chains=2, random_seed=SEED, chunk_size=50)
    with pytest.raises(SamplerError, match=r"PyMC's NUTS stopped .*at iteration \d+ .*Bad initial energy") as raised:
        compiled.run_nuts(settings, lambda chunk: chunks.append(chunk) or True)
    assert (raised.value.backend, raised.value.kind) == ("pymc", "numerical") and raised.value.__cause__ is not None
    if cores == 2:  # a chain worker's error names its chain; both chains' finished draws arrive
        assert raised.value.chain in (0, 1) and "chain" in str(raised.value)
        assert {c.chains[0] for c in chunks} == {0, 1}
    delivered = _check_contiguous(chunks)
    assert 0 < sum(delivered.values()) < 2 * 1000


@pytest.mark.filterwarnings("ignore:Numba will use object mode")
def test_a_chain_worker_that_dies_without_a_word_is_a_sampler_error_naming_its_exit_code():
    with pm.Model() as model:
        x = pm.Normal("x")
        pm.Potential("breaks", _BreaksAfter(1500, exit=True)(x))
    compiled = PyMCAdapter(cores=2).compile(NativeModel("pymc", model))
    chunks = []
    settings = NUTSSettings(draws=500, tune=500, chains=2, random_seed=SEED, chunk_size=50)
    with pytest.raises(SamplerError, match=r"PyMC chain workers? died without reporting an error "
                                           r"\(chain [01]: exit code 9(; chain 1: exit code 9)?\)$") as raised:
        compiled.run_nuts(settings, lambda chunk: chunks.append(chunk) or True)
    assert raised.value.kind == "crash" and raised.value.chain in (0, 1)
    assert isinstance(raised.value.__cause__, (EOFError, ConnectionError))
    assert chunks and sum(_check_contiguous(chunks).values()) < 2 * 1000


def test_worker_exit_codes_are_read_as_signals_and_codes():
    from resilient.adapters.pymc.runner import _worker_death

    class Exited:
        def __init__(self, exitcode):
            self.exitcode = exitcode

        def join(self, timeout=None):
            pass

    killed = _worker_death([Exited(0), Exited(-signal.SIGKILL), Exited(-signal.SIGTERM), Exited(-40)])
    assert str(killed) == ("2 PyMC chain workers died without reporting an error (chain 1: killed by SIGKILL; "
                           "chain 3: killed by signal 40): SIGKILL is what the out-of-memory killer sends")
    assert (killed.kind, killed.chain) == ("resources", 1)
    assert _worker_death([]).kind == "crash"


@pytest.mark.filterwarnings("ignore:Numba will use object mode")
def test_a_run_that_keeps_failing_mid_run_raises_sampling_failed_with_every_finished_draw(tmp_path):
    with pm.Model() as model:
        x = pm.Normal("x")
        pm.Potential("breaks", _BreaksAfter(1500)(x))
    # time_budget: with a deadline the chains run in parallel workers on any machine (not in batches);
    # engine="pymc": auto takes nutpie once the process has compiled it, and nutpie runs this op in-process
    with pytest.raises(SamplingFailed, match=r"attempt 2 failed: PyMC's NUTS stopped chain \d") as raised:
        sample(model, draws=1000, tune=200, chains=2, random_seed=SEED, progressbar=False, max_attempts=2,
               checkpoint=str(tmp_path / "run"), time_budget=300, engine="pymc")
    attempts = raised.value.attempts
    assert [(a.failure, a.outcome) for a in attempts] == [("sampler-error", "retry"), ("sampler-error", "gave-up")]
    assert attempts[1].remedy is not None and isinstance(raised.value.__cause__, SamplerError)  # which: the ladder's
    partial = raised.value.partial
    returned = record.read_run(partial)["returned_attempt"]  # the attempt with the better draws of the two
    assert partial.posterior["x"].sizes == {"chain": 2, "draw": attempts[returned - 1].draws}
    assert attempts[returned - 1].draws > 0
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.is_dir()) == ["attempt-01", "attempt-02"]
    assert any((tmp_path / "run" / "attempt-02").glob("chunk-*.nc"))


def test_on_chunk_returning_false_stops_the_run(sampler_model):
    chunks = []

    def on_chunk(chunk):
        chunks.append(chunk)
        return len(chunks) < 2

    outcome = sampler_model.run_nuts(
        NUTSSettings(draws=500, tune=50, chains=2, random_seed=SEED, chunk_size=10), on_chunk)
    assert not outcome.completed and outcome.reason == "stopped"
    assert len(chunks) == 2  # nothing after the False


def test_an_error_in_on_chunk_propagates_and_on_chunk_is_not_called_again(sampler_model):
    calls = []

    def on_chunk(chunk):
        calls.append(chunk)
        raise ValueError("disk full")

    with pytest.raises(ValueError, match=r"disk full"):
        sampler_model.run_nuts(NUTSSettings(draws=50, tune=50, chains=2, random_seed=SEED, chunk_size=10), on_chunk)
    assert len(calls) == 1


def test_a_deadline_stops_a_long_run_and_keeps_every_finished_draw(sampler_model):
    compiled = PyMCAdapter(cores=1).compile(NativeModel("pymc", sampler_model.model))
    chunks = []
    started = time.monotonic()
    # 5 s: enough for three chain processes to start and sample on a busy 2-core machine (2 s was not at load 15)
    settings = NUTSSettings(draws=1_000_000, tune=100, chains=3, random_seed=SEED, chunk_size=50,
                            deadline=started + 5.0)
    outcome = compiled.run_nuts(settings, lambda chunk: chunks.append(chunk) or True)
    elapsed = time.monotonic() - started
    assert not outcome.completed and outcome.reason == "deadline"
    assert elapsed < 5.0 + 4.0, f"the run took {elapsed:.1f} s after a 5 s deadline"
    # one process per chain under a deadline (PyMC would run a third chain after the first two)
    assert outcome.extra["cores"] == 3
    counts = _check_contiguous(chunks)
    delivered = {chain: counts.get((chain, False), 0) for chain in range(3)}
    assert delivered == outcome.extra["draws_delivered"] and sum(delivered.values()) > 0
    assert any(c.size < 50 for c in chunks)  # the partial chunks of the stop were flushed


class _Stall:
    """A PyTensor Op, the identity, that sleeps a minute once ``after`` has passed: one NUTS step that
    never ends, so only the watchdog's signal can stop the run."""

    @staticmethod
    def make(after):
        import pytensor.tensor as pt
        from pytensor.graph.basic import Apply
        from pytensor.graph.op import Op

        class Stall(Op):
            __props__ = ()

            def make_node(self, x):
                x = pt.as_tensor_variable(x)
                return Apply(self, [x], [x.type()])

            def perform(self, node, inputs, outputs):
                if time.monotonic() > after:
                    time.sleep(60)
                outputs[0][0] = np.array(inputs[0])

            def pullback(self, inputs, outputs, cotangents):
                return [cotangents[0]]

        return Stall()


@pytest.mark.filterwarnings("ignore:Numba will use object mode")
@pytest.mark.parametrize("chains", [1, pytest.param(2, marks=pytest.mark.slow)])  # 1: in this process; 2: in workers
def test_a_deadline_interrupts_a_step_that_never_ends(adapter, chains):
    started = time.monotonic()
    with pm.Model() as model:
        x = pm.Normal("x", 0, 1)
        pm.Potential("stall", 1e-12 * _Stall.make(started + 3.0)(x))
    compiled = adapter.compile(NativeModel("pymc", model))
    chunks = []
    settings = NUTSSettings(draws=1_000_000, tune=50, chains=chains, random_seed=SEED, chunk_size=25,
                            deadline=started + 4.0)
    outcome = compiled.run_nuts(settings, lambda chunk: chunks.append(chunk) or True)
    elapsed = time.monotonic() - started
    assert outcome.reason == "deadline" and elapsed < 4.0 + 4.0
    _check_contiguous(chunks)


def test_overflow_in_early_warm_up_is_not_an_error_where_warnings_are(adapter):
    """NumPy's "overflow encountered in dot" inside PyMC's mass matrix (big gradients early in
    warm-up) would be an exception under ``filterwarnings = error`` and kill the chain."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 5)) * 30.0
    y = X @ np.ones(5) + rng.normal(size=100)

    def blr(X, y):
        beta = sample("beta", Normal(0, 10, shape=5))
        sigma = sample("sigma", HalfNormal(10))
        sample("y", Normal(rm.dot(X, beta), sigma), obs=y)

    compiled = adapter.compile(Model(blr, (X, y)))
    for seed in (3, 5):  # seeds whose warm-up overflows
        outcome = compiled.run_nuts(NUTSSettings(draws=20, tune=30, chains=1, random_seed=seed), lambda chunk: True)
        assert outcome.completed


def test_a_latent_the_density_ignores_still_samples(adapter):
    """``x ~ Flat()`` alone: pm.sample raises DisconnectedInputError choosing a step method; the
    adapter builds the NUTS step itself so the improper posterior shows in the draws."""
    compiled = adapter.compile(Model(improper))
    chunks = []
    outcome = compiled.run_nuts(NUTSSettings(draws=50, tune=50, chains=1, random_seed=SEED, max_tree_depth=5),
                                lambda chunk: chunks.append(chunk) or True)
    assert outcome.completed and outcome.extra["disconnected"] == ("x",)
    assert sum(c.size for c in chunks if not c.warmup) == 50


def test_ctrl_c_is_reported_as_interrupted(sampler_model):
    chunks = []
    handler = signal.getsignal(signal.SIGINT)
    main = threading.main_thread().ident
    timer = threading.Timer(2.5, lambda: signal.pthread_kill(main, signal.SIGINT))
    timer.start()
    try:
        outcome = sampler_model.run_nuts(
            NUTSSettings(draws=1_000_000, tune=50, chains=1, random_seed=SEED, chunk_size=40),
            lambda chunk: chunks.append(chunk) or True)
    finally:
        timer.cancel()
    assert not outcome.completed and outcome.reason == "interrupted"
    assert sum(c.size for c in chunks if not c.warmup) == outcome.extra["draws_delivered"][0] > 0
    assert signal.getsignal(signal.SIGINT) is handler


def test_a_resume_state_that_is_not_a_pymc_sampler_state_is_refused(sampler_model):
    with pytest.raises(ValueError, match=r"must be the SamplerState of a run of PyMC's NUTS"):
        sampler_model.run_nuts(NUTSSettings(resume_state={"step": 1}), lambda chunk: True)


# ---- initial points PyMC accepts for every transform (issue #16) ------------------------------


def _zero_sum_model():
    import pymc as pm

    rng = np.random.default_rng(1)
    group = np.repeat(np.arange(4), 5)
    y = 1.0 + np.array([-0.6, -0.1, 0.2, 0.5])[group] + rng.normal(0, 0.5, 20)
    with pm.Model(coords={"group": list("ABCD")}) as model:
        intercept = pm.Normal("intercept", 0, 3)
        effect = pm.ZeroSumNormal("effect", sigma=1.0, dims="group")
        sigma = pm.HalfNormal("sigma", 1)
        pm.Normal("y", intercept + effect[group], sigma, observed=y)
    return model


def _lkj_model():
    import pymc as pm

    rng = np.random.default_rng(2)
    y = rng.multivariate_normal([0.5, -1.0], [[1.0, 0.6], [0.6, 2.0]], 30)
    with pm.Model() as model:
        chol, _, _ = pm.LKJCholeskyCov("chol", n=2, eta=2.0, sd_dist=pm.Exponential.dist(1.0, shape=2),
                                       compute_corr=True)
        mu = pm.Normal("mu", 0, 2, shape=2)
        pm.MvNormal("obs", mu, chol=chol, observed=y)
    return model


def _dependent_bounds_model():
    import pymc as pm

    counts = np.array([32, 45, 23])
    with pm.Model() as model:
        a = pm.Uniform("a", 0, 1)
        b = pm.Uniform("b", 0, 1 - a)
        pm.Multinomial("counts", n=counts.sum(), p=pm.math.stack([a, b, 1 - a - b]), observed=counts)
    return model


_TRANSFORM_MODELS = {"zero_sum": _zero_sum_model, "lkj_cholesky_cov": _lkj_model,
                     "dependent_bounds": _dependent_bounds_model}


@pytest.mark.parametrize("name", list(_TRANSFORM_MODELS))
def test_initial_points_reach_pymc_for_every_transform(adapter, name):
    """ZeroSumNormal, LKJCholeskyCov and a bound that is another latent: PyMC cannot turn an
    unconstrained NumPy value back through their transforms, so those latents go to it constrained,
    keyed by name; either way PyMC starts exactly where the loop asked."""
    from pymc.initial_point import make_initial_point_fns_per_chain

    compiled = adapter.compile(NativeModel("pymc", _TRANSFORM_MODELS[name]()))
    assert not all(compiled._direct_values)
    for strategy in ("default", "uniform", "prior"):
        x = compiled.initial_point(strategy, SEED)
        logp, gradient = compiled.log_density_and_gradient(x)
        assert np.isfinite(logp) and np.all(np.isfinite(gradient)), strategy
        assert np.isclose(sum(compiled.site_log_densities(x).values()), logp)
        assert np.allclose(compiled.unconstrain(compiled.constrain(x)), x)
        (ipfn,) = make_initial_point_fns_per_chain(model=compiled.model, overrides=[compiled._initvals(x)],
                                                   chains=1)
        assert np.allclose(compiled._flatten(ipfn(0)), x), strategy


def test_a_run_from_given_initial_points_with_a_dependent_bound(adapter):
    compiled = adapter.compile(NativeModel("pymc", _dependent_bounds_model()))
    start = np.array([[0.3, -0.2], [-1.0, 1.5]])
    chunks = []
    settings = NUTSSettings(draws=20, tune=20, chains=2, random_seed=SEED, chunk_size=20, initial_points=start)
    assert compiled.run_nuts(settings, lambda chunk: chunks.append(chunk) or True).completed
    assert _check_contiguous(chunks) == {(0, True): 20, (0, False): 20, (1, True): 20, (1, False): 20}
    b, a = chunks[-1].posterior["b"], chunks[-1].posterior["a"]
    assert np.all((0 < a) & (a < 1) & (0 < b) & (b < 1 - a))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["zero_sum", "lkj_cholesky_cov"])
def test_a_run_from_given_initial_points_with_structured_transforms(adapter, name):
    compiled = adapter.compile(NativeModel("pymc", _TRANSFORM_MODELS[name]()))
    start = np.stack([compiled.initial_point("uniform", SEED + chain) for chain in range(2)])
    chunks = []
    settings = NUTSSettings(draws=20, tune=20, chains=2, random_seed=SEED, chunk_size=20, initial_points=start)
    assert compiled.run_nuts(settings, lambda chunk: chunks.append(chunk) or True).completed
    assert _check_contiguous(chunks) == {(0, True): 20, (0, False): 20, (1, True): 20, (1, False): 20}
    if name == "zero_sum":
        assert np.allclose(chunks[-1].posterior["effect"].sum(axis=-1), 0.0)


# ---- the DataTree layout of a native pm.Model (issue #16) -------------------------------------


def _layout_model():
    import pymc as pm

    rng = np.random.default_rng(3)
    group = np.repeat(np.arange(3), 6)
    x = rng.normal(0, 1, 18)
    y = 0.5 + np.array([-0.5, 0.0, 0.5])[group] + 0.8 * x + rng.normal(0, 0.3, 18)
    coords = {"group": ["a", "b", "c"], "obs_id": [f"o{i}" for i in range(18)]}
    with pm.Model(coords=coords) as model:
        x_data = pm.Data("x", x, dims="obs_id")
        g = pm.Data("g", group, dims="obs_id")
        alpha = pm.Normal("alpha", 0, 1, dims="group")
        beta = pm.Normal("beta", 0, 1)
        sigma = pm.HalfNormal("sigma", 1)
        mu = pm.Deterministic("mu", alpha[g] + beta * x_data, dims="obs_id")
        pm.Normal("y", mu, sigma, observed=y, dims="obs_id")
    return model


def test_datatree_layout_of_a_native_model_is_what_pm_sample_returns():
    import warnings

    import pymc as pm

    import resilient

    model = _layout_model()
    compiled = PyMCAdapter(cores=1).compile(NativeModel("pymc", model))
    layout = compiled.datatree_layout()
    assert layout["dims"]["alpha"] == ["group"] and layout["dims"]["x"] == ["obs_id"]
    assert list(layout["coords"]["group"]) == ["a", "b", "c"]
    assert set(layout["constant_data"]) == {"x", "g"}
    assert PyMCAdapter(cores=1).compile(Model(_normal_model_for_layout)).datatree_layout() == {}
    options = dict(draws=30, tune=30, chains=1, random_seed=SEED, progressbar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = pm.sample(model=model, nuts_sampler="pymc", compute_convergence_checks=False, **options)
        with model:
            ours = resilient.sample(**options)
    # sample_stats: every field of PyMC's NUTS, under the names pm.sample gives them
    assert sorted(set(theirs.sample_stats.data_vars) - set(ours.sample_stats.data_vars)) == []
    for group in ("posterior", "observed_data", "constant_data"):
        assert group in ours.children, group
        a, b = theirs[group].to_dataset(), ours[group].to_dataset()
        assert sorted(a.data_vars) == sorted(b.data_vars), group
        for name in a.data_vars:
            assert a[name].dims == b[name].dims, (group, name)
            for dim in a[name].dims:
                if dim not in ("chain", "draw"):
                    assert np.array_equal(a[name][dim].values, b[name][dim].values), (group, name, dim)
        if group == "constant_data":
            for name in a.data_vars:
                assert np.array_equal(a[name].values, b[name].values), name


def _normal_model_for_layout():
    sample("m", Normal(0.0, 1.0))


# ---- issue #13's constructs on PyMC -----------------------------------------------------------


def test_factor_is_a_potential_with_its_own_term(adapter):
    from resilient.model import factor

    def model():
        mu = sample("mu", Normal(0.0, 1.0))
        factor("soft", -0.5 * (mu - 2.0) ** 2)

    compiled = adapter.compile(Model(model))
    x = np.array([0.7])
    expected = stats.norm.logpdf(0.7) - 0.5 * (0.7 - 2.0) ** 2
    assert np.isclose(compiled.log_density(x), expected)
    assert np.isclose(compiled.site_log_densities(x)["soft"], -0.5 * 1.3 ** 2)
    assert compiled.sites["soft"].kind == "factor"


@pytest.mark.parametrize("positive", [False, True], ids=["ordered", "positive_ordered"])
def test_ordered_records_use_the_ordered_transform(adapter, positive):
    def model():
        sample("c", Exponential(1.5, shape=3, ordered=True) if positive else Normal(0.0, 2.0, shape=3, ordered=True))

    compiled = adapter.compile(Model(model))
    median = compiled.constrain(compiled.initial_point("median"))["c"]
    assert np.all(np.diff(median) > 0) and (not positive or median[0] > 0)
    x = np.array([-0.5, 0.2, -0.3])
    # Stan's ordered: y0 = x0, y_i = y_(i-1) + exp(x_i); positive_ordered: c = exp(y)
    y = np.cumsum(np.r_[x[0], np.exp(x[1:])])
    c = np.exp(y) if positive else y
    assert np.allclose(compiled.constrain(x)["c"], c)
    if positive:
        expected = stats.expon.logpdf(c, scale=1 / 1.5).sum() + x[1:].sum() + y.sum()
    else:
        expected = stats.norm.logpdf(c, 0.0, 2.0).sum() + x[1:].sum()
    assert np.isclose(compiled.log_density(x), expected)
    assert np.allclose(compiled.unconstrain({"c": c}), x)
    for seed in range(5):  # prior draws are sorted before they are transformed
        point = compiled.initial_point("prior", seed)
        assert np.isfinite(compiled.log_density(point)), seed


def test_mixture_record_is_a_pm_mixture(adapter):
    def model():
        mu = sample("mu", Normal(0.0, 5.0))
        sample("y", Mixture(np.array([0.3, 0.7]), [Normal(mu, 1.0), HalfNormal(0.5)]),
               obs=np.array([0.1, 2.9, 3.3]))

    compiled = adapter.compile(Model(model))
    y = np.array([0.1, 2.9, 3.3])
    mixture = np.log(0.3 * stats.norm.pdf(y, 0.4, 1.0) + 0.7 * stats.halfnorm.pdf(y, scale=0.5)).sum()
    assert np.isclose(compiled.log_density(np.array([0.4])), stats.norm.logpdf(0.4, 0, 5) + mixture)


def test_scan_follows_jax_lax_scan(adapter):
    def model():
        rho = sample("rho", Normal(0.0, 1.0))

        def ar(carry, x):
            new = rho * carry + x
            return new, 2.0 * new

        last, ys = rm.scan(ar, 0.5, np.array([1.0, 2.0, -1.0]))
        deterministic("last", last)
        deterministic("ys", ys)
        power, powers = rm.scan(lambda carry, _: (carry * rho, carry), 1, None, length=4)  # integer init
        deterministic("power", power)
        deterministic("powers", powers)
        sample("y", Normal(ys, 1.0), obs=np.array([2.0, 5.0, 1.0]))

    compiled = adapter.compile(Model(model))
    values = compiled.constrain(np.array([0.5]))
    assert np.isclose(values["last"], 0.3125) and np.allclose(values["ys"], [2.5, 5.25, 0.625])
    assert np.isclose(values["power"], 0.0625) and np.allclose(values["powers"], [1.0, 0.5, 0.25, 0.125])
    assert values["ys"].dtype == values["powers"].dtype == np.float64
    expected = stats.norm.logpdf(0.5) + stats.norm.logpdf([2.0, 5.0, 1.0], [2.5, 5.25, 0.625], 1.0).sum()
    logp, gradient = compiled.log_density_and_gradient(np.array([0.5]))
    assert np.isclose(logp, expected) and np.all(np.isfinite(gradient))
    h = 1e-6
    numeric = (compiled.log_density(np.array([0.5 + h])) - compiled.log_density(np.array([0.5 - h]))) / (2 * h)
    assert np.isclose(gradient[0], numeric, rtol=1e-5)
    assert compiled.run_nuts(NUTSSettings(draws=10, tune=10, chains=1, random_seed=SEED), lambda chunk: True).completed


def test_an_observed_expression_of_latents_is_its_log_density(adapter):
    def model():
        mu = sample("mu", Normal(0.0, 1.0))
        s = sample("s", HalfNormal(1.0))
        sample("err", Normal(0.0, s), obs=np.array([0.3, -0.4, 1.2]) - mu)

    compiled = adapter.compile(Model(model))
    x = compiled.unconstrain({"mu": 0.2, "s": 0.8})
    residual = np.array([0.3, -0.4, 1.2]) - 0.2
    expected = (stats.norm.logpdf(0.2) + stats.halfnorm.logpdf(0.8) + np.log(0.8)
                + stats.norm.logpdf(residual, 0.0, 0.8).sum())
    assert np.isclose(compiled.log_density(x), expected)
    assert np.isclose(compiled.site_log_densities(x)["err"], stats.norm.logpdf(residual, 0.0, 0.8).sum())


def test_terms_of_literal_parameters_are_computed_in_float64(adapter):
    """PyTensor makes a Python 3.0 a float32 constant; records' literal parameters reach PyMC as
    64-bit NumPy scalars, so a term of literals only matches scipy to double precision."""
    def model():
        sample("g", Gamma(2.0, 3.0), obs=np.asarray(1.7))
        sample("p", Poisson(3.0), obs=np.asarray(4))
        sample("b", Beta(2.0, 3.0), obs=np.asarray(0.3))
        sample("n", Binomial(10, 0.5), obs=np.asarray(4))

    terms = adapter.compile(Model(model)).site_log_densities(np.zeros(0))
    expected = {"g": stats.gamma.logpdf(1.7, 2.0, scale=1 / 3.0), "p": stats.poisson.logpmf(4, 3.0),
                "b": stats.beta.logpdf(0.3, 2.0, 3.0), "n": stats.binom.logpmf(4, 10, 0.5)}
    for name, value in expected.items():
        assert np.isclose(terms[name], value, rtol=1e-12, atol=0), (name, terms[name], value)


def test_a_deterministic_of_a_deterministic_keeps_both_names(adapter):
    """PyMC 6.4's freeze_model lists `d` twice and `e` nowhere for Deterministic("e", d) (as after
    LKJCholeskyCov(compute_corr=True) + Deterministic("corr", corr)); the adapter keeps the model
    unfrozen then, so every variable reaches the posterior under its own name."""
    import pymc as pm

    with pm.Model() as model:
        a = pm.Normal("a")
        d = pm.Deterministic("d", 2 * a)
        pm.Deterministic("e", d)
    compiled = adapter.compile(NativeModel("pymc", model))
    assert compiled.posterior_names == ("a", "d", "e")
    values = compiled.constrain(np.array([0.3]))
    assert np.isclose(values["d"], 0.6) and np.isclose(values["e"], 0.6)
