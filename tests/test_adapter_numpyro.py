"""The NumPyro adapter: translation of every family, the motivating models (P1, P4) shared-API
and native, per-site attribution, and the chunked NUTS driver (contract, deadline, resume)."""

import contextlib
import importlib.util
import math
import re
import time

import numpy as np
import pytest

if importlib.util.find_spec("numpyro") is None:
    pytest.skip("NumPyro is not installed", allow_module_level=True)

import resilient.adapters.numpyro as adapter_module  # noqa: E402  (first: it sets the XLA device count)
from resilient.adapters.numpyro import JAX_MATH, NumPyroAdapter, StableTruncatedNormal  # noqa: E402
from resilient import distributions as rd  # noqa: E402
from resilient import sample  # noqa: E402
from resilient.backend import STAT_NAMES, CompiledModel, NUTSSettings  # noqa: E402
from resilient.errors import ModelError, SamplerError, UnsupportedModelError  # noqa: E402
from resilient.math import FUNCTIONS  # noqa: E402
from resilient.model import Model, NativeModel  # noqa: E402
from resilient.numpy_math import NUMPY_MATH  # noqa: E402

pytestmark = pytest.mark.numpyro

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from scipy import stats  # noqa: E402

P1_VALUE = -3.0285668  # log InverseGamma(1; 2, 3) + log(2 * N(2; 0, 1))
X_P1 = np.array([0.0, math.log(2.0)])  # sigma = 1, V = 2 on the log scale
LOG_JACOBIAN_P1 = float(X_P1.sum())  # both latents are positive: log|J| = sum of x


def p1_shared():
    sigma = sample("sigma", rd.InverseGamma(2, 3))
    sample("V", rd.Truncated(rd.Normal(0, sigma), lower=0, upper=np.inf))


def p1_native():
    sigma = numpyro.sample("sigma", dist.InverseGamma(2.0, 3.0))
    numpyro.sample("V", dist.TruncatedNormal(0.0, sigma, low=0.0, high=jnp.inf))


def p1_native_plate():
    sigma = numpyro.sample("sigma", dist.InverseGamma(2.0, 3.0))
    with numpyro.plate("n", 3):
        numpyro.sample("W", dist.TruncatedNormal(0.0, sigma, low=0.0, high=jnp.inf))


def p4_shared():
    mu = sample("mu", rd.Normal(0, 1))
    sample("V", rd.Truncated(rd.Normal(mu, 1), lower=40))


def p4_native():
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    numpyro.sample("V", dist.TruncatedNormal(mu, 1.0, low=40.0))


def p4_native_shifted():
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    numpyro.sample("V", dist.TruncatedNormal(mu + 1.0, jnp.ones(()), low=40.0))


@pytest.fixture(scope="module")
def adapter():
    return NumPyroAdapter()


# -- translation ------------------------------------------------------------------------------

COV = np.array([[2.0, 0.5], [0.5, 1.0]])
LKJ_L = np.linalg.cholesky(np.array([[1.0, 0.3, -0.2], [0.3, 1.0, 0.1], [-0.2, 0.1, 1.0]]))
t4 = stats.t(4, 0.5, 2.0)
FAMILY_CASES = [  # site, record, observed value, reference log density (scipy, or NumPyro where scipy has none)
    ("normal", rd.Normal(0.5, 2.0), 1.3, stats.norm(0.5, 2.0).logpdf(1.3)),
    ("half_normal", rd.HalfNormal(2.0), 1.3, stats.halfnorm(scale=2.0).logpdf(1.3)),
    ("student_t", rd.StudentT(4.0, 0.5, 2.0), 1.3, t4.logpdf(1.3)),
    ("half_student_t", rd.HalfStudentT(4.0, 2.0), 1.3, math.log(2) + stats.t(4, 0, 2.0).logpdf(1.3)),
    ("cauchy", rd.Cauchy(0.5, 2.0), 1.3, stats.cauchy(0.5, 2.0).logpdf(1.3)),
    ("half_cauchy", rd.HalfCauchy(2.0), 1.3, stats.halfcauchy(scale=2.0).logpdf(1.3)),
    ("laplace", rd.Laplace(0.5, 2.0), 1.3, stats.laplace(0.5, 2.0).logpdf(1.3)),
    ("logistic", rd.Logistic(0.5, 2.0), 1.3, stats.logistic(0.5, 2.0).logpdf(1.3)),
    ("log_normal", rd.LogNormal(0.5, 2.0), 1.3, stats.lognorm(s=2.0, scale=math.exp(0.5)).logpdf(1.3)),
    ("exponential", rd.Exponential(2.0), 1.3, stats.expon(scale=0.5).logpdf(1.3)),
    ("gamma", rd.Gamma(2.0, 3.0), 1.3, stats.gamma(2.0, scale=1 / 3.0).logpdf(1.3)),
    ("inverse_gamma", rd.InverseGamma(2.0, 3.0), 1.3, stats.invgamma(2.0, scale=3.0).logpdf(1.3)),
    ("beta", rd.Beta(2.0, 3.0), 0.3, stats.beta(2.0, 3.0).logpdf(0.3)),
    ("uniform", rd.Uniform(-1.0, 2.0), 1.3, stats.uniform(-1.0, 3.0).logpdf(1.3)),
    ("flat", rd.Flat(), 1.3, 0.0),
    ("half_flat", rd.HalfFlat(), 1.3, 0.0),
    ("weibull", rd.Weibull(1.5, 2.0), 1.3, stats.weibull_min(1.5, scale=2.0).logpdf(1.3)),
    ("bernoulli", rd.Bernoulli(0.3), 1, stats.bernoulli(0.3).logpmf(1)),
    ("binomial", rd.Binomial(10, 0.3), 4, stats.binom(10, 0.3).logpmf(4)),
    ("poisson", rd.Poisson(3.5), 4, stats.poisson(3.5).logpmf(4)),
    ("negative_binomial", rd.NegativeBinomial(3.5, 2.0), 4, stats.nbinom(2.0, 2.0 / 5.5).logpmf(4)),
    ("categorical", rd.Categorical([0.2, 0.5, 0.3]), 1, math.log(0.5)),
    ("dirichlet", rd.Dirichlet([1.0, 2.0, 3.0]), [0.2, 0.3, 0.5], stats.dirichlet([1.0, 2.0, 3.0]).logpdf([0.2, 0.3, 0.5])),
    ("mv_normal_cov", rd.MvNormal([0.0, 1.0], cov=COV), [0.3, -0.2],
     stats.multivariate_normal([0.0, 1.0], COV).logpdf([0.3, -0.2])),
    ("mv_normal_chol", rd.MvNormal([0.0, 1.0], chol=np.linalg.cholesky(COV)), [0.3, -0.2],
     stats.multivariate_normal([0.0, 1.0], COV).logpdf([0.3, -0.2])),
    ("lkj_cholesky", rd.LKJCholesky(3, 2.0), LKJ_L, None),  # NumPyro's own value, below
    ("truncated_normal", rd.Truncated(rd.Normal(0.5, 2.0), lower=-1.0, upper=3.0), 1.3,
     stats.truncnorm(-0.75, 1.25, 0.5, 2.0).logpdf(1.3)),
    ("truncated_normal_stable", rd.Truncated(rd.Normal(0.5, 2.0), lower=-1.0, upper=3.0, stable=True), 1.3,
     stats.truncnorm(-0.75, 1.25, 0.5, 2.0).logpdf(1.3)),
    ("far_tail_left", rd.Truncated(rd.Normal(0.0, 1.0), lower=40.0, stable=True), 40.5,
     stats.truncnorm(40.0, np.inf).logpdf(40.5)),
    ("far_tail_right", rd.Truncated(rd.Normal(0.0, 1.0), upper=-40.0, stable=True), -40.5,
     stats.truncnorm(-np.inf, -40.0).logpdf(-40.5)),
    ("far_tail_interval", rd.Truncated(rd.Normal(0.0, 1.0), lower=40.0, upper=41.0, stable=True), 40.5,
     stats.truncnorm(40.0, 41.0).logpdf(40.5)),
    ("truncated_student_t", rd.Truncated(rd.StudentT(4.0, 0.5, 2.0), lower=0.0), 1.3,
     t4.logpdf(1.3) - math.log(t4.sf(0.0))),
    ("truncated_gamma", rd.Truncated(rd.Gamma(2.0, 3.0), lower=0.2, upper=1.5), 1.3,
     stats.gamma(2.0, scale=1 / 3.0).logpdf(1.3)
     - math.log(stats.gamma(2.0, scale=1 / 3.0).cdf(1.5) - stats.gamma(2.0, scale=1 / 3.0).cdf(0.2))),
    ("normal_shape", rd.Normal(0.5, 2.0, shape=(3,)), [1.3, 0.1, -2.0],
     stats.norm(0.5, 2.0).logpdf([1.3, 0.1, -2.0]).sum()),
]


def test_every_family_translates_to_the_reference_log_density(adapter):
    def all_families():
        for name, record, value, _ in FAMILY_CASES:
            sample(name, record, obs=np.asarray(value))

    compiled = adapter.compile(Model(all_families))
    assert compiled.dimension == 0 and isinstance(compiled, CompiledModel)
    terms = compiled.site_log_densities(np.zeros(0))
    with jax.enable_x64(True):
        lkj = float(dist.LKJCholesky(3, 2.0).log_prob(jnp.asarray(LKJ_L)))
    expected = {name: (lkj if reference is None else float(reference)) for name, _, _, reference in FAMILY_CASES}
    assert set(terms) == set(expected)
    wrong = {name: (terms[name], expected[name]) for name in expected
             if not np.isclose(terms[name], expected[name], rtol=1e-6, atol=1e-8)}
    assert wrong == {}
    covered = {record.base.family if isinstance(record, rd.Truncated) else record.family
               for _, record, _, _ in FAMILY_CASES}
    assert covered == set(rd.FAMILIES)
    assert compiled.observed_data()["binomial"] == 4


def test_math_namespace_matches_numpy():
    assert [name for name in FUNCTIONS if not hasattr(JAX_MATH, name)] == []
    x = np.array([-1.5, 0.2, 3.0])
    with jax.enable_x64(True):
        for name in ("sigmoid", "logit", "softplus", "erf", "lgamma", "logsumexp", "log_softmax", "softmax"):
            argument = np.array([0.1, 0.5, 0.9]) if name == "logit" else (np.abs(x) + 0.5 if name == "lgamma" else x)
            assert np.allclose(getattr(JAX_MATH, name)(argument), getattr(NUMPY_MATH, name)(argument)), name


def test_latent_transforms_sum_of_site_terms_and_gradient(adapter):
    def many_supports():
        a = sample("a", rd.Normal(0, 1))
        b = sample("b", rd.HalfNormal(1))
        sample("c", rd.Beta(2, 3))
        sample("d", rd.Uniform(-1, 2))
        sample("e", rd.Dirichlet(np.ones(3)))
        sample("f", rd.LKJCholesky(3, 2.0))
        sample("g", rd.Truncated(rd.Normal(a, b), lower=-1, upper=1))
        sample("h", rd.Truncated(rd.Gamma(2, 1), lower=0.5))
        sample("k", rd.MvNormal(np.zeros(2), cov=np.eye(2)))
        sample("y", rd.Normal(a, b), obs=np.array([0.1, -0.3]))

    compiled = adapter.compile(Model(many_supports))
    assert compiled.latent_names == tuple("abcdefghk")  # the model's order
    assert compiled.dimension == 1 + 1 + 1 + 1 + 2 + 3 + 1 + 1 + 2
    x = compiled.initial_point("uniform", 4)
    value, gradient = compiled.log_density_and_gradient(x)
    terms = compiled.site_log_densities(x)
    assert set(terms) == set(compiled.latent_names) | {"y"}
    assert np.isclose(sum(terms.values()), value, rtol=1e-10)
    step = 1e-6
    numeric = [(compiled.log_density_and_gradient(x + step * e)[0]
                - compiled.log_density_and_gradient(x - step * e)[0]) / (2 * step)
               for e in np.eye(compiled.dimension)]
    assert np.allclose(numeric, gradient, rtol=1e-5, atol=1e-6)
    values = compiled.constrain(x)
    assert -1 <= values["g"] <= 1 and values["h"] >= 0.5 and np.isclose(values["e"].sum(), 1)
    assert np.allclose(compiled.unconstrain(values), x)


# -- P1: the motivating model -------------------------------------------------------------------

def test_p1_shared_api_unfixed_has_the_nan_gradient_and_fixed_does_not(adapter):
    broken = adapter.compile(Model(p1_shared, fix=False))
    value, gradient = broken.log_density_and_gradient(X_P1)
    assert np.isclose(value - LOG_JACOBIAN_P1, P1_VALUE, atol=1e-6)
    assert np.isnan(gradient[broken.blocks()["sigma"]]).all() and np.isfinite(gradient[broken.blocks()["V"]]).all()
    gradients = broken.site_gradients(X_P1)
    assert np.isnan(gradients["V"]["sigma"]).all() and np.isfinite(gradients["V"]["V"]).all()
    assert np.isfinite(gradients["sigma"]["sigma"]).all()  # the NaN stays with the site that makes it
    assert [r.rule for r in broken.sites["V"].rewrites] == ["drop-infinite-bounds", "half-form"]

    fixed = adapter.compile(Model(p1_shared, fix=True))
    value, gradient = fixed.log_density_and_gradient(X_P1)
    assert np.isclose(value - LOG_JACOBIAN_P1, P1_VALUE, atol=1e-6) and np.isfinite(gradient).all()
    gradients = fixed.site_gradients(X_P1)
    summed = sum(np.concatenate([gradients[site][n] for n in fixed.latent_names]) for site in gradients)
    assert np.allclose(summed, gradient) and set(gradients) == {"sigma", "V"}


def test_p1_native_gets_the_same_diagnosis_and_fix(adapter):
    broken = adapter.compile(NativeModel("numpyro", p1_native, fix=False))
    value, gradient = broken.log_density_and_gradient(X_P1)
    assert np.isclose(value - LOG_JACOBIAN_P1, P1_VALUE, atol=1e-6) and np.isnan(gradient[0])
    site = broken.sites["V"]
    assert site.kind == "latent" and site.description == "TruncatedNormal(0, sigma, low=0, high=inf)"
    assert site.inputs == ("sigma",)
    assert [(r.rule, r.after) for r in site.rewrites] == [
        ("drop-infinite-bounds", "TruncatedNormal(0, sigma, low=0)"), ("half-form", "HalfNormal(sigma)")]

    fixed = adapter.compile(NativeModel("numpyro", p1_native, fix=True))
    value, gradient = fixed.log_density_and_gradient(X_P1)
    assert np.isclose(value - LOG_JACOBIAN_P1, P1_VALUE, atol=1e-6) and np.isfinite(gradient).all()

    in_plate = adapter.compile(NativeModel("numpyro", p1_native_plate, fix=True))
    x = np.array([0.0, 0.1, 0.2, 0.3])
    expected = stats.invgamma(2, scale=3).logpdf(1.0) + stats.halfnorm.logpdf(np.exp(x[1:])).sum() + x.sum()
    value, gradient = in_plate.log_density_and_gradient(x)
    assert np.isclose(value, expected) and np.isfinite(gradient).all()
    unfixed_plate = adapter.compile(NativeModel("numpyro", p1_native_plate, fix=False))
    assert np.isnan(unfixed_plate.log_density_and_gradient(x)[1][0])


def test_p4_far_tail_is_finite_in_float32_once_fixed(adapter):
    x = np.array([0.3, 0.0])  # mu = 0.3, V = 41
    for model in (Model(p4_shared, float32=True), NativeModel("numpyro", p4_native, float32=True)):
        fixed = adapter.compile(model)
        value, gradient = fixed.log_density_and_gradient(x)
        assert np.isfinite(value) and np.isfinite(gradient).all()
        reference = stats.norm.logpdf(0.3) + stats.truncnorm(39.7, np.inf, 0.3).logpdf(41.0)
        assert np.isclose(value, reference, rtol=1e-5)
        assert fixed.constrain(x)["V"].dtype == np.float32
        assert [r.rule for r in fixed.sites["V"].rewrites] == ["log-space-normaliser"]
    naive = adapter.compile(Model(p4_shared, fix=False, float32=True))
    value, gradient = naive.log_density_and_gradient(x)
    assert not (np.isfinite(value) and np.isfinite(gradient).all())
    # A location computed from a latent variable is not frozen at its compile-time value by the fix.
    shifted = adapter.compile(NativeModel("numpyro", p4_native_shifted))
    assert shifted.sites["V"].description == "TruncatedNormal(<expr>, 1, low=40)"
    for mu in (0.3, -0.5):
        reference = stats.norm.logpdf(mu) + stats.truncnorm(39.0 - mu, np.inf, mu + 1.0).logpdf(41.0)
        assert np.isclose(shifted.log_density(np.array([mu, 0.0])), reference)


def test_stable_truncated_normal_samples_stay_in_the_far_tail():
    cases = [  # low, high: one- and two-sided far tails on both sides, and an ordinary interval
        (40.0, None), (None, -40.0), (jnp.array([40.0, -41.0, -1.0]), jnp.array([41.0, -40.0, 2.0]))]

    @jax.jit
    def draw(key):
        out = []
        for low, high in cases:
            d = StableTruncatedNormal(0.0, 1.0, low=low, high=high)
            values = d.sample(key, (4000,))
            out.append((values, d.log_prob(values)))
        return out

    with jax.enable_x64(False):
        results = [(np.asarray(v), np.asarray(lp)) for v, lp in draw(jax.random.PRNGKey(0))]
    for (low, high), (values, log_prob) in zip(cases, results):
        assert np.isfinite(values).all() and np.isfinite(log_prob).all()
        assert (low is None or np.all(values >= np.asarray(low))) and (high is None or np.all(values <= np.asarray(high)))
    # independent draws: the mean within 4.5 standard errors of the exact one (sd / sqrt(4000); the far tail's
    # sd is 0.025, so a hand-set 1e-3 was only 2.5 of them)
    for values, exact in ((results[2][0][:, 2], stats.truncnorm(-1, 2)), (results[0][0], stats.truncnorm(40, np.inf))):
        assert abs(values.mean() - exact.mean()) < 4.5 * exact.std() / np.sqrt(values.size), (values.mean(), exact.mean())


def test_precision_is_scoped_to_each_model(adapter):
    before = jax.config.read("jax_enable_x64")
    single = adapter.compile(NativeModel("numpyro", p4_native, float32=True))
    double = adapter.compile(NativeModel("numpyro", p4_native))
    assert single.constrain(np.zeros(2))["mu"].dtype == np.float32
    assert double.constrain(np.zeros(2))["mu"].dtype == np.float64
    assert single.constrain(np.zeros(2))["mu"].dtype == np.float32  # the jit cache keeps them apart
    assert jax.config.read("jax_enable_x64") == before


def test_native_noncentred_sites_use_loc_scale_reparam(adapter):
    def centred(sigma):
        mu = numpyro.sample("mu", dist.Normal(0, 5))
        tau = numpyro.sample("tau", dist.HalfCauchy(5))
        with numpyro.plate("J", 3):
            theta = numpyro.sample("theta", dist.Normal(mu, tau))
            numpyro.sample("y", dist.Normal(theta, sigma), obs=np.array([1.0, -2.0, 0.5]))

    compiled = adapter.compile(NativeModel("numpyro", centred, (np.ones(3),), noncentered=frozenset({"theta"})))
    assert compiled.latent_names == ("mu", "tau", "theta_decentered")
    assert compiled.sites["theta"].noncentered and compiled.sites["theta"].inputs == ("mu", "tau")
    x = compiled.initial_point("default", 0)
    assert compiled.constrain(x)["theta"].shape == (3,) and np.isfinite(compiled.log_density(x))
    with pytest.raises(ModelError, match=r"Cannot non-centre `nope`: the model has no latent site"):
        adapter.compile(NativeModel("numpyro", centred, (np.ones(3),), noncentered=frozenset({"nope"})))


def test_errors_name_the_problem(adapter):
    with pytest.raises(UnsupportedModelError, match=r"compiles resilient.Model or NativeModel.*got str"):
        adapter.compile("model")
    with pytest.raises(UnsupportedModelError, match=r"The numpyro backend cannot run a native pymc model"):
        adapter.compile(NativeModel("pymc", object()))
    with pytest.raises(ValueError, match=r"`chain_method` must be one of 'parallel', 'vectorized' or None"):
        NumPyroAdapter(chain_method="sequential")

    def discrete():
        sample("k", rd.Poisson(3.0))

    with pytest.raises(UnsupportedModelError, match=r"Site `k` is a discrete latent variable; NUTS needs"):
        adapter.compile(Model(discrete))

    def failing():
        raise RuntimeError("boom")

    with pytest.raises(ModelError, match=r"Running the model 'failing' under NumPyro failed at test_adapter_numpyro.py:\d+ \(`raise RuntimeError\(\"boom\"\)`\): RuntimeError: boom"):
        adapter.compile(NativeModel("numpyro", failing))
    compiled = adapter.compile(Model(p4_shared))
    for strategy in ("prior", "median"):  # prior draws in the far tail stay finite
        point = compiled.initial_point(strategy, 2)
        assert compiled.constrain(point)["V"] > 40 and np.isfinite(compiled.log_density(point))
    with pytest.raises(ValueError, match=r"`strategy` must be one of 'default', 'uniform', 'prior', 'median'"):
        compiled.initial_point("random")
    with pytest.raises(ValueError, match=r"`x` must be a vector of length 2"):
        compiled.log_density(np.zeros(3))
    with pytest.raises(ValueError, match=r"missing: V"):
        compiled.unconstrain({"mu": 0.0})
    with pytest.raises(ValueError, match=r"`initial_points` must have shape \(chains, dimension\) = \(2, 2\)"):
        compiled.run_nuts(NUTSSettings(chains=2, initial_points=np.zeros((3, 2))), lambda chunk: True)


# -- NUTS in chunks ---------------------------------------------------------------------------

SETTINGS = NUTSSettings(draws=30, tune=100, chains=2, random_seed=11, chunk_size=20)


@pytest.fixture(scope="module")
def p1_fixed(adapter):
    return adapter.compile(NativeModel("numpyro", p1_native, fix=True))


@pytest.fixture(scope="module")
def first_run(p1_fixed):
    chunks = []
    outcome = p1_fixed.run_nuts(SETTINGS, lambda chunk: chunks.append(chunk) or True)
    return outcome, chunks


def test_run_nuts_chunks_follow_the_contract(first_run):
    outcome, chunks = first_run
    assert outcome.completed and outcome.reason == "" and outcome.warmup_seconds > 0
    assert [(c.warmup, c.start, c.size) for c in chunks] == (
        [(True, start, 20) for start in range(0, 100, 20)] + [(False, 0, 20), (False, 20, 10)])
    for chunk in chunks:
        assert chunk.chains == (0, 1)
        assert tuple(chunk.sample_stats) == STAT_NAMES
        assert {k: v.shape for k, v in chunk.posterior.items()} == {"sigma": (2, chunk.size), "V": (2, chunk.size)}
        assert all(v.shape == (2, chunk.size) for v in chunk.sample_stats.values())
        stats_ = chunk.sample_stats
        assert stats_["diverging"].dtype == bool and stats_["tree_depth"].dtype == np.int64
        assert np.all(stats_["tree_depth"] == np.floor(np.log2(stats_["n_steps"])) + 1)
        assert np.all((stats_["acceptance_rate"] >= 0) & (stats_["acceptance_rate"] <= 1))
        assert (chunk.posterior["V"] > 0).all() and (chunk.posterior["sigma"] > 0).all()
        assert chunk.state.positions.shape == (2, 2) and chunk.state.chains == (0, 1)  # a SamplerState
    sampling = [c for c in chunks if not c.warmup]
    # (how many draws diverge is the seed's trajectory, which differs between CPUs: V ~ HalfNormal(sigma) under a
    # heavy-tailed sigma is a funnel; the contract is the chunks' shape, dtypes and that adaptation is over)
    assert np.all(np.concatenate([c.sample_stats["step_size"] for c in sampling], axis=1)
                  == sampling[0].sample_stats["step_size"][:, :1])  # adaptation is over


def test_resume_continues_the_chain(p1_fixed, first_run):
    _, chunks = first_run
    resumed = []
    settings = NUTSSettings(draws=30, tune=0, chains=2, chunk_size=20, resume_state=chunks[-1].state)
    outcome = p1_fixed.run_nuts(settings, lambda chunk: resumed.append(chunk) or True)
    assert outcome.completed and outcome.extra["resumed_from_iteration"] == 130
    assert [(c.warmup, c.start, c.size) for c in resumed] == [(False, 0, 20), (False, 20, 10)]
    assert not np.allclose(resumed[0].posterior["V"], chunks[-2].posterior["V"])  # not a fresh start
    assert np.all(resumed[0].sample_stats["step_size"] == chunks[-1].sample_stats["step_size"][:, :1])
    longer = []
    p1_fixed.run_nuts(NUTSSettings(**{**SETTINGS.__dict__, "draws": 60}), lambda c: longer.append(c) or True)
    after_resume = np.concatenate([c.posterior["V"] for c in resumed], axis=1)
    in_one_go = np.concatenate([c.posterior["V"] for c in longer if not c.warmup], axis=1)[:, 30:]
    assert np.allclose(after_resume, in_one_go)  # exactly the draws an uninterrupted run makes next


def test_a_new_target_accept_reuses_the_compiled_sampler_and_changes_the_adaptation(p1_fixed, first_run):
    _, chunks = first_run
    runners = dict(p1_fixed._runners)
    higher = []
    p1_fixed.run_nuts(NUTSSettings(**{**SETTINGS.__dict__, "target_accept": 0.99}), lambda c: higher.append(c) or True)
    assert p1_fixed._runners == runners  # nothing new was compiled
    adapted = chunks[-1].sample_stats["step_size"][:, -1]
    assert np.all(higher[-1].sample_stats["step_size"][:, -1] < adapted)  # a higher target: smaller steps

    def acceptance(run):
        return np.mean(np.concatenate([c.sample_stats["acceptance_rate"] for c in run if not c.warmup], axis=1))

    assert acceptance(higher) > acceptance(chunks)


def test_deadline_stop_and_interrupt_end_the_run_between_chunks(p1_fixed):
    seen = []

    def slow(chunk):
        seen.append(chunk)
        time.sleep(0.3)
        return True

    outcome = p1_fixed.run_nuts(NUTSSettings(**{**SETTINGS.__dict__, "deadline": time.monotonic() + 0.2}), slow)
    assert (outcome.completed, outcome.reason, len(seen)) == (False, "deadline", 1)
    outcome = p1_fixed.run_nuts(SETTINGS, lambda chunk: False)
    assert (outcome.completed, outcome.reason) == (False, "stopped")

    def interrupt(chunk):
        raise KeyboardInterrupt

    outcome = p1_fixed.run_nuts(SETTINGS, interrupt)
    assert (outcome.completed, outcome.reason) == (False, "interrupted")


def test_jax_failing_mid_run_is_a_sampler_error_after_the_finished_chunks(adapter):
    calls = {"n": 0}

    def host(x):  # a host callback that breaks after 300 calls: JAX raises JaxRuntimeError
        calls["n"] += 1
        if calls["n"] > 300:
            raise RuntimeError("the callback broke")
        return np.zeros(np.shape(x), np.float32)

    @jax.custom_jvp
    def breaks(x):
        return jax.pure_callback(host, jax.ShapeDtypeStruct(x.shape, jnp.float32), x, vmap_method="broadcast_all")

    @breaks.defjvp
    def _zero_tangent(primals, tangents):
        return breaks(primals[0]), jnp.zeros_like(primals[0])

    def model():
        x = numpyro.sample("x", dist.Normal())
        numpyro.factor("breaks", breaks(x.astype(jnp.float32)))

    compiled = adapter.compile(NativeModel("numpyro", model))
    chunks = []
    settings = NUTSSettings(draws=100, tune=1000, chains=2, random_seed=1, chunk_size=10)
    with pytest.raises(SamplerError, match=r"JAX stopped the NumPyro run in warm-up iterations \d+-\d+: .*"
                                           r"RuntimeError: the callback broke") as raised:
        compiled.run_nuts(settings, lambda chunk: chunks.append(chunk) or True)
    error = raised.value
    assert (error.backend, error.kind) == ("numpyro", "crash")
    assert isinstance(error.__cause__, jax.errors.JaxRuntimeError)
    first, last = map(int, re.search(r"iterations (\d+)-(\d+)", str(error)).groups())
    assert last == first + 9 and first > 0
    assert [(c.warmup, c.start) for c in chunks] == [(True, start) for start in range(0, first, 10)]
    with contextlib.suppress(jax.errors.JaxRuntimeError):  # JAX re-raises a failed callback once, at exit
        jax.effects_barrier()


def test_vectorized_chains_with_given_initial_points(adapter):
    compiled = NumPyroAdapter(chain_method="vectorized").compile(Model(p1_shared, fix=True))
    chunks = []
    points = np.stack([compiled.initial_point("default", seed) for seed in (1, 2, 3)])
    settings = NUTSSettings(draws=10, tune=10, chains=3, random_seed=3, initial_points=points)
    outcome = compiled.run_nuts(settings, lambda chunk: chunks.append(chunk) or True)
    assert outcome.completed and outcome.extra["chain_method"] == "vectorized"
    assert [c.posterior["V"].shape for c in chunks] == [(3, 10), (3, 10)]
    assert adapter_module.NumPyroCompiledModel.chain_method(compiled, 3) == "vectorized"


# -- issue #13 constructs: factor, ordered, Mixture, scan -----------------------------------------------

def test_factor_ordered_mixture_and_scan_match_hand_computed_log_densities(adapter):
    from resilient import math as rm
    from resilient.model import deterministic, factor

    y, z = np.array([0.5, 1.5]), np.array([0.2, -1.0])

    def constructs():
        mu = sample("mu", rd.Normal(0, 2, shape=3, ordered=True))
        s = sample("s", rd.Gamma(2, 1, shape=2, ordered=True))
        w = sample("w", rd.Dirichlet(np.ones(2)))
        sample("y", rd.Mixture(w, [rd.Normal(mu[0], 1), rd.LogNormal(0, s[0])]), obs=y)
        sample("z", rd.NormalMixture(w, mu[:2], s), obs=z)
        factor("f", -0.5 * mu ** 2)

        def step(carry, x):
            carry = 0.5 * carry + x
            return carry, carry

        _, ys = rm.scan(step, mu[0], np.arange(4.0))
        deterministic("ys", ys)

    compiled = adapter.compile(Model(constructs))
    assert compiled.latent_names == ("mu", "s", "w") and compiled.dimension == 3 + 2 + 1
    assert compiled.sites["f"].kind == "factor" and compiled.sites["y"].family == "Mixture"
    x = compiled.initial_point("uniform", 3)
    values, terms, blocks = compiled.constrain(x), compiled.site_log_densities(x), compiled.blocks()
    mu, s, w = values["mu"], values["s"], values["w"]
    assert np.all(np.diff(mu) > 0) and np.all(np.diff(s) > 0) and np.all(s > 0)
    x_mu, x_s = x[blocks["mu"]], x[blocks["s"]]
    # ordered: y = cumsum([x0, exp(x1), ...]), log|J| = sum(x[1:]); positive_ordered adds exp: + sum(log y)
    assert np.isclose(terms["mu"], stats.norm(0, 2).logpdf(mu).sum() + x_mu[1:].sum(), rtol=1e-10)
    assert np.isclose(terms["s"], stats.gamma(2).logpdf(s).sum() + x_s[1:].sum() + np.log(s).sum(), rtol=1e-10)
    mixture = np.log(w[0] * stats.norm(mu[0], 1).pdf(y) + w[1] * stats.lognorm(s=s[0]).pdf(y)).sum()
    assert np.isclose(terms["y"], mixture, rtol=1e-10)
    normal_mixture = np.log(w[0] * stats.norm(mu[0], s[0]).pdf(z) + w[1] * stats.norm(mu[1], s[1]).pdf(z)).sum()
    assert np.isclose(terms["z"], normal_mixture, rtol=1e-10)
    assert np.isclose(terms["f"], -0.5 * np.sum(mu ** 2), rtol=1e-10)
    expected, carry = [], mu[0]
    for step_x in range(4):
        carry = 0.5 * carry + step_x
        expected.append(carry)
    assert np.allclose(values["ys"], expected, rtol=1e-12)
    assert np.isclose(sum(terms.values()), compiled.log_density(x), rtol=1e-10)
    assert np.allclose(compiled.unconstrain(values), x)
    prior = compiled.constrain(compiled.initial_point("prior", 1))
    assert np.all(np.diff(prior["mu"]) > 0) and np.all(np.diff(prior["s"]) > 0)


# -- DataTree layout of native models -------------------------------------------------------------------

def plated_model(group, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    tau = numpyro.sample("tau", dist.HalfNormal(1.0))
    with numpyro.plate("group", 3):
        alpha = numpyro.sample("alpha", dist.Normal(mu, tau))
        numpyro.deterministic("alpha_sq", alpha ** 2)
        with numpyro.plate("arm", 2, dim=-2):
            numpyro.sample("beta", dist.Normal(alpha, 1.0))
    with numpyro.plate("obs", len(group)):
        numpyro.sample("y", dist.Normal(alpha[group], 1.0), obs=y)


@pytest.mark.slow  # a raw MCMC run and a resilient run of one model
def test_native_datatree_names_dims_after_plates_as_from_numpyro(adapter):
    import arviz_base
    from numpyro.infer import MCMC, NUTS

    group, y = np.array([0, 1, 2, 0, 1, 2]), np.array([0.3, -0.2, 1.1, 0.5, 0.0, 0.8])
    import warnings

    from resilient.policy import Policy

    with warnings.catch_warnings():  # one short attempt: the loop's verdict on it is not the point here
        warnings.simplefilter("ignore")
        ours = sample(plated_model, group, y=y, draws=20, tune=20, chains=1, random_seed=1, progressbar=False,
                      policy=Policy(max_attempts=1))
    with jax.enable_x64(True):
        mcmc = MCMC(NUTS(plated_model), num_warmup=20, num_samples=20, num_chains=1, progress_bar=False)
        mcmc.run(jax.random.PRNGKey(1), group, y=y)
        theirs = arviz_base.from_numpyro(mcmc)

    def layout(tree, group_name):
        data = tree[group_name].to_dataset()
        return {name: (data[name].dims, data[name].shape) for name in data.data_vars}

    for group_name in ("posterior", "observed_data"):
        assert layout(ours, group_name) == layout(theirs, group_name), group_name
    assert layout(ours, "posterior")["beta"][0] == ("chain", "draw", "arm", "group")
    compiled = adapter.compile(NativeModel("numpyro", plated_model, (group,), {"y": y}))
    assert compiled.datatree_layout()["dims"]["y"] == ["obs"]


# -- issue #16: our float64 next to a user's float32 in one process ----------------------------------------

def regression(x, y=None):
    a = numpyro.sample("a", dist.Normal(0.0, 5.0))
    b = numpyro.sample("b", dist.Normal(0.0, 5.0))
    s = numpyro.sample("s", dist.HalfNormal(1.0))
    with numpyro.plate("n", len(x)):
        numpyro.sample("y", dist.Normal(a + b * x, s), obs=y)


@pytest.mark.slow  # 6 s a order cold; CI runs both
@pytest.mark.parametrize("order", [("raw", "ours", "raw"), ("ours", "raw", "ours")])
def test_raw_numpyro_and_resilient_share_a_process_and_numpy_data(order):
    """jax's eager operations share compiled code between precisions, so the same NumPy data in a raw (float32,
    jax's default) run and ours (float64) failed either way round ("RuntimeProgramInputMismatch ... f64 expected
    f32"). Each order uses data of its own length, so that neither meets the other's jax caches. Ours runs twice:
    by default (raw NumPyro's float32, issue #26) and asked for float64; jax's x64 flag stays off throughout."""
    import warnings

    from numpyro.infer import MCMC, NUTS

    from resilient.policy import Policy

    assert not jax.config.jax_enable_x64  # the user's (jax's default) state, which we must leave as it is
    n = 23 if order[0] == "raw" else 29
    x = np.linspace(-1.0, 1.0, n)
    y = 0.5 + 2.0 * x + np.random.default_rng(n).normal(0.0, 0.3, n)
    for step in order:
        if step == "raw":
            mcmc = MCMC(NUTS(regression), num_warmup=30, num_samples=30, progress_bar=False)
            mcmc.run(jax.random.PRNGKey(0), x, y=y)
            assert mcmc.get_samples()["b"].dtype == jnp.float32
        else:
            for float32, dtype in ((None, np.float32), (False, np.float64)):  # the default is raw NumPyro's
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ours = sample(regression, x, y=y, draws=30, tune=30, chains=1, random_seed=1, progressbar=False,
                                  policy=Policy(max_attempts=1), float32=float32)
                assert ours.posterior["b"].dtype == dtype
        assert not jax.config.jax_enable_x64


def lagged_autoregression(y, K=2):
    """arK's shape: the model builds its design matrix from the data with NumPy, as raw NumPyro allows."""
    lags = np.stack([y[K - k - 1: len(y) - k - 1] for k in range(K)], axis=1)
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 1.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([K]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    numpyro.sample("y", dist.Normal(alpha + lags @ beta, sigma), obs=y[K:])


def test_a_model_may_use_numpy_on_its_data_as_in_raw_numpyro():
    import resilient

    y = np.sin(np.linspace(0.0, 6.0, 40)) + np.random.default_rng(3).normal(0.0, 0.1, 40)
    compiled = resilient.compile(lagged_autoregression, y, backend="numpyro").compiled
    value, gradient = compiled.log_density_and_gradient(np.zeros(compiled.dimension))
    assert np.isfinite(value) and np.all(np.isfinite(gradient))
