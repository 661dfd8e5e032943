"""The six reference models and the sick ones written natively for NumPyro and for PyMC.

The benchmark runs each native model through the raw backend and through resilient.sample,
so the ratio measures Resilient's overhead alone.
"""

from __future__ import annotations

import numpy as np


def numpyro_models():
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    def eight_schools_noncentered(J, y, sigma):
        mu = numpyro.sample("mu", dist.Normal(0, 5))
        tau = numpyro.sample("tau", dist.HalfCauchy(5))
        theta_trans = numpyro.sample("theta_trans", dist.Normal(0, 1).expand([J]))
        theta = numpyro.deterministic("theta", mu + tau * theta_trans)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)

    def eight_schools_centered(J, y, sigma):
        mu = numpyro.sample("mu", dist.Normal(0, 5))
        tau = numpyro.sample("tau", dist.HalfCauchy(5))
        theta = numpyro.sample("theta", dist.Normal(mu, tau).expand([J]))
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)

    def flat(shape):
        return dist.ImproperUniform(dist.constraints.real, (), (shape,))

    def kidscore_momiq(kid_score, mom_iq):
        beta = numpyro.sample("beta", flat(2))
        sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
        numpyro.sample("kid_score", dist.Normal(beta[0] + beta[1] * mom_iq, sigma), obs=kid_score)

    def ark(K, y):
        T = len(y)
        alpha = numpyro.sample("alpha", dist.Normal(0, 10))
        beta = numpyro.sample("beta", dist.Normal(0, 10).expand([K]))
        sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
        lags = np.stack([y[K - k - 1: T - k - 1] for k in range(K)], axis=1)
        numpyro.sample("y", dist.Normal(alpha + jnp.dot(lags, beta), sigma), obs=y[K:])

    def blr(X, y):
        beta = numpyro.sample("beta", dist.Normal(0, 10).expand([X.shape[1]]))
        sigma = numpyro.sample("sigma", dist.HalfNormal(10))
        numpyro.sample("y", dist.Normal(jnp.dot(X, beta), sigma), obs=y)

    def logmesquite(predictors, log_weight):
        beta = numpyro.sample("beta", flat(predictors.shape[1]))
        sigma = numpyro.sample("sigma", dist.ImproperUniform(dist.constraints.positive, (), ()))
        numpyro.sample("log_weight", dist.Normal(jnp.dot(predictors, beta), sigma), obs=log_weight)

    def logearn_height(height, log_earn):
        beta = numpyro.sample("beta", flat(2))
        sigma = numpyro.sample("sigma", dist.ImproperUniform(dist.constraints.positive, (), ()))
        numpyro.sample("log_earn", dist.Normal(beta[0] + beta[1] * height, sigma), obs=log_earn)

    def motivating():
        sigma = numpyro.sample("sigma", dist.InverseGamma(2.0, 3.0))
        numpyro.sample("V", dist.TruncatedNormal(0.0, sigma, low=0.0, high=jnp.inf))

    return {
        "eight_schools-eight_schools_noncentered": eight_schools_noncentered,
        "kidiq-kidscore_momiq": kidscore_momiq,
        "arK-arK": ark,
        "sblrc-blr": blr,
        "mesquite-logmesquite": logmesquite,
        "earnings-logearn_height": logearn_height,
        "eight_schools_centered": eight_schools_centered,
        "motivating": motivating,
    }


def pymc_model(name, data):
    """A pm.Model of the named posterior with ``data`` (the loader's keyword arguments)."""
    import pymc as pm

    with pm.Model() as model:
        if name.startswith("eight_schools"):
            mu = pm.Normal("mu", 0, 5)
            tau = pm.HalfCauchy("tau", 5)
            if name == "eight_schools_centered":
                theta = pm.Normal("theta", mu, tau, shape=data["J"])
            else:
                theta_trans = pm.Normal("theta_trans", 0, 1, shape=data["J"])
                theta = pm.Deterministic("theta", mu + tau * theta_trans)
            pm.Normal("y", theta, data["sigma"], observed=data["y"])
        elif name == "kidiq-kidscore_momiq":
            beta = pm.Flat("beta", shape=2)
            sigma = pm.HalfCauchy("sigma", 2.5)
            pm.Normal("kid_score", beta[0] + beta[1] * data["mom_iq"], sigma, observed=data["kid_score"])
        elif name == "arK-arK":
            K, y = data["K"], data["y"]
            lags = np.stack([y[K - k - 1: len(y) - k - 1] for k in range(K)], axis=1)
            alpha = pm.Normal("alpha", 0, 10)
            beta = pm.Normal("beta", 0, 10, shape=K)
            sigma = pm.HalfCauchy("sigma", 2.5)
            pm.Normal("y", alpha + pm.math.dot(lags, beta), sigma, observed=y[K:])
        elif name == "sblrc-blr":
            beta = pm.Normal("beta", 0, 10, shape=data["X"].shape[1])
            sigma = pm.HalfNormal("sigma", 10)
            pm.Normal("y", pm.math.dot(data["X"], beta), sigma, observed=data["y"])
        elif name == "mesquite-logmesquite":
            beta = pm.Flat("beta", shape=data["predictors"].shape[1])
            sigma = pm.HalfFlat("sigma")
            pm.Normal("log_weight", pm.math.dot(data["predictors"], beta), sigma, observed=data["log_weight"])
        elif name == "earnings-logearn_height":
            beta = pm.Flat("beta", shape=2)
            sigma = pm.HalfFlat("sigma")
            pm.Normal("log_earn", beta[0] + beta[1] * data["height"], sigma, observed=data["log_earn"])
        elif name == "motivating":
            sigma = pm.InverseGamma("sigma", 2, 3)
            pm.Truncated("V", pm.Normal.dist(0, sigma), lower=0, upper=np.inf)
        else:
            raise KeyError(name)
    return model
