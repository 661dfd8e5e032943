"""Bambi models (issue #25.1): ``resilient.sample(bmb_model, ...)`` takes what ``bmb.Model.fit`` takes for MCMC,
runs the PyMC model Bambi builds under the loop, and returns what ``fit`` returns (Bambi's names, dims, coords and
post-processing), so ``model.predict(idata)`` works on it. Compared with ``fit()`` itself on Bambi's kinds of
example (a linear model, a hierarchical logistic GLMM with group-specific slopes, a negative binomial), on data
simulated here with fixed seeds (Bambi's own data sets are downloaded, and the suite stays offline)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

try:
    import bambi as bmb
except ImportError:  # pragma: no cover - the extra is part of `all`; CI installs it
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip("bambi is not installed (pip install 'resilient[bambi]'); the Bambi bridge is not tested",
                allow_module_level=True)

import pandas as pd

import resilient
from resilient.errors import ResilientError

pytestmark = pytest.mark.pymc


def linear():
    rng = np.random.default_rng(11)
    x = rng.normal(size=60)
    return bmb.Model("y ~ x", pd.DataFrame({"y": 1.0 + 0.5 * x + rng.normal(0, 0.8, 60), "x": x}))


def glmm():
    """Hierarchical logistic regression with group-specific intercepts and slopes."""
    rng = np.random.default_rng(0)
    n, groups = 160, 6
    g = rng.integers(0, groups, n)
    x = rng.normal(size=n)
    eta = -0.3 + 0.8 * x + rng.normal(0, 0.7, groups)[g] + rng.normal(0, 0.4, groups)[g] * x
    frame = pd.DataFrame({"y": rng.binomial(1, 1 / (1 + np.exp(-eta))), "x": x, "g": [f"g{i}" for i in g]})
    return bmb.Model("y ~ x + (x|g)", frame, family="bernoulli")


def negative_binomial():
    rng = np.random.default_rng(5)
    x = rng.normal(size=100)
    mu = np.exp(1.0 + 0.4 * x)
    counts = rng.negative_binomial(3.0, 3.0 / (3.0 + mu))
    return bmb.Model("count ~ x", pd.DataFrame({"count": counts, "x": x}), family="negativebinomial")


RUN = dict(draws=500, tune=500, chains=2, random_seed=4, progressbar=False)


def _fit(model, **run):
    """``model.fit`` as a user calls it (PyMC's own messages silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(**run)


def _layout(data):
    """Each group's variables, their dims and the index coordinates (chain/draw aside)."""
    return {group: ({str(n): tuple(v.dims) for n, v in data[group].to_dataset().data_vars.items()},
                    {str(n): list(np.asarray(data[group][n].values)) for n in data[group].to_dataset().indexes
                     if n not in ("chain", "draw")})
            for group in data.children}


def _agree_within_mcse(ours, theirs, z=4.5):
    """Every posterior mean (each element) agrees with fit's within z combined Monte Carlo standard errors."""
    from arviz_stats import mcse

    a, b = ours.posterior.to_dataset(), theirs.posterior.to_dataset()
    mcse_a, mcse_b = mcse(a), mcse(b)
    for name in b.data_vars:
        gap = np.abs(a[name].mean(("chain", "draw")) - b[name].mean(("chain", "draw")))
        band = z * np.sqrt(mcse_a[name] ** 2 + mcse_b[name] ** 2)
        assert bool((gap <= band).all()), (name, gap.values, band.values)


def test_every_fit_argument_has_a_stated_fate_and_the_guide_shows_the_table():
    import inspect
    from pathlib import Path

    from resilient.adapters.pymc.bambi import FIT_ARGUMENTS, markdown_table

    arguments = [n for n, p in inspect.signature(bmb.Model.fit).parameters.items()
                 if n != "self" and p.kind is not p.VAR_KEYWORD]
    assert [n for n in arguments if n not in FIT_ARGUMENTS] == []
    guide = Path(__file__).resolve().parents[1] / "docs" / "guide" / "bambi.md"
    assert markdown_table() in guide.read_text()


def test_fit_arguments_are_resolved_or_refused_with_the_reason():
    model = linear()
    for method, message in (("numpyro", "inference_method='numpyro' is not supported: it runs Bambi's PyMC model"),
                            ("blackjax", "on blackjax's JAX NUTS"),
                            ("vi", r"it is not MCMC.*Call model.fit\(inference_method='vi'\)"),
                            ("laplace", "it is not MCMC"),
                            ("mcmc", "`inference_method` must be one of 'pymc', 'nutpie'")):
        with pytest.raises(ResilientError, match=message):
            resilient.sample(model, inference_method=method)
    with pytest.raises(ResilientError, match="inference_method='pymc' and engine='nutpie' disagree"):
        resilient.sample(model, inference_method="pymc", engine="nutpie")
    with pytest.raises(ResilientError, match="`var_names` is not supported for a Bambi model: fit chooses"):
        resilient.sample(model, var_names=["x"])
    with pytest.raises(ResilientError, match="A Bambi model carries its data"):
        resilient.sample(model, np.zeros(3))
    with pytest.raises(ResilientError, match=r"unknown argument `omit_offset`; did you mean `omit_offsets`\?"):
        resilient.sample(model, omit_offset=False)


@pytest.mark.slow  # ~17 s on 2 shared cores: Bambi builds, PyMC compiles, preflight, two chains
def test_a_linear_model_has_fit_s_names_and_dims_and_predict_works_on_it():
    model = linear()
    data = resilient.sample(model, draws=200, tune=200, chains=2, random_seed=1, progressbar=False,
                            inference_method="pymc")
    assert set(data.posterior.data_vars) == {"Intercept", "x", "sigma"}
    assert data.posterior.attrs["modeling_interface"] == "bambi"
    assert data.observed_data["y"].dims == ("__obs__",)
    assert resilient.record.read_run(data)["status"] == "ok"
    model.predict(data, kind="response")
    assert data.posterior_predictive["y"].dims == ("chain", "draw", "__obs__")
    # 200 draws, or more where the loop ran the chains longer (more_draws)
    assert data.posterior_predictive["y"].shape == (2, data.posterior.sizes["draw"], 60)
    assert data.posterior.sizes["draw"] >= 200
    summary = resilient.diagnose(data)
    assert summary.verdict in ("ok", "warn")


@pytest.mark.slow  # fit() and ours on three models: ~60-90 s on 2 shared cores
@pytest.mark.parametrize("build", [linear, glmm, negative_binomial], ids=["linear", "glmm", "negative_binomial"])
def test_same_groups_names_dims_and_posterior_as_fit(build):
    model = build()
    theirs = _fit(model, inference_method="pymc", **RUN)
    ours = resilient.sample(model, inference_method="pymc", **RUN)
    mine = _layout(ours)
    mine.pop("warmup_sample_stats")  # Resilient keeps warm-up statistics (the report reads them)
    mine.pop("sampler_state")  # and where the chains stand (what a resume takes back)
    reference = _layout(theirs)
    assert set(mine) == set(reference)
    for group in ("posterior", "observed_data"):
        assert mine[group] == reference[group], group
    assert set(mine["sample_stats"][0]) >= {"diverging", "tree_depth", "energy", "lp", "step_size"}
    _agree_within_mcse(ours, theirs)
    model.predict(ours, kind="response_params")
    assert set(ours.posterior.data_vars) > set(theirs.posterior.data_vars)


@pytest.mark.slow  # ~30 s: the loop's non-centring attempt compiles a second model
def test_a_centred_bambi_model_that_diverges_is_repaired_or_the_reason_is_named():
    """noncentered=False gives Bambi's centred group intercepts: a funnel with 8 groups and 2 rows each. The loop
    either non-centres the term (its name and dims stay Bambi's) and the returned draws pass, or its record names
    the divergences."""
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(8), 2)
    frame = pd.DataFrame({"y": rng.normal(0, 1, 8)[g] * 0.3 + rng.normal(0, 3.0, 16), "g": [f"s{i}" for i in g]})
    model = bmb.Model("y ~ 1 + (1|g)", frame, noncentered=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", resilient.ResilientWarning)
        data = resilient.sample(model, **RUN)
    assert data.posterior["1|g"].dims == ("chain", "draw", "g__factor_dim")
    assert set(data.posterior.data_vars) == {"Intercept", "1|g", "1|g_sigma", "sigma"}
    attempts = resilient.record.read_attempts(data)
    accepted = resilient.record.read_run(data)["status"] == "ok"  # the returned attempt need not be the last
    if accepted:
        # the loop's limit, on the draws returned (more than asked where it ran the chains longer)
        assert float(data.sample_stats["diverging"].mean()) <= resilient.Policy().max_divergence_rate
        assert resilient.diagnose(data).verdict in ("ok", "warn")
    else:
        told = " ".join(str(a.get("message", "")) for a in attempts) + " ".join(str(w.message) for w in caught)
        assert "diverg" in told


@pytest.mark.slow  # a CLI process: imports, Bambi's build, two short chains
def test_resilient_sample_on_a_file_that_builds_a_bambi_model(tmp_path):
    """`resilient sample file.py:model` on a module-level bmb.Model: sampled on PyMC (a Bambi model builds a
    pm.Model, whatever --backend defaults to) with Bambi's names in the netCDF it writes."""
    import subprocess
    import sys

    import xarray as xr

    source = tmp_path / "linear.py"
    source.write_text("import bambi as bmb, numpy as np, pandas as pd\n"
                      "rng = np.random.default_rng(11)\nx = rng.normal(size=60)\n"
                      "model = bmb.Model('y ~ x', pd.DataFrame({'y': 1.0 + 0.5 * x + rng.normal(0, 0.8, 60), 'x': x}))\n")
    out = tmp_path / "run.nc"
    done = subprocess.run([sys.executable, "-m", "resilient", "sample", f"{source}:model", "--draws", "200", "--tune",
                           "200", "--chains", "2", "--seed", "1", "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 3), done.stderr[-3000:]  # ok, or warn (a short run) without --strict
    tree = xr.open_datatree(out)
    assert {"Intercept", "x", "sigma"} <= set(tree.posterior.data_vars)


# --- sample_many over data sets of one formula ----------------------------------------------------------------------


def _linear_frame(seed, n=50):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame({"y": 1.0 + 0.5 * x + rng.normal(0, 0.8, n), "x": x})


def build_grouped(data):
    """A builder for many fits: the Bambi model of one data frame (workers import it from this module)."""
    return bmb.Model("y ~ x + (1|g)", data)


def test_a_template_bambi_model_is_built_again_on_each_frame_as_bmb_model_builds_it():
    """sample_many(bmb_model, frames): the template's recipe builds, on another frame, the model bmb.Model(formula,
    frame, ...) builds (the user's priors kept, Bambi's defaults scaled to that frame); what a bmb.Model does not
    keep is refused with the builder form named; data frames hash by their values. Fast: no sampling."""
    from resilient.adapters.pymc.bambi import _priors_of
    from resilient.batch import ModelSpec, data_fingerprint
    from examples import sbc_models
    from resilient.batch.spec import builds_bambi

    first, other = _linear_frame(1), _linear_frame(2, n=70)
    prior = {"x": bmb.Prior("Normal", mu=0, sigma=3), "sigma": bmb.Prior("Exponential", lam=1)}
    template = bmb.Model("y ~ x", first, family="t", priors=prior)
    spec = ModelSpec.of(template)
    assert builds_bambi(spec.obj) and spec.name == "y ~ x"
    rebuilt = spec.obj(other)
    expected = bmb.Model("y ~ x", other, family="t", priors=prior)
    assert _priors_of(rebuilt) == _priors_of(expected) != _priors_of(template)  # the intercept's scale is other's
    assert rebuilt.family.name == "t"
    assert builds_bambi(build_grouped) and not builds_bambi(linear.__code__)

    assert ModelSpec.of(bmb.Model("y ~ x", first, family="t", priors=prior)).key == spec.key  # a rerun's manifest
    changed_priors = bmb.Model("y ~ x", first)
    changed_priors.set_priors(common=bmb.Prior("Normal", mu=0, sigma=1))
    with pytest.raises(ResilientError, match=r"its priors were changed with set_priors.*Pass a function that builds"):
        ModelSpec.of(changed_priors)

    def shifted(v):
        return v + 1

    with pytest.raises(ResilientError, match=r"cannot build this Bambi model again.*Pass a function that builds"):
        ModelSpec.of(bmb.Model("y ~ shifted(x)", first, extra_namespace={"shifted": shifted}))
    assert data_fingerprint({"d": first}) == data_fingerprint({"d": first.copy()})
    changed = first.copy()
    changed.loc[len(first) - 1, "y"] += 1e-9  # a change repr would not show
    assert data_fingerprint({"d": first}) != data_fingerprint({"d": changed})
    with pytest.raises(ResilientError, match="`fit_kwargs` has `draws`, which is sample_many's own argument"):
        resilient.sample_many(template, [first], fit_kwargs={"draws": 10})
    with pytest.raises(ResilientError, match="`fit_kwargs` has `init`; sample_many takes only omit_offsets"):
        resilient.sample_many(template, [first], fit_kwargs={"init": "adapt_diag"})
    with pytest.raises(ResilientError, match="A Bambi model builds a PyMC model.*got engine='numpyro'"):
        resilient.sample_many(template, [first], engine="numpyro")
    with pytest.raises(ResilientError, match="inference_method='vi' is not supported"):
        resilient.sample_many(template, [first], fit_kwargs={"inference_method": "vi"})
    with pytest.raises(ResilientError, match=r"`fit_kwargs` \(bmb.Model.fit's arguments\) is for a Bambi model"):
        resilient.sample_many(sbc_models.normal, [{}], fit_kwargs={"omit_offsets": False})


@pytest.mark.slow  # ~30-60 s on 2 shared cores: three fits on a LocalCluster, three fit() calls to compare with
def test_sample_many_over_frames_of_one_formula_gives_what_fit_gives_for_each(client, tmp_path):
    """Each stored fit (fits/<id>.nc) has the groups, names and dims of bmb.Model(formula, frame).fit() for its
    frame (one frame longer than the others: Bambi builds again), posterior means agree with fit's within MCSE, and
    model.predict works on the stored fit."""
    frames = [_linear_frame(1), _linear_frame(2), _linear_frame(3, n=70)]
    template = bmb.Model("y ~ x", frames[0])
    run = dict(out=tmp_path / "many", client=client, engine="pymc", draws=500, tune=500, chains=2, random_seed=4,
               progressbar=False)
    result = resilient.sample_many(template, frames, **run)
    again = resilient.sample_many(bmb.Model("y ~ x", frames[0]), frames, **run)  # the same template, made again
    assert again.skipped == 3 and again.counts["ok"] == 3  # found done: a rerun skips them
    summary = result.summary
    assert list(summary["status"]) == ["ok"] * 3, summary[["status", "reason"]].to_dict("records")
    assert list(summary["file"]) == [f"fits/fit-{i:05d}.nc" for i in range(3)]
    assert set(summary["backend"]) == {"pymc"}
    for index, frame in enumerate(frames):
        ours = result.fit(index)
        theirs = _fit(bmb.Model("y ~ x", frame), inference_method="pymc", **RUN)
        mine, reference = _layout(ours), _layout(theirs)
        assert set(mine) - {"warmup_sample_stats", "sampler_state"} == set(reference)
        for group in ("posterior", "observed_data"):
            assert mine[group] == reference[group], (index, group)
        assert ours.posterior.attrs["modeling_interface"] == "bambi"
        _agree_within_mcse(ours, theirs)
        model = bmb.Model("y ~ x", frame)
        with warnings.catch_warnings():  # numba: "Cannot cache compiled function ... large global arrays"
            warnings.filterwarnings("ignore", message="Cannot cache compiled function")
            model.predict(ours, kind="response")
        assert ours.posterior_predictive["y"].shape[-1] == len(frame)


def _grouped_frame(seed, n, groups):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, n)
    x = rng.normal(size=n)
    return pd.DataFrame({"y": 1.0 + 0.5 * x + rng.normal(0, 0.5, groups)[g] + rng.normal(0, 0.8, n), "x": x,
                         "g": [f"g{i}" for i in g]})


@pytest.mark.slow  # ~30 s on 2 shared cores: two short fits on a LocalCluster
def test_sample_many_takes_a_builder_of_bambi_models_and_fit_s_own_arguments(client, tmp_path):
    """A function that builds the bmb.Model from a frame (a data frame, or a dict of its keyword arguments), frames
    with different numbers of groups, and fit_kwargs: each stored fit has fit(omit_offsets=False)'s names, dims and
    group coordinates for its frame."""
    frames = [_grouped_frame(5, 60, 4), _grouped_frame(6, 80, 6)]
    result = resilient.sample_many(build_grouped, [frames[0], {"data": frames[1]}], out=tmp_path / "many",
                                   client=client, fit_kwargs={"omit_offsets": False, "inference_method": "pymc"},
                                   draws=200, tune=200, chains=2, random_seed=2, progressbar=False)
    assert result.counts["failed"] == result.counts["lost"] == 0, result.failed
    for index, frame in enumerate(frames):
        ours = result.fit(index)
        theirs = _fit(build_grouped(frame), draws=20, tune=20, chains=2, random_seed=1, progressbar=False,
                      inference_method="pymc", omit_offsets=False)
        for group in ("posterior", "observed_data"):
            assert _layout(ours)[group] == _layout(theirs)[group], (index, group)
        assert "1|g_offset" in ours.posterior.data_vars
        assert ours.posterior.sizes["g__factor_dim"] == frame["g"].nunique()
