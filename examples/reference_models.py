"""The six posteriordb reference posteriors of ``tests/posteriors``, written in the shared API.

Each entry of :data:`MODELS` pairs a model function with a loader that turns posteriordb's
``data.json`` into the function's keyword arguments. Parameter names map to posteriordb's
1-based names by :func:`reference_name` (``beta`` element 0 is ``beta[1]``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from resilient.model import deterministic, sample
from resilient import math as rm
from resilient.distributions import Flat, HalfCauchy, HalfFlat, HalfNormal, Normal


def posteriors_dir() -> Path:
    """``$RESILIENT_POSTERIORS``, else the copy in ``tests/posteriors`` (posteriordb, BSD-3-Clause)."""
    env = os.environ.get("RESILIENT_POSTERIORS")
    path = Path(env) if env else Path(__file__).resolve().parents[1] / "tests" / "posteriors"
    if not path.is_dir():
        raise FileNotFoundError(
            f"The reference posteriors were not found in {path}. Set RESILIENT_POSTERIORS to the folder "
            "that holds posteriordb's posteriors (one folder per posterior with data.json and reference.json)."
        )
    return path


def eight_schools_noncentered(J, y, sigma):
    mu = sample("mu", Normal(0, 5))
    tau = sample("tau", HalfCauchy(5))
    theta_trans = sample("theta_trans", Normal(0, 1, shape=J))
    theta = deterministic("theta", mu + tau * theta_trans)
    sample("y", Normal(theta, sigma), obs=y)


def eight_schools_centered(J, y, sigma):
    mu = sample("mu", Normal(0, 5))
    tau = sample("tau", HalfCauchy(5))
    theta = sample("theta", Normal(mu, tau, shape=J))
    sample("y", Normal(theta, sigma), obs=y)


def kidscore_momiq(kid_score, mom_iq):
    beta = sample("beta", Flat(shape=2))
    sigma = sample("sigma", HalfCauchy(2.5))
    sample("kid_score", Normal(beta[0] + beta[1] * mom_iq, sigma), obs=kid_score)


def ark(K, y):
    T = len(y)
    alpha = sample("alpha", Normal(0, 10))
    beta = sample("beta", Normal(0, 10, shape=K))
    sigma = sample("sigma", HalfCauchy(2.5))
    lags = np.stack([y[K - k - 1 : T - k - 1] for k in range(K)], axis=1)  # lags[t, k] = y[t - k - 1]
    sample("y", Normal(alpha + rm.dot(lags, beta), sigma), obs=y[K:])


def blr(X, y):
    beta = sample("beta", Normal(0, 10, shape=X.shape[1]))
    sigma = sample("sigma", HalfNormal(10))
    sample("y", Normal(rm.dot(X, beta), sigma), obs=y)


def logmesquite(predictors, log_weight):
    beta = sample("beta", Flat(shape=predictors.shape[1]))
    sigma = sample("sigma", HalfFlat())
    sample("log_weight", Normal(rm.dot(predictors, beta), sigma), obs=log_weight)


def logearn_height(height, log_earn):
    beta = sample("beta", Flat(shape=2))
    sigma = sample("sigma", HalfFlat())
    sample("log_earn", Normal(beta[0] + beta[1] * height, sigma), obs=log_earn)


def _eight_schools(d):
    return {"J": d["J"], "y": np.asarray(d["y"], float), "sigma": np.asarray(d["sigma"], float)}


def _mesquite(d):
    columns = ["diam1", "diam2", "canopy_height", "total_height", "density"]
    logs = [np.log(np.asarray(d[c], float)) for c in columns]
    predictors = np.column_stack([np.ones(d["N"]), *logs, np.asarray(d["group"], float)])
    return {"predictors": predictors, "log_weight": np.log(np.asarray(d["weight"], float))}


LOADERS = {
    "eight_schools-eight_schools_noncentered": (eight_schools_noncentered, _eight_schools),
    "kidiq-kidscore_momiq": (
        kidscore_momiq,
        lambda d: {"kid_score": np.asarray(d["kid_score"], float), "mom_iq": np.asarray(d["mom_iq"], float)},
    ),
    "arK-arK": (ark, lambda d: {"K": d["K"], "y": np.asarray(d["y"], float)}),
    "sblrc-blr": (blr, lambda d: {"X": np.asarray(d["X"], float), "y": np.asarray(d["y"], float)}),
    "mesquite-logmesquite": (logmesquite, _mesquite),
    "earnings-logearn_height": (
        logearn_height,
        lambda d: {"height": np.asarray(d["height"], float), "log_earn": np.log(np.asarray(d["earn"], float))},
    ),
}

NAMES = tuple(LOADERS)


def load(name: str):
    """``(model_function, data_kwargs, reference_parameters)`` for a posterior name."""
    folder = posteriors_dir() / name
    function, loader = LOADERS[name]
    data = json.loads((folder / "data.json").read_text())
    reference = json.loads((folder / "reference.json").read_text())["parameters"]
    return function, loader(data), reference


def reference_name(variable: str, index: tuple[int, ...]) -> str:
    """posteriordb's name for one element: ``("beta", (0,))`` -> ``"beta[1]"``."""
    return variable if not index else f"{variable}[{','.join(str(i + 1) for i in index)}]"
