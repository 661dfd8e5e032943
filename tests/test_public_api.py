"""The public API: what `import resilient` offers, the real signature of `resilient.sample`,
the deprecated site declaration through it, and compile once / sample many."""

import inspect
import warnings

import numpy as np
import pytest

import resilient
from resilient.distributions import HalfNormal, Normal
from resilient.model import Model, Trace


def test_exports_what_users_catch_and_configure():
    for name in ("sample", "compile", "preflight", "Policy", "SamplerError", "SamplingFailed", "ResilientWarning",
                 "PreflightError", "CompiledSampler"):
        assert name in resilient.__all__ and hasattr(resilient, name), name
    assert issubclass(resilient.ResilientWarning, UserWarning)


def test_sample_shows_its_real_signature():
    parameters = inspect.signature(resilient.sample).parameters
    for name in ("model", "draws", "tune", "chains", "target_accept", "random_seed", "initvals", "time_budget",
                 "max_attempts", "checkpoint", "policy"):
        assert name in parameters, name
    assert parameters["draws"].default == 1000 and parameters["chains"].default == 4


class _NumpyHandler:
    """A stand-in backend for tracing a model: every site's value is a number."""

    math = np

    def sample_site(self, name, dist, observed):
        return 1.0 if observed is None else observed

    def deterministic_site(self, name, value):
        return value


def test_declaring_a_site_through_resilient_sample_still_works_but_warns_at_the_users_line():
    def model():
        mu = resilient.sample("mu", Normal(0, 1))  # the line the warning must name
        resilient.model.sample("sigma", HalfNormal(1))
        return mu

    line = inspect.getsourcelines(model)[1] + 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sites = Trace(Model(model), _NumpyHandler()).run()
    assert list(sites) == ["mu", "sigma"]
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1
    assert "resilient.model.sample" in str(deprecations[0].message)
    assert (deprecations[0].filename, deprecations[0].lineno) == (__file__, line)


@pytest.mark.numpyro
def test_compile_once_sample_many():
    def model():
        resilient.model.sample("x", Normal(0, 1))

    sampler = resilient.compile(model, backend="numpyro")
    compiled = sampler.compiled
    first = sampler.sample(draws=50, tune=50, chains=1, random_seed=1, progressbar=False)
    second = resilient.sample(sampler, draws=60, tune=50, chains=1, random_seed=2, progressbar=False)
    assert sampler.compiled is compiled and list(sampler.cache) == [("numpyro", sampler.model)]
    assert first.posterior["x"].shape == (1, 50) and second.posterior["x"].shape == (1, 60)
    with pytest.raises(resilient.ResilientError, match="A compiled model carries its data and backend"):
        resilient.sample(sampler, backend="pymc")
