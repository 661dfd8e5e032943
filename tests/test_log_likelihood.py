"""The log_likelihood group (issue #16): az.loo / az.compare need it. On each backend the group ours carries has
the names, dims and coordinates the backend's own converter gives (az.from_numpyro, pm.compute_log_likelihood)
and the values the backend computes on our own draws."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import resilient
from resilient.distributions import HalfNormal, Normal
from resilient.errors import ResilientError
from resilient.model import sample
from tests.loop_paths import returned_attempt

Y = np.array([0.3, -0.2, 1.1, 0.5, 2.0])
RUN = dict(draws=100, tune=100, chains=2, random_seed=7, progressbar=False)


def shared(y):
    mu = sample("mu", Normal(0, 1))
    sigma = sample("sigma", HalfNormal(1))
    sample("y", Normal(mu, sigma), obs=y)


def numpyro_plated(y):
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0, 1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1))
    with numpyro.plate("obs", len(y)):
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


def numpyro_plain(y):
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0, 1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1))
    numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


def _pymc_model(dims: bool):
    import pymc as pm

    with pm.Model(coords={"obs": ["a", "b", "c", "d", "e"]} if dims else None) as model:
        mu = pm.Normal("mu", 0, 1)
        sigma = pm.HalfNormal("sigma", 1)
        pm.Normal("y", mu, sigma, observed=Y, **({"dims": "obs"} if dims else {}))
    return model


def _draws(tree) -> dict[str, np.ndarray]:
    posterior = tree.posterior.to_dataset()
    return {str(k): np.asarray(v.transpose("chain", "draw", ...).values) for k, v in posterior.data_vars.items()}


def _layout(dataset) -> dict:
    """Per variable: dims after (chain, draw), their coordinate values, and the shape."""
    return {str(name): (value.dims[2:], {d: list(np.asarray(dataset[d].values)) for d in value.dims[2:]},
                        value.shape[2:]) for name, value in dataset.data_vars.items()}


def _loo_runs(tree) -> None:
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto k warnings of a 5-point data set
        result = az.loo(tree)
    assert np.isfinite(result.elpd)


def _numpyro_reference(model, y):
    """az.from_numpyro(mcmc, log_likelihood=True) of a short raw run (its names and dims)."""
    import arviz as az
    import jax
    from numpyro.infer import MCMC, NUTS

    with jax.enable_x64(True):
        mcmc = MCMC(NUTS(model), num_warmup=20, num_samples=20, num_chains=1, progress_bar=False)
        mcmc.run(jax.random.PRNGKey(0), Y)
        return az.from_numpyro(mcmc, log_likelihood=True)


def _numpyro_values(model, draws) -> dict[str, np.ndarray]:
    import jax
    from numpyro.infer import log_likelihood

    with jax.enable_x64(True):
        return {k: np.asarray(v) for k, v in log_likelihood(model, draws, Y, batch_ndims=2).items()}


@pytest.mark.numpyro
@pytest.mark.parametrize("model, reference", [(numpyro_plated, numpyro_plated), (shared, numpyro_plain)],
                         ids=["native", "shared-api"])
def test_numpyro_group_is_az_from_numpyro_s_on_our_draws_by_default(model, reference):
    ours = resilient.sample(model, Y, backend="numpyro", **RUN)
    assert "log_likelihood" in ours.children
    group = ours.log_likelihood.to_dataset()
    theirs = _numpyro_reference(reference, Y).log_likelihood.to_dataset()
    assert _layout(group) == _layout(theirs)
    assert group["y"].dims[2:] == ours.observed_data["y"].dims
    raw = _numpyro_values(reference, _draws(ours))
    assert set(raw) == {"y"}
    single = group["y"].dtype == np.float32  # a native NumPyro model runs in float32 by default, as raw NumPyro
    np.testing.assert_allclose(group["y"].transpose("chain", "draw", ...).values, raw["y"], rtol=1e-6 if single else 0,
                               atol=1e-6 if single else 1e-10)
    _loo_runs(ours)


@pytest.mark.numpyro
def test_numpyro_log_likelihood_false_and_idata_kwargs_leave_it_out():
    ours = resilient.sample(numpyro_plated, Y, log_likelihood=False, **RUN)
    assert "log_likelihood" not in ours.children
    ours = resilient.sample(numpyro_plated, Y, idata_kwargs={"log_likelihood": False}, **RUN)
    assert "log_likelihood" not in ours.children


@pytest.mark.numpyro
def test_the_default_group_is_computed_only_under_the_size_limit(monkeypatch, compiled):
    """#26.3: by default the group is added while chains x draws x observed values is at most the limit (here
    2 x 100 x 5 = 1,000 numbers), in the draws' precision; past it one warning gives the size and how to ask;
    asked for, it is added whatever its size."""
    import resilient.sampling

    sampler = compiled(numpyro_plated, "numpyro", Y)
    run = {**RUN, "max_attempts": 1}  # one attempt: the draws are the ones asked (a remedy could add some)
    monkeypatch.setattr(resilient.sampling, "LOG_LIKELIHOOD_DEFAULT_LIMIT", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message="Resilient: attempt 1 failed", category=resilient.ResilientWarning)
        at_limit = sampler.sample(**run)
    assert at_limit.log_likelihood["y"].shape == (2, 100, 5)
    assert at_limit.log_likelihood["y"].dtype == at_limit.posterior["mu"].dtype
    monkeypatch.setattr(resilient.sampling, "LOG_LIKELIHOOD_DEFAULT_LIMIT", 999)
    with pytest.warns(resilient.ResilientWarning) as caught:
        over = sampler.sample(**run)
    caught = [w for w in caught if "log_likelihood" in str(w.message)]
    message = str(caught[0].message)
    assert len(caught) == 1 and "log_likelihood" not in over.children
    assert "1,000 numbers (2 chains x 100 draws x 5 observed values" in message
    assert "log_likelihood=True" in message and "idata_kwargs={'log_likelihood': True}" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message="Resilient: attempt 1 failed", category=resilient.ResilientWarning)
        asked = resilient.sample(sampler, idata_kwargs={"log_likelihood": True}, **run)
    assert asked.log_likelihood["y"].shape == (2, 100, 5)


@pytest.mark.numpyro
def test_numpyro_var_names_keeps_the_group_computed_on_every_latent():
    ours = resilient.sample(numpyro_plated, Y, var_names=["mu"], **RUN)
    assert list(ours.posterior.data_vars) == ["mu"]
    assert ours.log_likelihood["y"].shape == (2, ours.posterior.sizes["draw"], 5)
    assert np.isfinite(ours.log_likelihood["y"].values).all()


@pytest.mark.pymc
@pytest.mark.parametrize("dims", [True, False], ids=["coords-dims", "plain"])
def test_pymc_group_is_pm_compute_log_likelihood_s_on_our_draws_when_asked(dims):
    import pymc as pm

    model = _pymc_model(dims)
    with model:
        ours = resilient.sample(idata_kwargs={"log_likelihood": True}, **RUN)
    assert "log_likelihood" in ours.children
    theirs = pm.compute_log_likelihood(ours.copy(), model=model, extend_inferencedata=False, progressbar=False)
    group = ours.log_likelihood.to_dataset()
    assert _layout(group) == _layout(theirs)
    assert list(group["y"].dims) == list(theirs["y"].dims)
    np.testing.assert_array_equal(group["y"].values, theirs["y"].values)
    _loo_runs(ours)


@pytest.mark.pymc
def test_pymc_shared_api_group_matches_the_same_model_written_in_pymc():
    import pymc as pm

    ours = resilient.sample(shared, Y, backend="pymc", log_likelihood=True, **RUN)
    plain = resilient.sample(shared, Y, backend="pymc", **RUN)
    assert "log_likelihood" not in plain.children  # PyMC's default, as pm.sample
    theirs = pm.compute_log_likelihood(ours.copy(), model=_pymc_model(dims=False), extend_inferencedata=False,
                                       progressbar=False)
    group = ours.log_likelihood.to_dataset()
    assert _layout(group) == _layout(theirs)
    np.testing.assert_allclose(group["y"].values, theirs["y"].values, rtol=0, atol=1e-10)
    _loo_runs(ours)


def test_idata_kwargs_that_need_a_pm_model_and_disagreement_are_refused_by_name():
    with pytest.raises(ResilientError, match=r"idata_kwargs keys \['log_prior'\] are pm.to_inference_data's.*runs on "
                                             r"'numpyro'"):
        resilient.sample(shared, Y, idata_kwargs={"log_likelihood": True, "log_prior": True, "dims": {}})
    with pytest.raises(ResilientError, match="disagree"):
        resilient.sample(shared, Y, log_likelihood=False, idata_kwargs={"log_likelihood": True})
    with pytest.raises(ResilientError, match="`log_likelihood` must be True, False or None"):
        resilient.sample(shared, Y, log_likelihood="yes")


# --- the compiled models' method on its own: variants a remedy makes, new data -------------------------

def _eight_schools_draws(seed: int = 0, chains: int = 2, draws: int = 30) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mu, tau = rng.normal(size=(chains, draws)), rng.exponential(size=(chains, draws))
    raw = rng.normal(size=(chains, draws, 8))
    return {"mu": mu, "tau": tau, "theta_raw": raw, "theta": mu[..., None] + tau[..., None] * raw}


SIGMA = np.array([15.0, 10, 16, 11, 9, 11, 10, 18])
SCHOOLS = np.array([28.0, 8, -3, 7, -1, 1, 18, 12])


def eight_schools_numpyro(sigma, y):
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0, 5))
    tau = numpyro.sample("tau", dist.HalfCauchy(5))
    with numpyro.plate("J", 8):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def eight_schools(sigma, y):
    mu = sample("mu", Normal(0, 5))
    tau = sample("tau", HalfNormal(5))
    theta = sample("theta", Normal(mu, tau, shape=8))
    sample("y", Normal(theta, sigma), obs=y)


@pytest.mark.numpyro
def test_numpyro_native_non_centred_variant_scores_the_user_s_variables():
    """The loop's non-centred variant samples theta_decentered, which the draws leave out: the likelihood is
    the user's function's, on the draws of theta."""
    import jax
    from numpyro.infer import log_likelihood

    from resilient.adapters.numpyro import NumPyroAdapter
    from resilient.model import NativeModel

    draws = {k: v for k, v in _eight_schools_draws().items() if k != "theta_raw"}
    native = NativeModel("numpyro", eight_schools_numpyro, (SIGMA, SCHOOLS))
    variant = NumPyroAdapter().compile(native.with_options(noncentered=frozenset({"theta"})))
    assert "theta_decentered" in variant.latent_names
    with jax.enable_x64(True):
        raw = log_likelihood(eight_schools_numpyro, draws, SIGMA, SCHOOLS, batch_ndims=2)["y"]
    np.testing.assert_allclose(variant.log_likelihood(draws)["y"], np.asarray(raw), rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", [pytest.param("numpyro", marks=pytest.mark.numpyro),
                                     pytest.param("pymc", marks=pytest.mark.pymc)])
def test_shared_api_non_centred_variant_gives_the_centred_model_s_values(backend):
    from resilient.backend import get_adapter
    from resilient.resolve import resolve_model

    model = resolve_model(eight_schools, (SIGMA, SCHOOLS), {}, fix=True, float32=False)
    adapter = get_adapter(backend)
    centred, variant = adapter.compile(model), adapter.compile(model.with_options(noncentered=frozenset({"theta"})))
    assert "theta_raw" in variant.latent_names and "theta_raw" not in centred.latent_names
    draws = _eight_schools_draws()
    expected = centred.log_likelihood(draws)["y"]
    assert expected.shape == (2, 30, 8)
    np.testing.assert_allclose(variant.log_likelihood(draws)["y"], expected, rtol=0, atol=1e-10)


@pytest.mark.numpyro
def test_numpyro_with_data_reuses_the_program_on_the_new_data():
    import jax
    from numpyro.infer import log_likelihood

    from resilient.adapters.numpyro import NumPyroAdapter
    from resilient.model import NativeModel

    draws = {k: v for k, v in _eight_schools_draws().items() if k != "theta_raw"}
    first = NumPyroAdapter().compile(NativeModel("numpyro", eight_schools_numpyro, (SIGMA, SCHOOLS)))
    first.log_likelihood(draws)
    other_y = SCHOOLS[::-1].copy()
    second = first.with_data((SIGMA, other_y), {})
    with jax.enable_x64(True):
        raw = log_likelihood(eight_schools_numpyro, draws, SIGMA, other_y, batch_ndims=2)["y"]
    np.testing.assert_allclose(second.log_likelihood(draws)["y"], np.asarray(raw), rtol=0, atol=1e-10)
    assert second._programs is first._programs and "log_likelihood" in first._programs


def test_the_compiled_model_of_the_attempt_that_made_the_draws_is_used():
    """A remedy's variant (here: non-centred theta, float64) is found in the sampler's compile cache by the
    attempt's engine and settings in the run record; a returned earlier attempt (the run record's
    returned_attempt) names its own."""
    import xarray as xr

    from resilient import record
    from resilient.resolve import resolve_model
    from resilient.sampling import CompiledSampler

    sampler = CompiledSampler(resolve_model(eight_schools, (SIGMA, SCHOOLS), {}, fix=True, float32=True), "numpyro")
    variant = sampler.model.with_options(noncentered=frozenset({"theta"}), float32=False)
    sampler.cache = {("numpyro", sampler.model): "original", ("numpyro", variant): "variant",
                     ("pymc", sampler.model): "other engine"}
    data = xr.DataTree()
    attempts = [{"attempt": 1, "backend": "numpyro", "settings": {"float32": True, "noncentered": []}},
                {"attempt": 2, "backend": "numpyro", "settings": {"float32": False, "noncentered": ["theta"]}},
                {"attempt": 3, "backend": "pymc", "settings": {"float32": True, "noncentered": []}}]
    record.attach(data, attempts=attempts[:2], run={"backend": "numpyro", "message": "accepted"})
    assert sampler._compiled_that_made(data) == "variant"
    record.attach(data, attempts=attempts, run={"backend": "pymc", "message": "budget", "returned_attempt": 1})
    assert sampler._compiled_that_made(data) == "original"
    record.attach(data, attempts=attempts, run={"backend": "pymc", "message": "budget", "returned_attempt": 2})
    assert sampler._compiled_that_made(data) == "variant"
    # a record written before the run record had the field: the last attempt (the message is not parsed since
    # 6da58ae, which read the returned attempt from the field only)
    record.attach(data, attempts=attempts, run={"backend": "pymc", "message": "x; returned attempt 1's draws"})
    assert sampler._compiled_that_made(data) == "other engine"
    record.attach(data, attempts=attempts, run={"backend": "pymc", "message": "accepted"})
    assert sampler._compiled_that_made(data) == "other engine"


@pytest.mark.pymc
def test_nutpie_engine_gives_the_pymc_group():
    pytest.importorskip("nutpie")
    import pymc as pm

    model = _pymc_model(dims=True)
    ours = resilient.sample(model=model, engine="nutpie", log_likelihood=True, **RUN)
    assert resilient.record.read_run(ours)["backend"] == "nutpie"
    theirs = pm.compute_log_likelihood(ours.copy(), model=model, extend_inferencedata=False, progressbar=False)
    assert _layout(ours.log_likelihood.to_dataset()) == _layout(theirs)
    np.testing.assert_array_equal(ours.log_likelihood["y"].values, theirs["y"].values)


def eight_schools_halfcauchy(sigma, y):
    from resilient.distributions import HalfCauchy

    mu = sample("mu", Normal(0, 5))
    tau = sample("tau", HalfCauchy(5))
    theta = sample("theta", Normal(mu, tau, shape=8))
    sample("y", Normal(theta, sigma), obs=y)


@pytest.mark.slow
@pytest.mark.numpyro
@pytest.mark.parametrize("model", [eight_schools_numpyro, eight_schools_halfcauchy], ids=["native", "shared-api"])
def test_after_the_loop_non_centres_the_group_is_the_user_s_likelihood_on_the_draws(model):
    """Centred eight schools: the loop non-centres theta; the group comes from that variant and equals
    numpyro.infer.log_likelihood of the centred model on the returned draws of mu, tau and theta."""
    import jax
    from numpyro.infer import log_likelihood

    from resilient import record

    data = resilient.sample(model, SIGMA, SCHOOLS, backend="numpyro", draws=500, tune=500, chains=4,
                            random_seed=20261128, progressbar=False)
    attempts = record.read_attempts(data)
    # the returned attempt (not necessarily the last) is the non-centred variant: once theta is non-centred every
    # later attempt keeps it, and a run that ends "ok" returns one of them
    assert any(a["remedy"] == "noncenter" for a in attempts) and record.read_run(data)["status"] == "ok"
    assert "theta" in returned_attempt(data)["settings"]["noncentered"], attempts
    draws = {k: v for k, v in _draws(data).items() if k in ("mu", "tau", "theta")}
    with jax.enable_x64(True):
        raw = np.asarray(log_likelihood(eight_schools_numpyro, draws, SIGMA, SCHOOLS, batch_ndims=2)["y"])
    assert data.log_likelihood["y"].shape == (4, data.posterior.sizes["draw"], 8)
    single = data.log_likelihood["y"].dtype == np.float32  # a native NumPyro model runs in float32 by default
    np.testing.assert_allclose(data.log_likelihood["y"].transpose("chain", "draw", ...).values, raw,
                               rtol=1e-6 if single else 0, atol=1e-6 if single else 1e-10)
