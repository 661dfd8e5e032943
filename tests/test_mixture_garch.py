"""A two-component Gaussian mixture (ordered means) and GARCH(1,1) over 200 steps (``resilient.math.scan``),
sampled with ``resilient.sample`` on each backend and checked against a longer run of the same model written
by hand in the raw backend (``numpyro.infer.MCMC`` / ``pm.sample``) on the same synthetic data (issue #13).

Per scalar parameter, the posterior means and sds must agree within 4 combined MCSEs,
``|ours - raw| <= 4 * sqrt(mcse_ours^2 + mcse_raw^2)``; a z of 4 occurs by chance with probability 6e-5 per
comparison, so the 2 x 9 comparisons of a test have a false-alarm rate below 0.2%. The raw model is written
independently of the adapters, so a translation error (a wrong ordered Jacobian, a mixture's weights on the
wrong axis, a scan that carries the wrong state) shows up as a difference, not only a sampler fault.
"""

import importlib.util
import warnings

import numpy as np
import pytest

if importlib.util.find_spec("numpyro") is None or importlib.util.find_spec("pymc") is None:
    pytest.skip("needs both NumPyro and PyMC", allow_module_level=True)

import resilient.adapters.numpyro  # noqa: E402,F401  (first: it sets the XLA device count)
import resilient  # noqa: E402
from examples import garch as garch_example  # noqa: E402
from resilient import distributions as rd  # noqa: E402
from resilient.model import sample  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.numpyro, pytest.mark.pymc]

BAND = 4.0
OURS = {"draws": 1000, "tune": 700, "chains": 2}
RAW = {"draws": 3000, "tune": 1000, "chains": 2}  # the "long run": 3 times our draws


# -- the mixture ------------------------------------------------------------------------------------------

MIX_TRUE = {"w": np.array([0.35, 0.65]), "mu": np.array([-1.5, 2.0]), "sigma": np.array([0.7, 1.0])}


def mixture_data(n=120, seed=11):
    rng = np.random.default_rng(seed)
    k = rng.choice(2, size=n, p=MIX_TRUE["w"])
    return rng.normal(MIX_TRUE["mu"][k], MIX_TRUE["sigma"][k])


def mixture(y):
    """Shared API: ``mu`` ordered (Stan's ``ordered``) so the components cannot switch labels."""
    w = sample("w", rd.Dirichlet(np.ones(2)))
    mu = sample("mu", rd.Normal(0, 3, shape=2, ordered=True))
    sigma = sample("sigma", rd.HalfNormal(2, shape=2))
    sample("y", rd.NormalMixture(w, mu, sigma), obs=y)


def mixture_numpyro(y):
    """By hand: the ordered vector with a flat density plus the Normal(0, 3) terms, as Stan writes it."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    w = numpyro.sample("w", dist.Dirichlet(jnp.ones(2)))
    mu = numpyro.sample("mu", dist.ImproperUniform(constraints.ordered_vector, (), (2,)))
    numpyro.factor("mu_prior", dist.Normal(0.0, 3.0).log_prob(mu).sum())
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0).expand([2]).to_event(1))
    numpyro.sample("y", dist.MixtureSameFamily(dist.Categorical(w), dist.Normal(mu, sigma)), obs=y)


def mixture_pymc(y):
    import pymc as pm

    with pm.Model() as model:
        w = pm.Dirichlet("w", np.ones(2))
        mu = pm.Normal("mu", 0.0, 3.0, shape=2, transform=pm.distributions.transforms.ordered,
                       initval=np.array([-1.0, 1.0]))
        sigma = pm.HalfNormal("sigma", 2.0, shape=2)
        pm.NormalMixture("y", w, mu, sigma, observed=y)
    return model


# -- GARCH(1,1) ---------------------------------------------------------------------------------------------

def garch_numpyro(r, sigma1):
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    omega = numpyro.sample("omega", dist.HalfNormal(1.0))
    alpha = numpyro.sample("alpha", dist.Uniform(0.0, 1.0))
    beta = numpyro.sample("beta", dist.Uniform(0.0, 1.0))

    def step(s2, r_previous):
        s2 = omega + alpha * (r_previous - mu) ** 2 + beta * s2
        return s2, s2

    _, later = jax.lax.scan(step, jnp.asarray(sigma1**2), jnp.asarray(r[:-1]))
    s2 = jnp.concatenate([jnp.array([sigma1**2]), later])
    numpyro.sample("r", dist.Normal(mu, jnp.sqrt(s2)), obs=r)


def garch_pymc(r, sigma1):
    import pymc as pm
    import pytensor
    import pytensor.tensor as pt

    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 1.0)
        omega = pm.HalfNormal("omega", 1.0)
        alpha = pm.Uniform("alpha", 0.0, 1.0)
        beta = pm.Uniform("beta", 0.0, 1.0)
        r_previous = pt.as_tensor_variable(np.asarray(r[:-1], dtype=float))
        later = pytensor.scan(lambda x, s2, mu, omega, alpha, beta: omega + alpha * (x - mu) ** 2 + beta * s2,
                              sequences=[r_previous], outputs_info=[pt.as_tensor_variable(np.float64(sigma1**2))],
                              non_sequences=[mu, omega, alpha, beta], return_updates=False)
        s2 = pt.concatenate([pt.as_tensor_variable(np.array([sigma1**2])), later])
        pm.Normal("r", mu, pt.sqrt(s2), observed=r)
    return model


# -- running and comparing -----------------------------------------------------------------------------------

def raw_numpyro(function, seed, **data):
    """``{name: (chain, draw, ...) array}`` of a raw NumPyro run in float64."""
    import jax
    from numpyro.infer import MCMC, NUTS

    with jax.enable_x64(True):
        mcmc = MCMC(NUTS(function), num_warmup=RAW["tune"], num_samples=RAW["draws"], num_chains=RAW["chains"],
                    chain_method="parallel" if jax.local_device_count() >= RAW["chains"] else "sequential",
                    progress_bar=False)
        mcmc.run(jax.random.PRNGKey(seed), **data)
        return {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}


def raw_pymc(builder, seed, **data):
    import pymc as pm

    with builder(**data):
        run = pm.sample(draws=RAW["draws"], tune=RAW["tune"], chains=RAW["chains"], cores=RAW["chains"],
                        random_seed=seed, progressbar=False, nuts_sampler="pymc", compute_convergence_checks=False)
    return {k: np.asarray(v.values) for k, v in run.posterior.data_vars.items()}


def scalars(draws, names):
    out = {}
    for name in names:
        values = np.asarray(draws[name], float)
        flat = values.reshape(*values.shape[:2], -1)
        for i in range(flat.shape[2]):
            out[name + (f"[{i}]" if values.ndim > 2 else "")] = flat[:, :, i]
    return out


def compare_to_raw(ours, raw, names):
    """Rows ``(label, statistic, ours, raw, z)`` for the mean and sd of every scalar parameter."""
    from arviz_stats.base import array_stats

    def mcse(x, method):
        return float(array_stats.mcse(x, chain_axis=0, draw_axis=1, method=method))

    rows = []
    a, b = scalars(ours, names), scalars(raw, names)
    assert set(a) == set(b)
    for label in a:
        x, y = a[label], b[label]
        for statistic, f in (("mean", np.mean), ("sd", np.std)):
            z = (f(x) - f(y)) / np.hypot(mcse(x, statistic), mcse(y, statistic))
            rows.append((label, statistic, float(f(x)), float(f(y)), float(z)))
    return rows


def ours(model, backend, seed, **data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = resilient.sample(model, backend=backend, random_seed=seed, progressbar=False, **OURS, **data)
    return {k: np.asarray(v.values) for k, v in result.posterior.data_vars.items()}


def check(ours_draws, raw_draws, names, truth):
    rows = compare_to_raw(ours_draws, raw_draws, names)
    table = "\n".join(f"{label:10s} {stat:4s} ours {o:+.4f} raw {r:+.4f} z {z:+.2f}" for label, stat, o, r, z in rows)
    assert all(abs(z) <= BAND for *_, z in rows), table
    # both runs found the data's posterior, not a shared wrong mode: each true value within 4 posterior sds
    posterior = scalars(raw_draws, names)
    for name, value in truth.items():
        for i, v in enumerate(np.atleast_1d(value)):
            label = name + (f"[{i}]" if np.ndim(value) else "")
            draws = posterior[label]
            assert abs(draws.mean() - v) <= 4 * draws.std(), (label, draws.mean(), draws.std(), v)


MIX_NAMES = ("w", "mu", "sigma")
GARCH_NAMES = ("mu", "omega", "alpha", "beta")


def test_normal_mixture_with_ordered_means_on_numpyro_matches_raw_numpyro():
    y = mixture_data()
    check(ours(mixture, "numpyro", 1, y=y), raw_numpyro(mixture_numpyro, 2, y=y), MIX_NAMES, MIX_TRUE)


def test_normal_mixture_with_ordered_means_on_pymc_matches_raw_pymc():
    y = mixture_data()
    check(ours(mixture, "pymc", 1, y=y), raw_pymc(mixture_pymc, 2, y=y), MIX_NAMES, MIX_TRUE)


def test_garch_with_scan_on_numpyro_matches_raw_numpyro():
    data = garch_example.simulate()
    check(ours(garch_example.garch, "numpyro", 3, **data), raw_numpyro(garch_numpyro, 4, **data), GARCH_NAMES,
          garch_example.TRUE)


def test_garch_with_scan_on_pymc_matches_raw_pymc():
    data = garch_example.simulate()
    check(ours(garch_example.garch, "pymc", 3, **data), raw_pymc(garch_pymc, 4, **data), GARCH_NAMES,
          garch_example.TRUE)
