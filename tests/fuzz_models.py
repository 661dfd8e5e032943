"""Random models in all three dialects, for the fuzzer (issue #22).

A generated model is a small plain-data *spec* (dicts, lists, numbers: it prints readably, round-trips
through JSON and shrinks under Hypothesis); builders turn one spec into a shared-API function
(``resilient.model`` / ``resilient.distributions``), a native PyMC model (with or without dims) or a
native NumPyro function (plates). :func:`run_case` samples one spec on one side (Resilient or the raw
backend) and classifies the outcome; :func:`run_batch` runs many in one worker process (compilation
warm-up shared) under a hard per-model outer limit, restarting the worker after a hang or a hard crash.

Outcomes: ``correct`` (sampled; the closed-form posterior, where known, within MCSE bands), ``sampled``
(no known answer), ``wrong`` (sampled a model that has no valid posterior, or off the known answer),
``named_error`` (Resilient: a ResilientError naming a site; raw: an error naming a site),
``unnamed_error`` (a ResilientError naming no site), ``budget`` (Resilient: the time budget ran out before
any draw, the empty result returned with a warning), ``warned`` (sampled what has no valid posterior, but a
ResilientWarning said so), ``crash`` (any other exception: a backend
traceback), ``hang`` (past the outer limit), ``build_error`` (the native model could not even be built by
its own library: the user's code, before any sampler runs).

Spec::

    {"dialect": "shared-numpyro" | "shared-pymc" | "pymc" | "pymc-dims" | "numpyro",
     "group": None | int,                  # the size of vector sites
     "sites": [site, ...], "seed": int}
    site = {"name", "kind": "latent" | "observed" | "deterministic" | "factor", ...}
      latent/observed: "family", "params": {name: number | [numbers] | ref}, "size": None | int,
                       "lower"/"upper": None | number (truncation), "enumerate": bool,
                       observed: "data": {"n", "seed", "corrupt": None|"support"|"nan"|"inf", "dtype"}
      deterministic:   "loc", "scale", "z" (each a number or ref): loc + scale * z
      factor:          "of": ref, "weight": number: weight * sum(of ** 2)
    ref = {"site": name, "f": "id" | "exp" | "sigmoid"}
"""

from __future__ import annotations

import json
import math
import os
import re
import selectors
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIALECTS = ("shared-numpyro", "shared-pymc", "pymc", "pymc-dims", "numpyro")
MARK = "@@FUZZ "

# family -> (support, ((param, kind), ...), numpyro name, numpyro parameter names)
FAMILIES: dict[str, tuple[str, tuple, str, tuple]] = {
    "Normal": ("real", (("mu", "real"), ("sigma", "pos")), "Normal", ("loc", "scale")),
    "HalfNormal": ("pos", (("sigma", "pos"),), "HalfNormal", ("scale",)),
    "StudentT": ("real", (("nu", "pos"), ("mu", "real"), ("sigma", "pos")), "StudentT", ("df", "loc", "scale")),
    "Cauchy": ("real", (("alpha", "real"), ("beta", "pos")), "Cauchy", ("loc", "scale")),
    "HalfCauchy": ("pos", (("beta", "pos"),), "HalfCauchy", ("scale",)),
    "Laplace": ("real", (("mu", "real"), ("b", "pos")), "Laplace", ("loc", "scale")),
    "Logistic": ("real", (("mu", "real"), ("s", "pos")), "Logistic", ("loc", "scale")),
    "LogNormal": ("pos", (("mu", "real"), ("sigma", "pos")), "LogNormal", ("loc", "scale")),
    "Exponential": ("pos", (("lam", "pos"),), "Exponential", ("rate",)),
    "Gamma": ("pos", (("alpha", "pos"), ("beta", "pos")), "Gamma", ("concentration", "rate")),
    "InverseGamma": ("pos", (("alpha", "pos"), ("beta", "pos")), "InverseGamma", ("concentration", "rate")),
    "Weibull": ("pos", (("alpha", "pos"), ("beta", "pos")), "Weibull", ("concentration", "scale")),
    "Beta": ("unit", (("alpha", "pos"), ("beta", "pos")), "Beta", ("concentration1", "concentration0")),
    "Uniform": ("interval", (("lower", "lit"), ("upper", "lit")), "Uniform", ("low", "high")),
    "Flat": ("real", (), "Flat", ()),
    "HalfFlat": ("pos", (), "HalfFlat", ()),
    "Bernoulli": ("binary", (("p", "unit"),), "Bernoulli", ("probs",)),
    "Binomial": ("count", (("n", "count"), ("p", "unit")), "Binomial", ("total_count", "probs")),
    "Poisson": ("count", (("mu", "pos"),), "Poisson", ("rate",)),
    "NegativeBinomial": ("count", (("mu", "pos"), ("alpha", "pos")), "NegativeBinomial2", ("mean", "concentration")),
    "Categorical": ("category", (("p", "simplex"),), "Categorical", ("probs",)),
}
CONTINUOUS = [f for f, (s, *_) in FAMILIES.items() if s in ("real", "pos", "unit", "interval")
              and f not in ("Flat", "HalfFlat")]
IMPROPER = ["Flat", "HalfFlat"]
DISCRETE = ["Bernoulli", "Binomial", "Poisson", "NegativeBinomial", "Categorical"]
TRUNCATABLE = [f for f in CONTINUOUS if FAMILIES[f][0] in ("real", "pos")]
OBSERVABLE = ["Normal", "StudentT", "Cauchy", "LogNormal", "Exponential", "Gamma", "Beta", "Bernoulli",
              "Binomial", "Poisson", "NegativeBinomial"]
VALID = {"real": [0.0, 1.5, -2.0], "pos": [1.0, 0.5, 3.0], "unit": [0.3, 0.7], "count": [5],
         "simplex": [[0.2, 0.3, 0.5]]}
INVALID = {"real": [math.nan, math.inf], "pos": [-1.0, 0.0, math.inf, math.nan], "unit": [1.5, -0.1],
           "count": [-1, 2.5], "simplex": [[0.5, 0.6, 0.2]]}
UNIFORM_BOUNDS = (-1.0, 2.0)
BOUNDS_LOWER = [None, -1.0, 8.0, -math.inf, math.inf, 3.0]  # none, finite, far tail, -inf, +inf, >= upper
BOUNDS_UPPER = [None, 2.0, math.inf, -math.inf, 1.0]


# --------------------------------------------------------------------------------------------- strategies

def strategies():
    """The Hypothesis strategies (imported lazily: the worker process does not need Hypothesis)."""
    from hypothesis import strategies as st

    def ref_for(kind: str, source: dict) -> dict:
        support = FAMILIES[source["family"]][0] if source["kind"] == "latent" else "real"
        if kind == "real":
            f = "id"
        elif kind == "pos":
            f = "id" if support in ("pos", "unit") and source.get("lower") is None else "exp"
        else:
            f = "id" if support == "unit" else "sigmoid"
        return {"site": source["name"], "f": f}

    @st.composite
    def param(draw, kind: str, sources: list[dict], invalid_ok: bool) -> Any:
        if kind == "lit":
            raise AssertionError
        options = ["literal", "literal"]
        usable = [s for s in sources if kind in ("real", "pos", "unit")]
        if usable:
            options += ["latent", "latent"]
        if invalid_ok:
            options.append("invalid")
        choice = draw(st.sampled_from(options))
        if choice == "latent":
            return ref_for(kind, draw(st.sampled_from(usable)))
        if choice == "invalid":
            return draw(st.sampled_from(INVALID[kind]))
        return draw(st.sampled_from(VALID[kind]))

    def referable(sites: list[dict], vector_ok: bool, vectors: set[str]) -> list[dict]:
        return [s for s in sites if s["kind"] in ("latent", "deterministic")
                and (s["kind"] == "deterministic" or FAMILIES[s["family"]][0] in ("real", "pos", "unit"))
                and (vector_ok or s["name"] not in vectors)]

    @st.composite
    def family_params(draw, family: str, sources: list[dict], invalid_ok: bool) -> dict:
        out = {}
        for name, kind in FAMILIES[family][1]:
            if kind == "lit":
                out[name] = UNIFORM_BOUNDS[0 if name == "lower" else 1]
            else:
                out[name] = draw(param(kind, sources, invalid_ok))
        if family == "Uniform" and invalid_ok and draw(st.booleans()):
            out["lower"], out["upper"] = 2.0, 1.0
        return out

    @st.composite
    def data(draw, family: str, n: int) -> dict:
        corrupt = draw(st.sampled_from([None, None, None, "support", "nan", "inf"]))
        support = FAMILIES[family][0]
        if corrupt == "support" and support == "real":
            corrupt = None
        discrete = support in ("count", "binary", "category")
        dtypes = ["float64", "float32", "int64"] if corrupt not in ("nan", "inf") else ["float64", "float32"]
        if corrupt == "support" and discrete:
            dtypes = ["float64", "int64"]
        return {"n": n, "seed": draw(st.integers(0, 3)), "corrupt": corrupt, "dtype": draw(st.sampled_from(dtypes))}

    @st.composite
    def random_model(draw, dialects=DIALECTS) -> dict:
        dialect = draw(st.sampled_from(dialects))
        group = draw(st.sampled_from([None, 2, 3]))
        sites: list[dict] = []
        vectors: set[str] = set()
        # a hierarchy 0-3 levels deep, centred or non-centred; its last level is a vector when group is set
        depth = draw(st.integers(0, 3))
        top = draw(st.sampled_from(["Normal", "StudentT", "Cauchy", "Laplace", "Logistic", "Flat"]))
        sites.append({"name": "mu", "kind": "latent", "family": top,
                      "params": draw(family_params(top, [], invalid_ok=False)) if top != "Flat" else {}})
        head = sites[0]
        for level in range(1, depth + 1):
            scale_family = draw(st.sampled_from(["HalfNormal", "Exponential", "InverseGamma", "HalfCauchy"]))
            tau = {"name": f"tau{level}", "kind": "latent", "family": scale_family,
                   "params": {n: VALID[k][0] for n, k in FAMILIES[scale_family][1]}}
            sites.append(tau)
            size = group if level == depth else None
            name = f"theta{level}"
            if draw(st.booleans()):  # centred
                sites.append({"name": name, "kind": "latent", "family": "Normal", "size": size,
                              "params": {"mu": {"site": head["name"], "f": "id"}, "sigma": {"site": tau["name"], "f": "id"}}})
            else:
                sites.append({"name": f"z{level}", "kind": "latent", "family": "Normal", "size": size,
                              "params": {"mu": 0.0, "sigma": 1.0}})
                sites.append({"name": name, "kind": "deterministic", "loc": {"site": head["name"], "f": "id"},
                              "scale": {"site": tau["name"], "f": "id"}, "z": {"site": f"z{level}", "f": "id"}})
                vectors.update({f"z{level}"} if size else set())
            if size:
                vectors.add(name)
            head = sites[-1]
        # extra latent sites: any family, literal (valid or invalid) or latent parameters, truncations
        for index in range(draw(st.integers(0, 2))):
            kind = draw(st.sampled_from(["continuous", "continuous", "truncated", "improper", "discrete"]))
            family = draw(st.sampled_from({"continuous": CONTINUOUS, "truncated": TRUNCATABLE, "improper": IMPROPER,
                                           "discrete": DISCRETE}[kind]))
            size = draw(st.sampled_from([None, group])) if group else None
            site = {"name": f"x{index}", "kind": "latent", "family": family, "size": size,
                    "params": draw(family_params(family, referable(sites, bool(size), vectors), invalid_ok=True))}
            if kind == "truncated":
                site["lower"] = draw(st.sampled_from(BOUNDS_LOWER))
                site["upper"] = draw(st.sampled_from(BOUNDS_UPPER))
            if kind == "discrete":
                site["enumerate"] = draw(st.booleans())
            sites.append(site)
            if size:
                vectors.add(site["name"])
        # a likelihood (0-2 observed sites) whose location is the hierarchy's head or another latent
        for index in range(draw(st.integers(0, 2))):
            family = draw(st.sampled_from(OBSERVABLE))
            sources = referable(sites, True, vectors) + [s for s in sites if s["kind"] == "latent"
                                                          and FAMILIES[s["family"]][0] in ("binary", "count")]
            params = draw(family_params(family, referable(sites, True, vectors), invalid_ok=True))
            first_name, first_kind = FAMILIES[family][1][0] if family != "Binomial" else FAMILIES[family][1][1]
            anchor = draw(st.sampled_from(sources)) if sources else None
            if anchor is not None and draw(st.booleans()):
                params[first_name] = ref_for(first_kind, anchor) if anchor["kind"] != "latent" or FAMILIES[
                    anchor["family"]][0] in ("real", "pos", "unit") else {"site": anchor["name"], "f": "id" if
                                                                           first_kind != "unit" else "sigmoid"}
            uses_vector = any(isinstance(v, dict) and v["site"] in vectors for v in params.values())
            n = group if uses_vector else draw(st.sampled_from([3, 5]))
            sites.append({"name": f"y{index}", "kind": "observed", "family": family, "params": params,
                          "size": group if uses_vector else None, "data": draw(data(family, n))})
        if draw(st.booleans()):
            source = draw(st.sampled_from(referable(sites, True, vectors)))
            sites.append({"name": "d", "kind": "deterministic", "loc": 1.0, "scale": 2.0,
                          "z": {"site": source["name"], "f": "exp" if draw(st.booleans()) else "id"}})
        if draw(st.booleans()):
            source = draw(st.sampled_from(referable(sites, True, vectors)))
            sites.append({"name": "pen", "kind": "factor", "of": {"site": source["name"], "f": "id"}, "weight": -0.5})
        return {"dialect": dialect, "group": group, "sites": sites, "seed": draw(st.integers(0, 2**16))}

    @st.composite
    def conjugate_model(draw, dialects=DIALECTS) -> dict:
        dialect = draw(st.sampled_from(dialects))
        n = draw(st.sampled_from([3, 10]))
        seed = draw(st.integers(0, 3))
        if draw(st.booleans()):
            sites = [{"name": "mu", "kind": "latent", "family": "Normal",
                      "params": {"mu": draw(st.sampled_from([0.0, 2.0])), "sigma": draw(st.sampled_from([1.0, 10.0]))}},
                     {"name": "y", "kind": "observed", "family": "Normal",
                      "params": {"mu": {"site": "mu", "f": "id"}, "sigma": draw(st.sampled_from([0.5, 2.0]))},
                      "data": {"n": n, "seed": seed, "corrupt": None,
                               "dtype": draw(st.sampled_from(["float64", "float32"]))}}]
        else:
            sites = [{"name": "lam", "kind": "latent", "family": "Gamma",
                      "params": {"alpha": draw(st.sampled_from([2.0, 0.5])), "beta": draw(st.sampled_from([1.0, 0.1]))}},
                     {"name": "y", "kind": "observed", "family": "Poisson", "params": {"mu": {"site": "lam", "f": "id"}},
                      "data": {"n": n, "seed": seed, "corrupt": None,
                               "dtype": draw(st.sampled_from(["int64", "float64"]))}}]
        return {"dialect": dialect, "group": None, "sites": sites, "seed": draw(st.integers(0, 2**16))}

    def models(dialects=DIALECTS):
        return st.one_of(random_model(dialects), conjugate_model(dialects))

    return {"models": models, "random_model": random_model, "conjugate_model": conjugate_model}


# ------------------------------------------------------------------------------------------- spec facts

def site_map(spec: dict) -> dict[str, dict]:
    return {s["name"]: s for s in spec["sites"]}


def materialise(site: dict) -> np.ndarray:
    """The observed data a spec's data record stands for (deterministic in its seed)."""
    d = site["data"]
    rng = np.random.default_rng(1000 + d["seed"])
    n, support = d["n"], FAMILIES[site["family"]][0]
    values = {"real": lambda: rng.normal(1.0, 1.5, n), "pos": lambda: rng.gamma(2.0, 1.0, n) + 0.1,
              "unit": lambda: rng.beta(2.0, 2.0, n), "count": lambda: rng.poisson(3.0, n).astype(float),
              "binary": lambda: rng.integers(0, 2, n).astype(float),
              "category": lambda: rng.integers(0, 3, n).astype(float)}[support]()
    if site["family"] == "Binomial":
        values = np.minimum(values, 5.0)
    if d["dtype"] == "int64" and support not in ("count", "binary", "category"):
        values = np.round(values) + (1.0 if support in ("pos",) else 0.0)
        if support == "unit":
            values = np.full(n, 0.5)  # integers cannot be inside (0, 1): keep float data for Beta
    corrupt = d["corrupt"]
    if corrupt == "support":
        values[0] = {"pos": -1.0, "unit": 1.5, "count": 2.5 if d["dtype"] != "int64" else -1.0,
                     "binary": 2.0, "category": 7.0}[support]
    elif corrupt == "nan":
        values[0] = np.nan
    elif corrupt == "inf":
        values[0] = np.inf
    if support == "unit" and d["dtype"] == "int64":
        return values.astype(np.float64)
    return values.astype(d["dtype"])


def data_of(spec: dict) -> dict[str, np.ndarray]:
    return {f"obs_{s['name']}": materialise(s) for s in spec["sites"] if s["kind"] == "observed"}


def vector_sites(spec: dict) -> set[str]:
    out: set[str] = set()
    for s in spec["sites"]:
        if s.get("size"):
            out.add(s["name"])
        elif s["kind"] == "deterministic" and any(isinstance(r, dict) and r["site"] in out
                                                   for r in (s["loc"], s["scale"], s["z"])):
            out.add(s["name"])
    return out


def _invalid_literal(value: Any, kind: str) -> bool:
    if isinstance(value, dict) or kind == "lit":
        return False
    return any(value is v or (isinstance(value, list) and value == v) or (
        isinstance(value, float) and isinstance(v, float) and (value == v or (math.isnan(value) and math.isnan(v))))
        for v in INVALID.get(kind, []))


def _bounds_invalid(site: dict) -> bool:
    lower, upper = site.get("lower"), site.get("upper")
    if lower is not None and lower == math.inf or upper is not None and upper == -math.inf:
        return True
    return lower is not None and upper is not None and lower >= upper


def _depends(spec: dict) -> dict[str, set[str]]:
    """site -> the sites that use it (directly)."""
    users: dict[str, set[str]] = {s["name"]: set() for s in spec["sites"]}
    for s in spec["sites"]:
        refs = list(s.get("params", {}).values()) + [s.get(k) for k in ("loc", "scale", "z", "of")]
        for r in refs:
            if isinstance(r, dict):
                users[r["site"]].add(s["name"])
    return users


def _reaches_data(spec: dict, name: str) -> bool:
    users, kinds = _depends(spec), {s["name"]: s["kind"] for s in spec["sites"]}
    stack, seen = [name], set()
    while stack:
        current = stack.pop()
        for user in users[current]:
            if kinds[user] in ("observed", "factor"):
                return True
            if user not in seen:
                seen.add(user)
                stack.append(user)
    return False


def expectation(spec: dict) -> str:
    """``"error"``: the model has no valid posterior (it must not sample), ``"any"``: sampling or a named
    error are both right (imputed NaN data on PyMC, an improper prior whose posterior may be proper, a
    discrete latent), ``"ok"``: a valid model."""
    verdict = "ok"
    pymc_side = spec["dialect"] in ("shared-pymc", "pymc", "pymc-dims")
    for s in spec["sites"]:
        if s["kind"] not in ("latent", "observed"):
            continue
        kinds = dict(FAMILIES[s["family"]][1])
        if any(_invalid_literal(v, kinds[k]) for k, v in s["params"].items()):
            return "error"
        if s["family"] == "Uniform" and s["params"]["lower"] >= s["params"]["upper"]:
            return "error"
        if _bounds_invalid(s):
            return "error"
        if s["kind"] == "observed":
            corrupt = s["data"]["corrupt"]
            if corrupt in ("support", "inf"):
                return "error"
            if corrupt == "nan":
                if not pymc_side:
                    return "error"
                verdict = "any"
        elif s["family"] in IMPROPER:
            if not _reaches_data(spec, s["name"]):
                return "error"
            verdict = "any"
        elif s["family"] in DISCRETE:
            verdict = "any"
        if s["kind"] == "latent" and s["family"] in ("StudentT", "Cauchy") and s.get("lower") is not None \
                and s.get("upper") is not None and spec["dialect"] == "numpyro":
            verdict = "any"
    return verdict


def truth(spec: dict) -> dict | None:
    """The closed-form posterior (mean, sd) of a conjugate spec's one latent, else None."""
    sites = spec["sites"]
    if len(sites) != 2 or sites[1]["kind"] != "observed" or sites[1]["data"]["corrupt"]:
        return None
    prior, like = sites
    y = materialise(like).astype(np.float64)
    if prior["family"] == "Normal" and like["family"] == "Normal" and isinstance(like["params"]["sigma"], float):
        m0, s0, s = prior["params"]["mu"], prior["params"]["sigma"], like["params"]["sigma"]
        precision = 1 / s0**2 + len(y) / s**2
        return {"site": prior["name"], "mean": (m0 / s0**2 + y.sum() / s**2) / precision, "sd": precision**-0.5}
    if prior["family"] == "Gamma" and like["family"] == "Poisson":
        a, b = prior["params"]["alpha"] + y.sum(), prior["params"]["beta"] + len(y)
        return {"site": prior["name"], "mean": a / b, "sd": math.sqrt(a) / b}
    return None


def describe(spec: dict) -> str:
    """One line of pseudo-code: ``mu ~ Normal(0, 5); y0 ~ Poisson(exp(mu)) obs[5 float32, nan]``."""
    def text(v: Any) -> str:
        if isinstance(v, dict):
            return v["site"] if v["f"] == "id" else f"{v['f']}({v['site']})"
        return repr(v)

    parts = []
    for s in spec["sites"]:
        if s["kind"] in ("latent", "observed"):
            args = ", ".join(f"{k}={text(v)}" for k, v in s["params"].items())
            line = f"{s['name']} ~ {s['family']}({args})"
            if s.get("lower") is not None or s.get("upper") is not None:
                line = f"{s['name']} ~ Truncated({s['family']}({args}), {s.get('lower')}, {s.get('upper')})"
            if s.get("size"):
                line += f"[{s['size']}]"
            if s.get("enumerate"):
                line += " enum"
            if s["kind"] == "observed":
                d = s["data"]
                line += f" obs[{d['n']} {d['dtype']}{', ' + d['corrupt'] if d['corrupt'] else ''}]"
        elif s["kind"] == "deterministic":
            line = f"{s['name']} = {text(s['loc'])} + {text(s['scale'])} * {text(s['z'])}"
        else:
            line = f"factor {s['name']} = {s['weight']} * sum({text(s['of'])}^2)"
        parts.append(line)
    return f"[{spec['dialect']}] " + "; ".join(parts)


# ------------------------------------------------------------------------------------------------ builders

def _value(v: Any, env: dict, exp, sigmoid) -> Any:
    if isinstance(v, dict):
        x = env[v["site"]]
        return x if v["f"] == "id" else exp(x) if v["f"] == "exp" else sigmoid(x)
    if isinstance(v, list):
        return np.asarray(v, dtype=float)
    return v


def _shared_walk(spec: dict, data: dict) -> None:
    from resilient import distributions as rd
    from resilient import math as rm
    from resilient.model import deterministic, factor, sample

    env: dict[str, Any] = {}
    for s in spec["sites"]:
        if s["kind"] in ("latent", "observed"):
            params = {k: _value(v, env, rm.exp, rm.sigmoid) for k, v in s["params"].items()}
            size = s.get("size") or (s["data"]["n"] if s["kind"] == "observed" else None)
            dist = getattr(rd, s["family"])(**params, shape=size)
            if s.get("lower") is not None or s.get("upper") is not None:
                dist = rd.Truncated(dist, s.get("lower"), s.get("upper"))
            obs = data[f"obs_{s['name']}"] if s["kind"] == "observed" else None
            env[s["name"]] = sample(s["name"], dist, obs=obs)
        elif s["kind"] == "deterministic":
            v = lambda key: _value(s[key], env, rm.exp, rm.sigmoid)  # noqa: E731
            env[s["name"]] = deterministic(s["name"], v("loc") + v("scale") * v("z"))
        else:
            factor(s["name"], s["weight"] * rm.sum(_value(s["of"], env, rm.exp, rm.sigmoid) ** 2))


def build_shared(spec: dict):
    def model(**data):
        _shared_walk(spec, data)

    model.__name__ = "fuzz_shared"
    return model


def build_pymc(spec: dict, dims: bool = False):
    import pymc as pm
    import pytensor.tensor as pt

    data = data_of(spec)
    coords = {}
    if dims and spec.get("group"):
        coords["group"] = list(range(spec["group"]))
    env: dict[str, Any] = {}
    with pm.Model(coords=coords) as model:
        for s in spec["sites"]:
            if s["kind"] in ("latent", "observed"):
                params = {k: _value(v, env, pt.exp, pm.math.sigmoid) for k, v in s["params"].items()}
                size = s.get("size") or (s["data"]["n"] if s["kind"] == "observed" else None)
                shape: dict = {}
                if size and dims and s.get("size") and spec.get("group"):
                    shape = {"dims": "group"}
                elif size and dims:
                    model.add_coord(f"{s['name']}_dim", list(range(size)))
                    shape = {"dims": f"{s['name']}_dim"}
                elif size:
                    shape = {"shape": size}
                obs = {"observed": data[f"obs_{s['name']}"]} if s["kind"] == "observed" else {}
                family = getattr(pm, s["family"])
                if s.get("lower") is not None or s.get("upper") is not None:
                    base = family.dist(**params, **({"shape": size} if size else {}))
                    env[s["name"]] = pm.Truncated(s["name"], base, lower=s.get("lower"), upper=s.get("upper"),
                                                  **shape, **obs)
                else:
                    env[s["name"]] = family(s["name"], **params, **shape, **obs)
            elif s["kind"] == "deterministic":
                v = lambda key: _value(s[key], env, pt.exp, pm.math.sigmoid)  # noqa: E731
                env[s["name"]] = pm.Deterministic(s["name"], v("loc") + v("scale") * v("z"))
            else:
                pm.Potential(s["name"], s["weight"] * pt.sum(_value(s["of"], env, pt.exp, pm.math.sigmoid) ** 2))
    return model


def _numpyro_dist(s: dict, params: dict):
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    family = s["family"]
    _, spec_params, name, names = FAMILIES[family]
    if family == "Flat":
        return dist.ImproperUniform(constraints.real, (), ())
    if family == "HalfFlat":
        return dist.ImproperUniform(constraints.positive, (), ())
    kwargs = {new: params[old] for (old, _), new in zip(spec_params, names)}
    return getattr(dist, name)(**kwargs)


def _numpyro_walk(spec: dict, data: dict) -> None:
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    env: dict[str, Any] = {}
    group = spec.get("group")
    for s in spec["sites"]:
        if s["kind"] in ("latent", "observed"):
            params = {k: _value(v, env, jnp.exp, jax.nn.sigmoid) for k, v in s["params"].items()}
            d = _numpyro_dist(s, params)
            if s.get("lower") is not None or s.get("upper") is not None:
                d = dist.TruncatedDistribution(d, low=s.get("lower"), high=s.get("upper"))
            infer = {"enumerate": "parallel"} if s.get("enumerate") else None
            obs = data[f"obs_{s['name']}"] if s["kind"] == "observed" else None
            size = s.get("size") or (s["data"]["n"] if s["kind"] == "observed" else None)
            if size:
                plate = "group" if group and size == group and (s.get("size") or s["kind"] == "latent") else f"n_{s['name']}"
                with numpyro.plate(plate, size):
                    env[s["name"]] = numpyro.sample(s["name"], d, obs=obs, infer=infer)
            else:
                env[s["name"]] = numpyro.sample(s["name"], d, obs=obs, infer=infer)
        elif s["kind"] == "deterministic":
            v = lambda key: _value(s[key], env, jnp.exp, jax.nn.sigmoid)  # noqa: E731
            env[s["name"]] = numpyro.deterministic(s["name"], v("loc") + v("scale") * v("z"))
        else:
            numpyro.factor(s["name"], s["weight"] * jnp.sum(_value(s["of"], env, jnp.exp, jax.nn.sigmoid) ** 2))


def build_numpyro(spec: dict):
    def model(**data):
        import numpyro  # noqa: F401  (marks the function as a NumPyro model for resilient's resolver)

        _numpyro_walk(spec, data)

    model.__name__ = "fuzz_numpyro"
    return model


# ------------------------------------------------------------------------------------------------- running

RUN = {"draws": 100, "tune": 100, "chains": 2}
TIME_BUDGET = 20.0


def _names(spec: dict) -> list[str]:
    return [s["name"] for s in spec["sites"]]


def _names_a_site(spec: dict, message: str) -> bool:
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9])", message) for n in _names(spec))


def _check_draws(spec: dict, posterior: Any) -> tuple[str, str]:
    """``correct`` / ``wrong`` / ``sampled`` for a finished run (posterior: name -> (chain, draw, ...))."""
    known = truth(spec)
    if expectation(spec) == "error":
        return "wrong", "sampled a model without a valid posterior"
    if known is None:
        return "sampled", ""
    x = np.asarray(posterior[known["site"]], dtype=float)
    if not np.all(np.isfinite(x)):
        return "wrong", "non-finite draws"
    ess = _ess(x)
    mcse = known["sd"] / math.sqrt(max(ess, 1.0))
    error = abs(x.mean() - known["mean"])
    detail = f"mean {x.mean():.4g} vs {known['mean']:.4g} (mcse {mcse:.3g}, ess {ess:.0f}); sd {x.std():.3g} vs {known['sd']:.3g}"
    if error > 5 * mcse or (ess >= 50 and not 0.5 < x.std() / known["sd"] < 1.6):
        return "wrong", detail
    return "correct", detail


def _ess(x: np.ndarray) -> float:
    """Bulk ESS by ArviZ (chains x draws)."""
    import arviz as az

    try:
        return float(az.ess(x.reshape(x.shape[0], x.shape[1], -1)[..., 0]))
    except Exception:  # noqa: BLE001  (a degenerate chain: count it as one draw)
        return 1.0


def _resilient_run(spec: dict) -> Any:
    import resilient as rs

    dialect, kwargs = spec["dialect"], dict(RUN, random_seed=spec["seed"] % 1000, time_budget=TIME_BUDGET,
                                            progressbar=False)
    if dialect.startswith("shared"):
        return rs.sample(build_shared(spec), backend=dialect.split("-")[1], model_kwargs=data_of(spec), **kwargs)
    if dialect == "numpyro":
        return rs.sample(build_numpyro(spec), model_kwargs=data_of(spec), **kwargs)
    model = _build(spec)
    return rs.sample(model=model, **kwargs)


def _build(spec: dict) -> Any:
    return build_pymc(spec, dims=spec["dialect"] == "pymc-dims")


def _raw_run(spec: dict) -> dict:
    """Raw ``pm.sample`` (PyMC dialects, shared-pymc as its native twin) or ``MCMC(NUTS)`` (the others)."""
    dialect = spec["dialect"]
    if dialect in ("pymc", "pymc-dims", "shared-pymc"):
        import pymc as pm

        model = build_pymc(spec, dims=dialect == "pymc-dims")
        with model:
            idata = pm.sample(draws=RUN["draws"], tune=RUN["tune"], chains=RUN["chains"], cores=1,
                              random_seed=spec["seed"] % 1000, progressbar=False, compute_convergence_checks=False)
        return {k: idata.posterior[k].values for k in idata.posterior.data_vars}
    import jax
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(NUTS(build_numpyro(spec)), num_warmup=RUN["tune"], num_samples=RUN["draws"],
                num_chains=RUN["chains"], chain_method="sequential", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(spec["seed"] % 1000), **data_of(spec))
    return {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}


def run_case(spec: dict, side: str) -> dict:
    """Sample ``spec`` on ``side`` ("resilient" or "raw") and classify the outcome."""
    from resilient.errors import ResilientError

    start = time.perf_counter()
    result: dict[str, Any] = {}
    try:
        if side == "raw":
            try:
                posterior = _raw_run(spec)
            except Exception as error:  # noqa: BLE001  (classified)
                kind = "named_error" if _names_a_site(spec, str(error)) else "crash"
                result = {"outcome": kind, "detail": _error_text(error)}
            else:
                outcome, detail = _check_draws(spec, posterior)
                result = {"outcome": outcome, "detail": detail}
        else:
            if spec["dialect"].startswith("pymc"):
                try:
                    _build(spec)
                except Exception as error:  # noqa: BLE001  (PyMC refused the model itself: the user's code)
                    return {"outcome": "build_error", "detail": _error_text(error),
                            "seconds": time.perf_counter() - start}
            import warnings

            from resilient.errors import ResilientWarning

            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", ResilientWarning)
                    data = _resilient_run(spec)
            except ResilientError as error:
                kind = "named_error" if _names_a_site(spec, str(error)) else "unnamed_error"
                result = {"outcome": kind, "detail": _error_text(error)}
            except Exception as error:  # noqa: BLE001  (an unexplained crash)
                result = {"outcome": "crash", "detail": _error_text(error)}
            else:
                posterior = {k: data.posterior[k].values for k in data.posterior.data_vars} if (
                    data is not None and "posterior" in data.children) else {}
                if not posterior or not any(np.size(v) for v in posterior.values()):
                    from resilient.record import read_run

                    run = (read_run(data) if data is not None else None) or {}
                    result = {"outcome": "budget", "detail": f"no draws returned ({run.get('status')}): "
                                                             f"{run.get('message', '')}"[:400]}
                else:
                    outcome, detail = _check_draws(spec, posterior)
                    said = [str(w.message) for w in caught if issubclass(w.category, ResilientWarning)]
                    if outcome == "wrong" and said:  # the draws came back with a warning saying what is wrong
                        outcome, detail = "warned", f"{detail}; warned: {' | '.join(said)}"[:400]
                    result = {"outcome": outcome, "detail": detail}
    except BaseException as error:  # noqa: BLE001  (KeyboardInterrupt excepted below)
        if isinstance(error, KeyboardInterrupt):
            raise
        result = {"outcome": "crash", "detail": _error_text(error)}
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


def _error_text(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}{where}: {' | '.join(message)[:400]}"


def run_batch(jobs: list[dict], *, limit: float = TIME_BUDGET + 40.0, startup: float = 180.0,
              log: Any = None) -> list[dict]:
    """Run ``jobs`` (``{"spec", "side"}``) in one worker process, in order, each under ``limit`` seconds.

    A job past its limit is a ``hang``: the worker is killed and a new one takes the next job; a worker
    that dies (a segfault, an abort) is a ``crash`` for its job.
    """
    import tempfile

    results: list[dict | None] = [None] * len(jobs)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "jobs.json"
        path.write_text(json.dumps(jobs))
        start_index = 0
        while start_index < len(jobs):
            env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", PYTHONWARNINGS="ignore")
            process = subprocess.Popen([sys.executable, "-m", "tests.fuzz_models", str(path), str(start_index)],
                                       cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                                       text=True, start_new_session=True)
            selector = selectors.DefaultSelector()
            selector.register(process.stdout, selectors.EVENT_READ)
            current, deadline = None, time.monotonic() + startup
            next_index = len(jobs)
            while True:
                ready = selector.select(timeout=max(0.0, deadline - time.monotonic()))
                if not ready:  # past the outer limit
                    _kill(process)
                    if current is None:
                        current = start_index
                    results[current] = {"outcome": "hang", "detail": f"no answer within {limit:.0f} s",
                                        "seconds": limit}
                    next_index = current + 1
                    break
                line = process.stdout.readline()
                if not line:  # the worker died
                    process.wait()
                    if current is not None and results[current] is None:
                        results[current] = {"outcome": "crash", "seconds": None,
                                            "detail": f"worker process died (exit {process.returncode})"}
                        next_index = current + 1
                    else:
                        next_index = max(i for i in range(len(jobs)) if results[i] is not None) + 1 if any(
                            results) else start_index + 1
                    break
                if not line.startswith(MARK):
                    continue
                message = json.loads(line[len(MARK):])
                if message["event"] == "start":
                    current, deadline = message["index"], time.monotonic() + limit
                else:
                    results[message["index"]] = message["result"]
                    if log:
                        log(message["index"], jobs[message["index"]], message["result"])
                    current, deadline = None, time.monotonic() + limit
            selector.close()
            process.stdout.close()
            _kill(process)
            start_index = next_index
    return [r or {"outcome": "crash", "detail": "no result", "seconds": None} for r in results]


def _kill(process: subprocess.Popen) -> None:
    import signal

    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def _worker(path: str, start: int) -> None:
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".cache" / "jax"))
    import jax  # noqa: F401
    import numpyro  # noqa: F401
    import pymc  # noqa: F401

    import resilient  # noqa: F401

    jobs = json.loads(Path(path).read_text())
    out = sys.stdout
    sys.stdout = sys.stderr  # libraries' prints stay off the protocol
    for index in range(start, len(jobs)):
        out.write(MARK + json.dumps({"event": "start", "index": index}) + "\n")
        out.flush()
        result = run_case(jobs[index]["spec"], jobs[index]["side"])
        out.write(MARK + json.dumps({"event": "done", "index": index, "result": result}) + "\n")
        out.flush()


if __name__ == "__main__":
    _worker(sys.argv[1], int(sys.argv[2]))


def generate(count: int, seed: int = 0, dialects: tuple[str, ...] = DIALECTS) -> list[dict]:
    """``count`` distinct specs, the same for the same ``seed`` (Hypothesis with a fixed seed, no database)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as fixed_seed

    found: dict[str, dict] = {}

    @fixed_seed(seed)
    @settings(max_examples=max(20, 6 * count), database=None, deadline=None, derandomize=False,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(strategies()["models"](dialects))
    def collect(spec: dict) -> None:
        if len(found) < count:
            found.setdefault(describe(spec), spec)

    collect()
    return list(found.values())
