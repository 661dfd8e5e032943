"""Models from PyMC's example gallery (github.com/pymc-devs/pymc-examples), written as the notebooks
write them: the same priors, likelihoods and parameterisation (centred where the notebook is centred).
Only the data differ where a notebook loads a file: see :mod:`examples.gallery.data`.

Each builder returns a fresh ``pm.Model``.
"""

from __future__ import annotations

import numpy as np

from examples.gallery import data as D


def stochastic_volatility():
    """examples/case_studies/stochastic_volatility.myst.md: ``step_size ~ Exponential(10)``, volatility a
    GaussianRandomWalk (init Normal(0, 100)), ``nu ~ Exponential(0.1)``, returns StudentT(nu, lam=exp(-2 vol)).
    300 simulated daily returns instead of the S&P 500 file."""
    import pymc as pm

    returns = D.sv_returns()
    with pm.Model(coords={"time": np.arange(returns.size)}) as model:
        step_size = pm.Exponential("step_size", 10)
        volatility = pm.GaussianRandomWalk("volatility", sigma=step_size, dims="time",
                                           init_dist=pm.Normal.dist(0, 100))
        nu = pm.Exponential("nu", 0.1)
        pm.StudentT("returns", nu=nu, lam=np.exp(-2 * volatility), observed=returns, dims="time")
    return model


def lkj_mvnormal():
    """examples/howto/LKJ.myst.md: LKJCholeskyCov(n=2, eta=2, sd_dist=Exponential(1)), mu ~ Normal(0, 1.5),
    MvNormal(mu, chol) likelihood; 200 observations (the notebook has 10,000)."""
    import pymc as pm

    x = D.lkj_observations()
    with pm.Model(coords={"axis": ["y", "z"], "axis_bis": ["y", "z"], "obs_id": np.arange(len(x))}) as model:
        chol, corr, stds = pm.LKJCholeskyCov("chol", n=2, eta=2.0, sd_dist=pm.Exponential.dist(1.0, shape=2))
        pm.Deterministic("cov", chol.dot(chol.T), dims=("axis", "axis_bis"))
        mu = pm.Normal("mu", 0.0, sigma=1.5, dims="axis")
        pm.MvNormal("obs", mu, chol=chol, observed=x, dims=("obs_id", "axis"))
    return model


def marginalized_gmm():
    """examples/mixture_models/marginalized_gaussian_mixture_model.myst.md: w ~ Dirichlet(1, 1, 1), ordered
    mu ~ Normal(0, 1) (initial value [1, 2, 3]), tau ~ Gamma(1, 1), NormalMixture(w, mu, tau=tau);
    300 points (the notebook has 1,000)."""
    import pymc as pm

    x = D.gaussian_mixture()
    with pm.Model(coords={"cluster": np.arange(3), "obs_id": np.arange(len(x))}) as model:
        w = pm.Dirichlet("w", np.ones(3))
        mu = pm.Normal("mu", np.zeros(3), 1.0, dims="cluster", transform=pm.distributions.transforms.ordered,
                       initval=[1.0, 2.0, 3.0])
        tau = pm.Gamma("tau", 1.0, 1.0, dims="cluster")
        pm.NormalMixture("x_obs", w, mu, tau=tau, observed=x, dims="obs_id")
    return model


def gp_marginal():
    """examples/gaussian_processes/GP-Marginal.myst.md: ell ~ Gamma(2, 1), eta ~ HalfCauchy(5),
    cov = eta^2 Matern52(ell), gp.Marginal, sigma ~ HalfCauchy(5); 60 points (the notebook has 100)."""
    import pymc as pm

    x, y = D.gp_marginal()
    with pm.Model() as model:
        ell = pm.Gamma("ell", alpha=2, beta=1)
        eta = pm.HalfCauchy("eta", beta=5)
        gp = pm.gp.Marginal(cov_func=eta**2 * pm.gp.cov.Matern52(1, ell))
        sigma = pm.HalfCauchy("sigma", beta=5)
        gp.marginal_likelihood("y", X=x, y=y, sigma=sigma)
    return model


def robust_regression():
    """examples/generalized_linear_models/GLM-robust.myst.md (robust_model): intercept, slope ~ Normal(0, 1),
    sigma ~ HalfCauchy(10), StudentT(nu=3) likelihood; the notebook's data and outliers."""
    import pymc as pm

    x, y = D.robust_regression()
    with pm.Model(coords={"obs_id": np.arange(len(x))}) as model:
        intercept = pm.Normal("intercept", mu=0, sigma=1)
        slope = pm.Normal("slope", mu=0, sigma=1)
        sigma = pm.HalfCauchy("sigma", beta=10)
        mu = pm.Deterministic("mu", intercept + slope * x, dims="obs_id")
        pm.StudentT("y", mu=mu, sigma=sigma, nu=3, observed=y, dims="obs_id")
    return model


def rolling_regression():
    """examples/generalized_linear_models/GLM-rolling-regression.myst.md (model_randomwalk): sigma_alpha,
    sigma_beta ~ Exponential(50), alpha and beta GaussianRandomWalks (init Normal(0, 10)), sd ~ HalfNormal(0.1);
    200 simulated z-scored prices instead of the GLD/GFI file."""
    import pymc as pm

    gfi, gld = D.rolling_prices()
    with pm.Model(coords={"time": np.arange(gfi.size)}) as model:
        sigma_alpha = pm.Exponential("sigma_alpha", 50.0)
        sigma_beta = pm.Exponential("sigma_beta", 50.0)
        alpha = pm.GaussianRandomWalk("alpha", sigma=sigma_alpha, init_dist=pm.Normal.dist(0, 10), dims="time")
        beta = pm.GaussianRandomWalk("beta", sigma=sigma_beta, init_dist=pm.Normal.dist(0, 10), dims="time")
        sd = pm.HalfNormal("sd", sigma=0.1)
        pm.Normal("y", mu=alpha + beta * gfi, sigma=sd, observed=gld)
    return model


def rat_tumour():
    """examples/generalized_linear_models/GLM-hierarchical-binomial-model.myst.md: ab ~ HalfNormal(10) (2),
    Potential log((a + b)^(-5/2)), theta ~ Beta(a, b), Binomial likelihood; the BDA3 rat data."""
    import pymc as pm
    import pytensor.tensor as pt

    with pm.Model(coords={"obs_id": np.arange(len(D.RAT_N)), "param": ["alpha", "beta"]}) as model:
        ab = pm.HalfNormal("ab", sigma=10, dims="param")
        pm.Potential("p(a, b)", pt.log(pt.pow(pt.sum(ab), -5 / 2)))
        pm.Deterministic("X", pt.log(ab[0] / ab[1]))
        pm.Deterministic("Z", pt.log(pt.sum(ab)))
        theta = pm.Beta("theta", alpha=ab[0], beta=ab[1], dims="obs_id")
        pm.Binomial("y", p=theta, observed=D.RAT_Y, n=D.RAT_N)
    return model


def eight_schools_centered():
    """examples/diagnostics_and_criticism/Diagnosing_biased_Inference_with_Divergences.myst.md (centred):
    mu ~ Normal(0, 5), tau ~ HalfCauchy(5), theta ~ Normal(mu, tau), y ~ Normal(theta, sigma)."""
    import pymc as pm

    with pm.Model() as model:
        mu = pm.Normal("mu", mu=0, sigma=5)
        tau = pm.HalfCauchy("tau", beta=5)
        theta = pm.Normal("theta", mu=mu, sigma=tau, shape=8)
        pm.Normal("obs", mu=theta, sigma=D.EIGHT_SCHOOLS_SIGMA, observed=D.EIGHT_SCHOOLS_Y)
    return model


def rugby():
    """examples/case_studies/rugby_analytics.myst.md: home ~ Normal(0, 1), sd_att, sd_def ~ HalfNormal(2),
    intercept ~ Normal(3, 1), centred atts_star/defs_star ~ Normal(0, sd), sum-to-zero by subtracting the
    mean, Poisson home and away points; 60 simulated matches of six teams."""
    import pymc as pm
    import pytensor.tensor as pt

    d = D.rugby()
    with pm.Model(coords={"team": np.arange(6), "match": np.arange(len(d["home_idx"]))}) as model:
        home = pm.Normal("home", mu=0, sigma=1)
        sd_att = pm.HalfNormal("sd_att", sigma=2)
        sd_def = pm.HalfNormal("sd_def", sigma=2)
        intercept = pm.Normal("intercept", mu=3, sigma=1)
        atts_star = pm.Normal("atts_star", mu=0, sigma=sd_att, dims="team")
        defs_star = pm.Normal("defs_star", mu=0, sigma=sd_def, dims="team")
        atts = pm.Deterministic("atts", atts_star - pt.mean(atts_star), dims="team")
        defs = pm.Deterministic("defs", defs_star - pt.mean(defs_star), dims="team")
        home_theta = pt.exp(intercept + home + atts[d["home_idx"]] + defs[d["away_idx"]])
        away_theta = pt.exp(intercept + atts[d["away_idx"]] + defs[d["home_idx"]])
        pm.Poisson("home_points", mu=home_theta, observed=d["home_score"], dims="match")
        pm.Poisson("away_points", mu=away_theta, observed=d["away_score"], dims="match")
    return model


def best():
    """examples/case_studies/BEST.myst.md: group means ~ Normal(pooled mean, 2 x pooled sd), group sds ~
    Uniform(0.1, 10), nu - 1 ~ Exponential(1/29), StudentT(nu, mu, lam=sd^-2) per group; Kruschke's IQ data."""
    import pymc as pm

    pooled = np.concatenate([D.IQ_DRUG, D.IQ_PLACEBO]).astype(float)
    mu_m, mu_s = pooled.mean(), pooled.std() * 2
    with pm.Model() as model:
        group1_mean = pm.Normal("group1_mean", mu=mu_m, sigma=mu_s)
        group2_mean = pm.Normal("group2_mean", mu=mu_m, sigma=mu_s)
        group1_std = pm.Uniform("group1_std", lower=0.1, upper=10)
        group2_std = pm.Uniform("group2_std", lower=0.1, upper=10)
        nu_minus_one = pm.Exponential("nu_minus_one", 1 / 29.0)
        nu = pm.Deterministic("nu", nu_minus_one + 1)
        pm.StudentT("drug", nu=nu, mu=group1_mean, lam=group1_std**-2, observed=D.IQ_DRUG)
        pm.StudentT("placebo", nu=nu, mu=group2_mean, lam=group2_std**-2, observed=D.IQ_PLACEBO)
        diff = pm.Deterministic("difference of means", group1_mean - group2_mean)
        pm.Deterministic("effect size", diff / np.sqrt((group1_std**2 + group2_std**2) / 2))
    return model


def baseball():
    """examples/case_studies/hierarchical_partial_pooling.myst.md: phi ~ Uniform(0, 1), kappa_log ~
    Exponential(1.5), theta ~ Beta(phi kappa, (1 - phi) kappa), Binomial; plus the 0-for-4 player theta_new.
    The Efron-Morris data."""
    import pymc as pm
    import pytensor.tensor as pt

    with pm.Model(coords={"player": np.arange(18)}) as model:
        phi = pm.Uniform("phi", lower=0.0, upper=1.0)
        kappa_log = pm.Exponential("kappa_log", lam=1.5)
        kappa = pm.Deterministic("kappa", pt.exp(kappa_log))
        theta = pm.Beta("theta", alpha=phi * kappa, beta=(1.0 - phi) * kappa, dims="player")
        pm.Binomial("y", n=D.BASEBALL_AT_BATS, p=theta, dims="player", observed=D.BASEBALL_HITS)
        theta_new = pm.Beta("theta_new", alpha=phi * kappa, beta=(1.0 - phi) * kappa)
        pm.Binomial("y_new", n=4, p=theta_new, observed=0)
    return model


def ar2():
    """examples/time_series/AR.myst.md (ar2): rho ~ Normal(0, 1) (3: constant + 2 lags), sigma ~ HalfNormal(3),
    pm.AR(constant=True, init_dist=Normal(0, 10)); 300 points of the notebook's process (it has 5,000)."""
    import pymc as pm

    y = D.ar2_series()
    with pm.Model() as model:
        rho = pm.Normal("rho", 0.0, 1.0, shape=3)
        sigma = pm.HalfNormal("sigma", 3)
        pm.AR("y", rho=rho, sigma=sigma, constant=True, init_dist=pm.Normal.dist(0, 10), observed=y)
    return model


def radon_varying_slope():
    """examples/case_studies/multilevel_modeling.myst.md (varying_intercept_slope, centred): mu_a, mu_b ~
    Normal(0, 10), sigma_a, sigma_b, sigma_y ~ Exponential(1), alpha, beta ~ Normal(mu, sigma) by county;
    simulated radon-like data (30 counties, unequal sizes) instead of the Minnesota file."""
    import pymc as pm

    d = D.radon()
    with pm.Model(coords={"county": np.arange(d["counties"])}) as model:
        mu_a = pm.Normal("mu_a", mu=0.0, sigma=10.0)
        sigma_a = pm.Exponential("sigma_a", 1)
        mu_b = pm.Normal("mu_b", mu=0.0, sigma=10.0)
        sigma_b = pm.Exponential("sigma_b", 1)
        alpha = pm.Normal("alpha", mu=mu_a, sigma=sigma_a, dims="county")
        beta = pm.Normal("beta", mu=mu_b, sigma=sigma_b, dims="county")
        sigma_y = pm.Exponential("sigma_y", 1)
        y_hat = alpha[d["county"]] + beta[d["county"]] * d["floor"]
        pm.Normal("y_like", mu=y_hat, sigma=sigma_y, observed=d["log_radon"])
    return model


def radon_varying_intercept():
    """examples/case_studies/multilevel_modeling.myst.md (varying_intercept, centred): mu_a ~ Normal(0, 10),
    sigma_a ~ Exponential(1), alpha ~ Normal(mu_a, sigma_a), beta ~ Normal(0, 10), sd_y ~ Exponential(1);
    the same simulated data as radon_varying_slope."""
    import pymc as pm

    d = D.radon()
    with pm.Model(coords={"county": np.arange(d["counties"])}) as model:
        mu_a = pm.Normal("mu_a", mu=0.0, sigma=10.0)
        sigma_a = pm.Exponential("sigma_a", 1)
        alpha = pm.Normal("alpha", mu=mu_a, sigma=sigma_a, dims="county")
        beta = pm.Normal("beta", mu=0.0, sigma=10.0)
        sd_y = pm.Exponential("sd_y", 1)
        pm.Normal("y_like", mu=alpha[d["county"]] + beta * d["floor"], sigma=sd_y, observed=d["log_radon"])
    return model


def truncated_regression():
    """examples/generalized_linear_models/GLM-truncated-censored-regression.myst.md (truncated_regression):
    slope, intercept ~ Normal(0, 1), sigma ~ HalfNormal(1), Truncated(Normal, -5, 5) likelihood."""
    import pymc as pm

    d = D.truncated_censored()
    with pm.Model() as model:
        slope = pm.Normal("slope", mu=0, sigma=1)
        intercept = pm.Normal("intercept", mu=0, sigma=1)
        sigma = pm.HalfNormal("σ", sigma=1)
        normal = pm.Normal.dist(mu=slope * d["xt"] + intercept, sigma=sigma)
        pm.Truncated("obs", normal, lower=d["bounds"][0], upper=d["bounds"][1], observed=d["yt"])
    return model


def censored_regression():
    """examples/generalized_linear_models/GLM-truncated-censored-regression.myst.md (censored_regression):
    slope, intercept ~ Normal(0, 1), sigma ~ HalfNormal(1), Censored(Normal, -5, 5) likelihood."""
    import pymc as pm

    d = D.truncated_censored()
    with pm.Model() as model:
        slope = pm.Normal("slope", mu=0, sigma=1)
        intercept = pm.Normal("intercept", mu=0, sigma=1)
        sigma = pm.HalfNormal("σ", sigma=1)
        latent = pm.Normal.dist(mu=slope * d["xc"] + intercept, sigma=sigma)
        pm.Censored("obs", latent, lower=d["bounds"][0], upper=d["bounds"][1], observed=d["yc"])
    return model
