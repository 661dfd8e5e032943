"""The public API: what `import resilient` offers, the real signature of `resilient.sample`,
the deprecated site declaration through it, and compile once / sample many."""

import inspect
import warnings

import numpy as np
import pytest

import resilient
from resilient.distributions import HalfNormal, Normal
from resilient.model import Model, Trace
from tests.loop_paths import draws_returned


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
    # the draws asked (or more, where the loop ran the chain longer)
    assert first.posterior["x"].shape == (1, draws_returned(first, 50))
    assert second.posterior["x"].shape == (1, draws_returned(second, 60))
    with pytest.raises(resilient.ResilientError, match="A compiled model carries its data and backend"):
        resilient.sample(sampler, backend="pymc")


# -- one public surface: typos are errors, pm.sample's spellings map to one option, help() documents it all --

def _keyword_model(y=None, **kwargs):
    resilient.model.sample("mu", Normal(0, 1))


def test_an_unknown_keyword_names_itself_and_the_closest_option_even_when_the_model_takes_kwargs():
    with pytest.raises(resilient.ResilientError, match=r"unknown argument `draw`; did you mean `draws`\?.*"
                                                       r"\*\*kwargs do not make every name data.*model_kwargs="):
        resilient.sample(_keyword_model, y=np.zeros(3), draw=100)
    with pytest.raises(resilient.ResilientError, match=r"unknown argument `max_tree_dept`; did you mean "
                                                       r"`max_tree_depth`\?"):
        resilient.sample(_keyword_model, max_tree_dept=5)
    with pytest.raises(resilient.ResilientError, match=r"unknown argument `draws_`; did you mean `draws`\?"):
        resilient.compile(_keyword_model, draws_=3)
    with pytest.raises(resilient.ResilientError, match=r"`draws`: run arguments go to \.sample"):
        resilient.compile(_keyword_model, draws=3)


@pytest.mark.numpyro
def test_a_numpyro_model_with_kwargs_gets_no_typo_as_data():
    import numpyro
    import numpyro.distributions as dist

    def model(y=None, **kwargs):
        numpyro.sample("y", dist.Normal(0, 1), obs=y)

    with pytest.raises(resilient.ResilientError, match=r"unknown argument `draw`; did you mean `draws`\?"):
        resilient.sample(model, y=np.zeros(3), draw=100)


@pytest.mark.pymc
def test_a_pymc_model_says_unknown_argument_not_that_it_carries_its_data():
    import pymc as pm

    with pm.Model() as model:
        pm.Normal("x", 0, 1)
        with pytest.raises(resilient.ResilientError, match=r"^unknown argument `draw`; did you mean `draws`\?"):
            resilient.sample(draw=100)
    with pytest.raises(resilient.ResilientError, match=r"unknown argument `y`\..*PyMC model carries its own data"):
        resilient.sample(model, y=np.zeros(3))


@pytest.mark.numpyro
def test_data_named_like_an_option_goes_in_model_kwargs():
    def model(draws, init=0.0):
        resilient.model.sample("x", Normal(draws + init, 1))

    sampler = resilient.compile(model, model_kwargs={"draws": 3.0}, init=1.0, backend="numpyro")
    assert dict(sampler.model.kwargs) == {"draws": 3.0, "init": 1.0}
    # a parameter the function names explicitly is data, even when pm.sample has an argument of that name
    from resilient.arguments import split_keywords

    assert split_keywords(model, {"init": 1.0, "nuts": {}}, ["draws"]) == ({"nuts": {}}, {"init": 1.0})
    with pytest.raises(resilient.ResilientError, match="`model_kwargs` must be a dict"):
        resilient.sample(model, model_kwargs=[3.0])


@pytest.mark.parametrize("canonical, spelling", [
    ({"max_tree_depth": 5}, {"max_treedepth": 5}),
    ({"max_tree_depth": 5}, {"nuts": {"max_treedepth": 6}}),
    ({"target_accept": 0.9}, {"nuts": {"target_accept": 0.9}}),
    ({"mass_matrix": "full"}, {"init": "adapt_full"}),
])
def test_an_option_given_in_both_spellings_is_an_error(canonical, spelling):
    with pytest.raises(resilient.ResilientError, match=r"are one option, given twice"):
        resilient.sample(_keyword_model, **canonical, **spelling)


def test_max_treedepth_in_two_pm_sample_spellings_is_an_error():
    with pytest.raises(resilient.ResilientError, match=r"`max_treedepth` and nuts=\{'max_treedepth': ...\} are one"):
        resilient.sample(_keyword_model, max_treedepth=5, nuts={"max_treedepth": 5})


def test_help_documents_every_parameter_and_the_return_type():
    import re

    doc = inspect.getdoc(resilient.sample)
    for section in ("Parameters\n----------", "Returns\n-------", "Raises\n------"):
        assert section in doc, section
    parameters_section = doc.split("Parameters\n----------")[1].split("Returns\n-------")[0]
    documented = {name.strip().lstrip("*") for line in parameters_section.splitlines()
                  if line and not line.startswith(" ") for name in line.split(":")[0].split(",")}
    signature = inspect.signature(resilient.sample)
    assert set(signature.parameters) <= documented, set(signature.parameters) - documented
    for name in ("backend", "engine", "preflight", "fix", "policy", "float32", "checkpoint", "resume",
                 "model_kwargs"):
        assert re.search(rf"^{name}\b.*:", parameters_section, re.M), name
    assert signature.return_annotation == "xarray.DataTree"
    assert all(p.kind is p.KEYWORD_ONLY for n, p in signature.parameters.items() if n not in ("model", "args",
                                                                                              "kwargs"))


def test_preflight_names_a_keyword_the_model_does_not_take_and_the_closest_one():
    from resilient.distributions import Normal
    from resilient.model import sample

    def model(y):
        mu = sample("mu", Normal(0, 1))
        sample("y", Normal(mu, 1), observed=y)

    with pytest.raises(resilient.ResilientError, match=r"unknown argument `random_seeds`; did you mean `random_seed`"):
        resilient.preflight(model, random_seeds=1, y=np.zeros(3))
    with pytest.raises(resilient.ResilientError, match=r"unknown argument `yy`; did you mean `y`\? .*model\(\) names \(y\)"):
        resilient.preflight(model, yy=np.zeros(3))
    assert resilient.preflight(model, y=np.zeros(3)).ok
