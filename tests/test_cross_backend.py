"""Both backends give the same log density for every family and construct of the shared API (issue #13 item 3).

Each case is a tiny shared-API model compiled on NumPyro and on PyMC
(``get_adapter(backend).compile(Model(fn))``); both run in float64 and must agree to 1e-8 relative.

What is compared, and why it is sound. The backends may map a constrained value to different unconstrained
coordinates (simplex, Cholesky factor, bounded supports), and a latent site's term in
``CompiledModel.site_log_densities`` includes its transform's log-Jacobian, which then differs. So we never
compare anything that depends on ``x`` itself. We pick *constrained* values, get each backend's own ``x`` with
``unconstrain(values)`` (checking ``constrain(x)`` gives the values back), and compare:

* **observed sites** and **factor sites**: their terms hold no Jacobian, so they are the constrained log
  density (likelihood) itself; every family, every Truncated bound kind, Mixture and NormalMixture are compared
  as observed sites with literal parameters, and as observed sites whose parameters are latents;
* **latent sites**, by difference: ``term(v ~ F) - term(r ~ R)`` on the same backend, where ``r`` takes the same
  value as ``v`` and ``R`` has the same support (so the same bijection, the same Jacobian on that backend) and
  a known density (Flat, HalfFlat, Uniform(0, 1), Flat(ordered=True) ... density 0, or the family itself at
  parameters where the density is constant: Dirichlet(1, 1, 1)). The Jacobians cancel within each backend,
  leaving ``log F(v) - log R(v)``, which must agree across backends. LKJCholesky has no flat reference on the
  Cholesky factors; its reference is LKJCholesky(eta=1), so the latent comparison checks the eta-dependent part
  (the full density is compared as an observed site);
* **deterministics** (and ``scan``'s outputs): the values ``constrain`` returns at the same constrained latents.

Cases a backend cannot build yet are strict xfails with the reason (a fix shows up as XPASS: remove the marker).
"""

import importlib.util
import math
import warnings

import numpy as np
import pytest

if importlib.util.find_spec("numpyro") is None or importlib.util.find_spec("pymc") is None:
    pytest.skip("needs both NumPyro and PyMC", allow_module_level=True)

import resilient.adapters.numpyro  # noqa: E402,F401  (first: it sets the XLA device count)
from resilient import distributions as rd  # noqa: E402
from resilient import math as rm  # noqa: E402
from resilient.backend import get_adapter  # noqa: E402
from resilient.model import Model, deterministic, factor, sample  # noqa: E402

BACKENDS = ("numpyro", "pymc")
RTOL = 1e-8


COV = np.array([[2.0, 0.5], [0.5, 1.0]])
LKJ_L = np.linalg.cholesky(np.array([[1.0, 0.3, -0.2], [0.3, 1.0, 0.1], [-0.2, 0.1, 1.0]]))

#: every family (and Truncated bound kind) as an observed site with literal parameters: name, record, value
OBSERVED = [
    ("Normal", rd.Normal(0.5, 2.0), 1.3),
    ("HalfNormal", rd.HalfNormal(2.0), 1.3),
    ("StudentT", rd.StudentT(4.0, 0.5, 2.0), 1.3),
    ("HalfStudentT", rd.HalfStudentT(4.0, 2.0), 1.3),
    ("Cauchy", rd.Cauchy(0.5, 2.0), 1.3),
    ("HalfCauchy", rd.HalfCauchy(2.0), 1.3),
    ("Laplace", rd.Laplace(0.5, 2.0), 1.3),
    ("Logistic", rd.Logistic(0.5, 2.0), 1.3),
    ("LogNormal", rd.LogNormal(0.5, 2.0), 1.3),
    ("Exponential", rd.Exponential(2.0), 1.3),
    ("Gamma", rd.Gamma(2.0, 3.0), 1.3),
    ("InverseGamma", rd.InverseGamma(2.0, 3.0), 1.3),
    ("Beta", rd.Beta(2.0, 3.0), 0.3),
    ("Uniform", rd.Uniform(-1.0, 2.0), 1.3),
    ("Flat", rd.Flat(), 1.3),
    ("HalfFlat", rd.HalfFlat(), 1.3),
    ("Weibull", rd.Weibull(1.5, 2.0), 1.3),
    ("Bernoulli", rd.Bernoulli(0.3), np.array([1, 0, 1])),
    ("Binomial", rd.Binomial(10, 0.3), 4),
    ("Poisson", rd.Poisson(3.5), np.array([4, 0, 7])),
    ("NegativeBinomial", rd.NegativeBinomial(3.5, 2.0), 4),
    ("Categorical", rd.Categorical(np.array([0.2, 0.5, 0.3])), np.array([1, 2, 0])),
    ("Dirichlet", rd.Dirichlet(np.array([1.0, 2.0, 3.0])), np.array([0.2, 0.3, 0.5])),
    ("MvNormal_cov", rd.MvNormal(np.array([0.0, 1.0]), cov=COV), np.array([0.3, -0.2])),
    ("MvNormal_chol", rd.MvNormal(np.array([0.0, 1.0]), chol=np.linalg.cholesky(COV)), np.array([0.3, -0.2])),
    ("LKJCholesky", rd.LKJCholesky(3, 2.0), LKJ_L),
    ("Normal_shape", rd.Normal(0.5, 2.0, shape=(3,)), np.array([1.3, 0.1, -2.0])),
    # Truncated: each bound kind, a literal infinite bound (rewritten away), a far tail (log-space normaliser)
    ("Truncated_lower", rd.Truncated(rd.Normal(0.5, 2.0), lower=-1.0), 1.3),
    ("Truncated_upper", rd.Truncated(rd.Normal(0.5, 2.0), upper=3.0), 1.3),
    ("Truncated_both", rd.Truncated(rd.Normal(0.5, 2.0), lower=-1.0, upper=3.0), 1.3),
    ("Truncated_infinite_upper", rd.Truncated(rd.Normal(0.5, 2.0), lower=0.0, upper=np.inf), 1.3),
    ("Truncated_infinite_lower", rd.Truncated(rd.Normal(0.5, 2.0), lower=-np.inf, upper=3.0), 1.3),
    ("Truncated_far_tail", rd.Truncated(rd.Normal(0.0, 1.0), lower=40.0), 40.5),
    ("Truncated_StudentT_lower", rd.Truncated(rd.StudentT(4.0, 0.5, 2.0), lower=0.0), 1.3),
    ("Truncated_Gamma_both", rd.Truncated(rd.Gamma(2.0, 3.0), lower=0.2, upper=1.5), 1.3),
    ("Truncated_LogNormal_upper", rd.Truncated(rd.LogNormal(0.0, 1.0), upper=2.0), 1.3),
]

#: every continuous family as a latent at ``value``, with the reference of the same support (see the docstring)
LATENT = [  # name, record, value, reference record
    ("Normal", rd.Normal(0.5, 2.0), 1.3, rd.Flat()),
    ("StudentT", rd.StudentT(4.0, 0.5, 2.0), 1.3, rd.Flat()),
    ("Cauchy", rd.Cauchy(0.5, 2.0), 1.3, rd.Flat()),
    ("Laplace", rd.Laplace(0.5, 2.0), 1.3, rd.Flat()),
    ("Logistic", rd.Logistic(0.5, 2.0), 1.3, rd.Flat()),
    ("HalfNormal", rd.HalfNormal(2.0), 1.3, rd.HalfFlat()),
    ("HalfStudentT", rd.HalfStudentT(4.0, 2.0), 1.3, rd.HalfFlat()),
    ("HalfCauchy", rd.HalfCauchy(2.0), 1.3, rd.HalfFlat()),
    ("LogNormal", rd.LogNormal(0.5, 2.0), 1.3, rd.HalfFlat()),
    ("Exponential", rd.Exponential(2.0), 1.3, rd.HalfFlat()),
    ("Gamma", rd.Gamma(2.0, 3.0), 1.3, rd.HalfFlat()),
    ("InverseGamma", rd.InverseGamma(2.0, 3.0), 1.3, rd.HalfFlat()),
    ("Weibull", rd.Weibull(1.5, 2.0), 1.3, rd.HalfFlat()),
    ("Beta", rd.Beta(2.0, 3.0), 0.3, rd.Uniform(0.0, 1.0)),
    ("Truncated_both", rd.Truncated(rd.Normal(0.5, 2.0), lower=-1.0, upper=2.0), 1.3, rd.Uniform(-1.0, 2.0)),
    ("Dirichlet", rd.Dirichlet(np.array([1.0, 2.0, 3.0])), np.array([0.2, 0.3, 0.5]),
     rd.Dirichlet(np.ones(3))),
    ("MvNormal", rd.MvNormal(np.array([0.0, 1.0]), cov=COV), np.array([0.3, -0.2]), rd.Flat(shape=(2,))),
    ("LKJCholesky", rd.LKJCholesky(3, 2.0), LKJ_L, rd.LKJCholesky(3, 1.0)),
]


def _compile(function, backend):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_adapter(backend).compile(Model(function))


def _x(compiled, values):
    """The backend's own unconstrained point for ``values`` (checked to map back to them)."""
    if not compiled.latent_names:
        return np.zeros(0)
    x = compiled.unconstrain(values)
    back = compiled.constrain(x)
    for name in compiled.latent_names:
        assert np.allclose(back[name], values[name], rtol=1e-10, atol=1e-12), (compiled.backend, name)
    return x


_CACHE: dict = {}


def _both(key, function, values=None):
    """``{backend: (compiled, x, site terms, constrained values)}`` of one model, once per session."""
    if key not in _CACHE:
        result = {}
        for backend in BACKENDS:
            compiled = _compile(function, backend)
            x = _x(compiled, values or {})
            result[backend] = (compiled, x, compiled.site_log_densities(x), compiled.constrain(x))
        _CACHE[key] = result
    return _CACHE[key]


def _agree(a, b):
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-12)


#: real disagreements (strict xfails; NumPyro matches scipy in each). A latent Truncated(Normal) with both bounds:
#: PyMC's term is 1.2e-8 from NumPyro's net of the same-support reference, NumPyro's net equals scipy's
#: truncnorm.logpdf + log 3 to 1e-15, and the observed Truncated_both agrees, so the difference is in PyMC's
#: transform or Jacobian for a truncated latent (the Uniform(-1, 2) reference terms agree exactly).
OBSERVED_DISAGREE: dict[str, str] = {}
LATENT_DISAGREE = {"Truncated_both": "PyMC's latent Truncated(Normal(0.5, 2), -1, 2) term is 1.2e-8 off NumPyro's "
                                     "(which matches scipy); the observed one agrees"}
XFAIL: dict[str, str] = {}  # constructs a backend cannot build yet: none since the PyMC adapter has them all


def _params(names, xfails):
    return [pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=xfails[name])) if name in xfails else name
            for name in names]


# -- every family, observed ------------------------------------------------------------------------------

def observed_families():
    for name, record, value in OBSERVED:
        sample(name, record, obs=np.asarray(value))


def test_the_cases_cover_every_family():
    def family(record):
        return record.base.family if isinstance(record, rd.Truncated) else record.family

    assert {family(r) for _, r, _ in OBSERVED} == set(rd.FAMILIES)
    assert {family(r) for _, r, _, _ in LATENT} == {
        name for name, spec in rd.FAMILIES.items() if not spec.discrete and name not in ("Flat", "HalfFlat", "Uniform")
    }  # Flat, HalfFlat and Uniform are the references (and observed above)


@pytest.mark.parametrize("name", _params([case[0] for case in OBSERVED], OBSERVED_DISAGREE))
def test_observed_family_log_densities_agree(name):
    runs = _both("observed", observed_families)
    terms = {backend: runs[backend][2][name] for backend in BACKENDS}
    assert np.isfinite(terms["numpyro"]) and _agree(terms["numpyro"], terms["pymc"]), terms


# -- every continuous family, latent (difference from a same-support reference) ---------------------------

def latent_families():
    for name, record, _, reference in LATENT:
        sample(f"v_{name}", record)
        sample(f"r_{name}", reference)


LATENT_VALUES = {f"{prefix}_{name}": np.asarray(value) for name, _, value, _ in LATENT for prefix in "vr"}


@pytest.mark.parametrize("name", _params([case[0] for case in LATENT], LATENT_DISAGREE))
def test_latent_family_log_densities_agree_net_of_the_jacobian(name):
    runs = _both("latent", latent_families, LATENT_VALUES)
    net = {backend: runs[backend][2][f"v_{name}"] - runs[backend][2][f"r_{name}"] for backend in BACKENDS}
    assert np.isfinite(net["numpyro"]) and _agree(net["numpyro"], net["pymc"]), net


# -- latent parameters: observed terms at the same constrained latents --------------------------------------

def hierarchy():
    mu = sample("mu", rd.Normal(0, 2))
    sigma = sample("sigma", rd.HalfNormal(1))
    w = sample("w", rd.Dirichlet(np.ones(3)))
    sample("y", rd.Normal(mu, sigma), obs=np.array([0.3, -1.2, 2.0]))
    sample("t", rd.Truncated(rd.StudentT(3, mu, sigma), lower=mu - 1, upper=None), obs=np.array([0.9, 2.5]))
    sample("c", rd.Categorical(w), obs=np.array([0, 2, 2]))


def test_observed_terms_agree_at_the_same_latent_values():
    values = {"mu": np.asarray(0.4), "sigma": np.asarray(1.7), "w": np.array([0.2, 0.3, 0.5])}
    runs = _both("hierarchy", hierarchy, values)
    for site in ("y", "t", "c"):
        terms = {backend: runs[backend][2][site] for backend in BACKENDS}
        assert _agree(terms["numpyro"], terms["pymc"]), (site, terms)


# -- constructs ---------------------------------------------------------------------------------------------

def ordered_model():
    sample("o", rd.Normal(0.5, 2.0, shape=3, ordered=True))
    sample("r", rd.Flat(shape=3, ordered=True))
    sample("p", rd.Gamma(2.0, 1.0, shape=3, ordered=True))
    sample("q", rd.HalfFlat(shape=3, ordered=True))
    sample("obs", rd.Normal(0.0, 1.0, shape=3, ordered=True), obs=np.array([-1.0, 0.5, 2.0]))


def mixture_model():
    w = sample("w", rd.Dirichlet(np.ones(2)))
    mu = sample("mu", rd.Normal(0, 2, shape=2))
    sample("y", rd.Mixture(w, [rd.Normal(mu[0], 1.0), rd.StudentT(3.0, mu[1], 2.0)]), obs=np.array([0.5, 1.5, -2.0]))
    sample("k", rd.Mixture(np.array([0.3, 0.7]), [rd.Gamma(2.0, 1.0), rd.LogNormal(0.0, 1.0)]),
           obs=np.array([0.5, 3.0]))


def normal_mixture_model():
    w = sample("w", rd.Dirichlet(np.ones(2)))
    mu = sample("mu", rd.Normal(0, 2, shape=2))
    sample("y", rd.NormalMixture(w, mu, np.array([1.0, 2.5])), obs=np.array([0.5, 1.5, -2.0]))


def factor_model():
    mu = sample("mu", rd.Normal(0, 2, shape=2))
    factor("f", -0.5 * mu ** 2 + rm.log1p(rm.exp(mu)))


def deterministic_model():
    mu = sample("mu", rd.Normal(0, 2, shape=2))
    sigma = sample("sigma", rd.HalfNormal(1))
    deterministic("d", rm.exp(mu) * sigma + rm.sum(mu))


def scan_model():
    phi = sample("phi", rd.Uniform(-1, 1))
    sigma = sample("sigma", rd.HalfNormal(1))
    y = np.array([0.3, -0.5, 1.2, 0.7, -0.1])

    def step(previous, current):
        return current, phi * previous

    _, means = rm.scan(step, 0.0 * phi, y)  # means[t] = phi * y[t-1] (AR(1) one step ahead)
    deterministic("means", means)
    sample("y", rd.Normal(means, sigma), obs=y)


CONSTRUCTS = {
    # name: (model, constrained latent values, [(kind, site or (site, reference))])
    "ordered": (ordered_model,
                {"o": np.array([-1.0, 0.2, 1.5]), "r": np.array([-1.0, 0.2, 1.5]),
                 "p": np.array([0.3, 1.1, 2.4]), "q": np.array([0.3, 1.1, 2.4])},
                [("net", ("o", "r")), ("net", ("p", "q")), ("term", "obs")]),
    "Mixture": (mixture_model, {"w": np.array([0.35, 0.65]), "mu": np.array([-0.4, 1.1])},
                [("term", "y"), ("term", "k")]),
    "NormalMixture": (normal_mixture_model, {"w": np.array([0.35, 0.65]), "mu": np.array([-0.4, 1.1])},
                      [("term", "y")]),
    "factor": (factor_model, {"mu": np.array([-0.4, 1.1])}, [("term", "f")]),
    "deterministic": (deterministic_model, {"mu": np.array([-0.4, 1.1]), "sigma": np.asarray(0.7)},
                      [("value", "d")]),
    "scan": (scan_model, {"phi": np.asarray(0.6), "sigma": np.asarray(0.8)}, [("value", "means"), ("term", "y")]),
}



def _construct_params():
    return _params(list(CONSTRUCTS), XFAIL)


@pytest.mark.parametrize("name", _construct_params())
def test_construct_log_densities_agree(name):
    model, values, checks = CONSTRUCTS[name]
    runs = _both(name, model, values)
    for kind, site in checks:
        found = {}
        for backend in BACKENDS:
            _, _, terms, constrained = runs[backend]
            if kind == "term":
                found[backend] = terms[site]
            elif kind == "net":
                found[backend] = terms[site[0]] - terms[site[1]]
            else:
                found[backend] = np.asarray(constrained[site])
        if kind == "value":
            assert np.allclose(found["numpyro"], found["pymc"], rtol=RTOL, atol=1e-12), (site, found)
        else:
            assert np.isfinite(found["numpyro"]) and _agree(found["numpyro"], found["pymc"]), (site, found)
    if name == "ordered":  # the ordering itself: every point of either backend's space is sorted
        for backend in BACKENDS:
            compiled = runs[backend][0]
            for seed in range(5):
                point = compiled.constrain(compiled.initial_point("uniform", seed))
                for site in ("o", "p"):
                    assert np.all(np.diff(point[site]) > 0), (backend, site, point[site])
