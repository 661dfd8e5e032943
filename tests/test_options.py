"""The run options are one checked record (resilient.options.RunOptions) that resilient.sample,
CompiledSampler.sample, sample_many and sbc build alike: the same defaults, the same checks, the same
messages."""

import dataclasses
import inspect

import pytest

import resilient
from resilient.distributions import Normal
from resilient.model import Model
from resilient.options import RunOptions
from resilient.sampling import CompiledSampler


def shared_model(y=None):
    resilient.model.sample("mu", Normal(0, 1))


@pytest.mark.parametrize("changes, message", [
    ({"draws": 0}, r"`draws` must be an integer >= 1, got 0\."),
    ({"tune": -1}, r"`tune` must be an integer >= 0, got -1\."),
    ({"chains": "4"}, r"`chains` must be an integer >= 1, got '4'\."),
    ({"max_tree_depth": 2.5}, r"`max_tree_depth` must be an integer >= 1, got 2\.5\."),
    ({"cores": 0}, r"`cores` must be an integer >= 1, got 0\."),
    ({"target_accept": 1.2}, r"`target_accept` must be in \(0, 1\), got 1\.2\."),
    ({"mass_matrix": "dense"}, r"`mass_matrix` must be one of 'diag', .*got 'dense'\."),
    ({"random_seed": -3}, r"`random_seed` must be a non-negative integer, got -3\."),
    ({"time_budget": 0}, r"`time_budget` must be a positive number of seconds or None, got 0\."),
    ({"policy": {"max_attempts": 2}}, r"`policy` must be a resilient.Policy, got dict\."),
    ({"log_likelihood": "yes"}, r"`log_likelihood` must be True, False or None, got 'yes'\."),
    ({"var_names": [1]}, r"`var_names` must be variable names \(strings\), got \[1\]\."),
])
def test_each_bad_value_is_quoted(changes, message):
    with pytest.raises(resilient.ResilientError, match=message):
        RunOptions(**changes)


def test_options_are_normalised_once_and_replace_checks_again():
    options = RunOptions(tune=None, chains=None, random_seed=[1, 2, 3, 4], time_budget=30, var_names="mu")
    assert (options.tune, options.chains, options.var_names) == (1000, 4, ("mu",))
    assert isinstance(options.random_seed, int) and options.policy.time_budget == 30
    again = dataclasses.replace(options, draws=10)
    assert again.policy == options.policy and again.random_seed == options.random_seed
    assert dataclasses.replace(options, policy=resilient.Policy(max_attempts=2)).policy.time_budget == 30
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field .draws."):
        options.draws = 5
    with pytest.raises(resilient.ResilientError, match="`draws` must be"):
        dataclasses.replace(options, draws=0)


#: entry points whose default differs from RunOptions' on purpose, and why.
_OWN_DEFAULTS = {
    # None: not given, so pm.sample's other spelling (max_treedepth, nuts={...}, init) can be told apart
    ("sample", "target_accept"), ("sample", "max_tree_depth"), ("sample", "mass_matrix"),
    # SBC runs many short fits
    ("sbc", "draws"), ("sbc", "tune"), ("sbc", "chains"),
    # many fits: the base of each fit's seed, and the batch's own progress bar
    ("sample_many", "random_seed"), ("sbc", "random_seed"),
}


@pytest.mark.parametrize("name, function", [("sample", resilient.sample), ("compiled", CompiledSampler.sample),
                                            ("sample_many", resilient.sample_many), ("sbc", resilient.sbc)])
def test_entry_points_share_the_run_options_defaults(name, function):
    defaults = {f.name: f.default for f in dataclasses.fields(RunOptions)}
    parameters = inspect.signature(function).parameters
    drift = {p: (parameters[p].default, defaults[p]) for p in parameters
             if p in defaults and (name, p) not in _OWN_DEFAULTS and p != "progressbar"
             and parameters[p].default != defaults[p]}
    assert drift == {}
    assert all(parameters[p].kind is inspect.Parameter.KEYWORD_ONLY for p in parameters if p in defaults)


def test_compiled_sample_takes_every_run_option():
    parameters = set(inspect.signature(CompiledSampler.sample).parameters)
    assert set(RunOptions.names()) - parameters == {"compute_convergence_checks"}  # pm.sample's, on sample()


def test_sample_and_compiled_sample_build_the_same_options(monkeypatch):
    seen = []
    monkeypatch.setattr(CompiledSampler, "run", lambda self, options: seen.append(options))
    sampler = CompiledSampler(Model(shared_model), "numpyro")
    run = dict(draws=50, tune=20, chains=2, random_seed=3, time_budget=9, cores=1, var_names=["mu"],
               discard_tuned_samples=False, log_likelihood=True)
    sampler.sample(max_tree_depth=6, target_accept=0.9, **run)
    resilient.sample(sampler, max_treedepth=6, nuts={"target_accept": 0.9}, **run)
    resilient.sample(sampler, max_tree_depth=6, target_accept=0.9, **run)
    assert seen[0] == seen[1] == seen[2]
    assert seen[0].max_tree_depth == 6 and seen[0].target_accept == 0.9 and seen[0].policy.time_budget == 9


@pytest.mark.parametrize("call", [
    lambda: resilient.sample(CompiledSampler(Model(shared_model), "numpyro"), draws=0),
    lambda: CompiledSampler(Model(shared_model), "numpyro").sample(draws=0),
    lambda: resilient.sample_many(shared_model, [{}], draws=0),
    lambda: resilient.sbc(shared_model, 2, draws=0),
], ids=["sample", "compiled", "sample_many", "sbc"])
def test_every_entry_point_checks_alike(call):
    with pytest.raises(resilient.ResilientError, match=r"^`draws` must be an integer >= 1, got 0\.$"):
        call()
