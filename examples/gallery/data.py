"""Small data sets for the gallery models: generated from fixed NumPy seeds, or short tables copied from
the sources (no network at run time).

Where a source loads a data file (S&P 500 returns, stock prices, radon, rugby scores, JSB chorales, the
fishing data), a data set of the same shape and character is simulated here, smaller, so that 2 chains x
(500 + 500) raw run in well under a minute on one core.
"""

from __future__ import annotations

import numpy as np


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def sv_returns(n: int = 300, seed: int = 1) -> np.ndarray:
    """Daily log returns from a stochastic-volatility process: log volatility a slow random walk,
    Student-t (nu=6) shocks; scale like the S&P 500's (about 1% a day)."""
    r = rng(seed)
    s = np.cumsum(r.normal(0.0, 0.12, n)) + np.log(0.01)
    return np.exp(s) * r.standard_t(6.0, n)


def lkj_observations(n: int = 200, seed: int = 8927) -> np.ndarray:
    """The LKJ notebook's two-dimensional normal sample (its mu, sigmas and correlation), n rows."""
    mu = np.array([1.0, -2.0])
    sigmas = np.array([0.7, 1.5])
    rho = np.array([[1.0, -0.4], [-0.4, 1.0]])
    cov = np.diag(sigmas) @ rho @ np.diag(sigmas)
    return rng(seed).multivariate_normal(mu, cov, size=n)


def gaussian_mixture(n: int = 300, seed: int = 8927) -> np.ndarray:
    """The marginalized-GMM notebook's three components (weights 0.35/0.4/0.25, means 0/2/5, sds 0.5/0.5/1)."""
    r = rng(seed)
    w, mu, sigma = np.array([0.35, 0.4, 0.25]), np.array([0.0, 2.0, 5.0]), np.array([0.5, 0.5, 1.0])
    component = r.choice(3, size=n, p=w)
    return r.normal(mu[component], sigma[component])


def gp_marginal(n: int = 60, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The GP-Marginal notebook's data: one draw of a Matern-5/2 GP (ell=1, eta=3) on [0, 10] plus
    N(0, 2) noise; n points (the notebook has 100)."""
    r = rng(seed)
    x = np.linspace(0, 10, n)
    d = np.abs(x[:, None] - x[None, :]) / 1.0
    k = 9.0 * (1 + np.sqrt(5) * d + 5.0 / 3.0 * d**2) * np.exp(-np.sqrt(5) * d)
    f = r.multivariate_normal(np.zeros(n), k + 1e-8 * np.eye(n))
    return x[:, None], f + 2.0 * r.normal(size=n)


def robust_regression(seed: int = 8927) -> tuple[np.ndarray, np.ndarray]:
    """GLM-robust: 100 points on y = 1 + 2x with N(0, 0.5) noise, plus the notebook's three outliers."""
    x = np.linspace(0, 1, 100)
    y = 1 + 2 * x + rng(seed).normal(scale=0.5, size=100)
    return np.append(x, [0.1, 0.15, 0.2]), np.append(y, [8, 6, 9])


def rolling_prices(n: int = 200, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Two z-scored price series whose regression coefficients drift (GLD on GFI in the notebook)."""
    r = rng(seed)
    gfi = np.cumsum(r.normal(0, 1, n))
    alpha = np.cumsum(r.normal(0, 0.02, n))
    beta = 0.8 + np.cumsum(r.normal(0, 0.02, n))
    gld = alpha + beta * gfi + r.normal(0, 0.5, n)
    z = lambda v: (v - v.mean()) / v.std(ddof=1)  # noqa: E731
    return z(gfi), z(gld)


# BDA3 p. 102, as in GLM-hierarchical-binomial-model.
RAT_Y = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 5, 2,
                  5, 3, 2, 7, 7, 3, 3, 2, 9, 10, 4, 4, 4, 4, 4, 4, 4, 10, 4, 4, 4, 5, 11, 12, 5, 5, 6, 5, 6, 6, 6, 6,
                  16, 15, 15, 9, 4])
RAT_N = np.array([20, 20, 20, 20, 20, 20, 20, 19, 19, 19, 19, 18, 18, 17, 20, 20, 20, 20, 19, 19, 18, 18, 25, 24, 23,
                  20, 20, 20, 20, 20, 20, 10, 49, 19, 46, 27, 17, 49, 47, 20, 20, 13, 48, 50, 20, 20, 20, 20, 20, 20,
                  20, 48, 19, 19, 19, 22, 46, 49, 20, 20, 23, 19, 22, 20, 20, 20, 52, 46, 47, 24, 14])

EIGHT_SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
EIGHT_SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])

# Kruschke (2013) via the BEST notebook.
IQ_DRUG = np.array([101, 100, 102, 104, 102, 97, 105, 105, 98, 101, 100, 123, 105, 103, 100, 95, 102, 106, 109, 102, 82,
                    102, 100, 102, 102, 101, 102, 102, 103, 103, 97, 97, 103, 101, 97, 104, 96, 103, 124, 101, 101,
                    100, 101, 101, 104, 100, 101])
IQ_PLACEBO = np.array([99, 101, 100, 101, 102, 100, 97, 101, 104, 101, 102, 102, 100, 105, 88, 101, 100, 104, 100, 100,
                       100, 101, 102, 103, 97, 101, 101, 100, 101, 99, 101, 100, 100, 101, 100, 99, 101, 100, 102, 99,
                       100, 99])

# Efron & Morris (1975): 18 players, 45 at-bats each, hits (the pymc and numpyro baseball examples' data).
BASEBALL_AT_BATS = np.full(18, 45)
BASEBALL_HITS = np.array([18, 17, 16, 15, 14, 14, 13, 12, 11, 11, 10, 10, 10, 10, 10, 9, 8, 7])


def rugby(seed: int = 6) -> dict:
    """Six teams, each pair meeting once at home and once away over five seasons (60 matches); Poisson
    scores from the notebook's log-linear model with plausible attack/defence effects."""
    r = rng(seed)
    pairs = [(h, a) for h in range(6) for a in range(6) if h != a]
    home_idx = np.array([p[0] for p in pairs] * 2)
    away_idx = np.array([p[1] for p in pairs] * 2)
    att = np.array([0.25, 0.15, 0.1, 0.0, -0.1, -0.4])
    dfn = -att * 0.8
    home_score = r.poisson(np.exp(3.0 + 0.2 + att[home_idx] + dfn[away_idx]))
    away_score = r.poisson(np.exp(3.0 + att[away_idx] + dfn[home_idx]))
    return {"home_idx": home_idx, "away_idx": away_idx, "home_score": home_score, "away_score": away_score}


def ar2_series(n: int = 300, seed: int = 8927, center: float = -1.0, rho=(0.7, -0.3), sigma: float = 2.0):
    """The AR notebook's AR(2) process (rho 0.7, -0.3; sd 2; centre -1), burnt in, last n values."""
    r = rng(seed)
    total = n + 500
    y = r.normal(center, sigma, total)
    y[1] += rho[0] * y[0]
    for t in range(2, total):
        y[t] += rho[0] * y[t - 1] + rho[1] * y[t - 2]
    return y[-n:]


def radon(counties: int = 30, seed: int = 11) -> dict:
    """Radon-like data: counties with unequal sample sizes (1 to 25 houses), floor 0/1, log radon with
    varying intercepts (sd 0.3) and slopes (sd 0.1) around 1.5 and -0.65, residual sd 0.7."""
    r = rng(seed)
    sizes = np.clip(r.geometric(0.12, counties), 1, 25)
    county = np.repeat(np.arange(counties), sizes)
    floor = (r.random(county.size) < 0.2).astype(float)
    a = 1.5 + 0.3 * r.normal(size=counties)
    b = -0.65 + 0.1 * r.normal(size=counties)
    y = a[county] + b[county] * floor + 0.7 * r.normal(size=county.size)
    return {"county": county, "floor": floor, "log_radon": y, "counties": counties}


def truncated_censored(seed: int = 8927, n: int = 200) -> dict:
    """GLM-truncated-censored-regression: y = x + N(0, 2), x ~ U(-10, 10), bounds [-5, 5]."""
    r = rng(seed)
    x = r.uniform(-10, 10, n)
    y = r.normal(loc=x, scale=2.0)
    keep = (y >= -5) & (y <= 5)
    return {"xt": x[keep], "yt": y[keep], "xc": x, "yc": np.clip(y, -5, 5), "bounds": (-5.0, 5.0)}


def horseshoe(n: int = 100, d: int = 32, sigma_obs: float = 0.05, seed: int = 0):
    """horseshoe_regression.get_data: three active coefficients (2, -1, 0.5) among d, centred response."""
    r = np.random.RandomState(seed)
    x = r.randn(n, d)
    y = x[:, :3] @ np.array([2.0, -1.0, 0.5])
    y -= y.mean()
    return x, y + sigma_obs * r.randn(n)


# annotation.get_data (Dawid & Skene 1979, Table 1), zero-based.
ANNOTATION_POSITIONS = np.array([1, 1, 1, 2, 3, 4, 5]) - 1
ANNOTATIONS = np.array(
    [[1, 1, 1, 1, 1, 1, 1], [3, 3, 3, 4, 3, 3, 4], [1, 1, 2, 2, 1, 2, 2], [2, 2, 2, 3, 1, 2, 1], [2, 2, 2, 3, 2, 2, 2],
     [2, 2, 2, 3, 3, 2, 2], [1, 2, 2, 2, 1, 1, 1], [3, 3, 3, 3, 4, 3, 3], [2, 2, 2, 2, 2, 2, 3], [2, 3, 2, 2, 2, 2, 3],
     [4, 4, 4, 4, 4, 4, 4], [2, 2, 2, 3, 3, 4, 3], [1, 1, 1, 1, 1, 1, 1], [2, 2, 2, 3, 2, 1, 2], [1, 2, 1, 1, 1, 1, 1],
     [1, 1, 1, 2, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1], [2, 2, 2, 2, 2, 2, 1], [2, 2, 2, 1, 3, 2, 2],
     [2, 2, 2, 2, 2, 2, 2], [2, 2, 2, 2, 2, 2, 1], [2, 2, 2, 3, 2, 2, 2], [2, 2, 1, 2, 2, 2, 2], [1, 1, 1, 1, 1, 1, 1],
     [1, 1, 1, 1, 1, 1, 1], [2, 3, 2, 2, 2, 2, 2], [1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1], [1, 1, 2, 1, 1, 2, 1],
     [1, 1, 1, 1, 1, 1, 1], [3, 3, 3, 3, 2, 3, 3], [1, 1, 1, 1, 1, 1, 1], [2, 2, 2, 2, 2, 2, 2], [2, 2, 2, 3, 2, 3, 2],
     [4, 3, 3, 4, 3, 4, 3], [2, 2, 1, 2, 2, 3, 2], [2, 3, 2, 3, 2, 3, 3], [3, 3, 3, 3, 4, 3, 2], [1, 1, 1, 1, 1, 1, 1],
     [1, 1, 1, 1, 1, 1, 1], [1, 2, 1, 2, 1, 1, 1], [2, 3, 2, 2, 2, 2, 2], [1, 2, 1, 1, 1, 1, 1], [2, 2, 2, 2, 2, 2, 2]]
) - 1


def hmm_sequences(num_sequences: int = 8, length: int = 30, data_dim: int = 6, hidden_dim: int = 3, seed: int = 4):
    """Binary 'tone' sequences from a sticky hidden Markov chain (JSB chorales stand-in): sequences
    (num_sequences, length, data_dim) and their lengths (some shorter, padded with zeros)."""
    r = rng(seed)
    trans = 0.8 * np.eye(hidden_dim) + 0.2 / hidden_dim
    emit = r.beta(0.3, 0.7, size=(hidden_dim, data_dim))
    lengths = r.integers(length // 2, length + 1, num_sequences)
    lengths[0] = length
    seqs = np.zeros((num_sequences, length, data_dim))
    for i in range(num_sequences):
        x = 0
        for t in range(lengths[i]):
            x = r.choice(hidden_dim, p=trans[x])
            seqs[i, t] = r.random(data_dim) < emit[x]
    return seqs, lengths


def gp_numpyro(n: int = 25, sigma_obs: float = 0.15, seed: int = 0):
    """gp.get_data: x on [-1, 1], a smooth nonlinear function plus noise, standardised."""
    np_rng = np.random.RandomState(seed)
    x = np.linspace(-1, 1, n)
    y = x + 0.2 * x**3 + 0.5 * (0.5 + x) ** 2 * np.sin(4.0 * x) + sigma_obs * np_rng.randn(n)
    y -= y.mean()
    return x, y / y.std()


# McElreath's UCBadmit (the data of numpyro's ucbadmit example): dept A-F, male 1 / female 0.
UCB_DEPT = np.repeat(np.arange(6), 2)
UCB_MALE = np.tile([1, 0], 6)
UCB_APPLICATIONS = np.array([825, 108, 560, 25, 325, 593, 417, 375, 191, 393, 373, 341])
UCB_ADMIT = np.array([512, 89, 353, 17, 120, 202, 138, 131, 53, 94, 22, 24])


def zip_data(n: int = 250, seed: int = 42):
    """Zero-inflated Poisson regression data (the fishing data's shape: intercept + 3 covariates)."""
    r = rng(seed)
    x = np.column_stack([np.ones(n), r.normal(size=(n, 3))])
    gate = 1 / (1 + np.exp(-(x @ np.array([0.3, 0.8, 0.0, -0.5]))))
    lam = np.exp(x @ np.array([0.5, 0.0, 0.6, 0.3]))
    y = np.where(r.random(n) < gate, 0, r.poisson(lam))
    return x, y.astype(float)


def toy_mixture(num_obs: int = 500, seed: int = 0) -> dict:
    """toy_mixture_model_discrete_enumeration.generate_data: A -> B (hidden) -> C, Bernoulli CPDs drawn
    from the example's Beta priors."""
    r = rng(seed)
    p_a = r.beta(1.0, 10.0)
    p_b = r.beta([10.0, 1.0], [1.0, 10.0])
    p_c = r.beta([10.0, 1.0], [1.0, 10.0])
    a = (r.random(num_obs) < p_a).astype(int)
    b = (r.random(num_obs) < p_b[a]).astype(int)
    c = (r.random(num_obs) < p_c[b]).astype(int)
    return {"A": a, "C": c}
