"""Persistent compilation caches (issue #24 item 2, resilient/caches.py): where they live, the opt-out, and that a
NumPyro run really writes JAX's cache (what it saves is measured by benchmarks/caches.py, not asserted here)."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from resilient import caches
from resilient.distributions import Normal
from resilient.model import sample

ROOT = Path(__file__).resolve().parents[1]


def test_the_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("RESILIENT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert caches.cache_root() == tmp_path / "xdg" / "resilient"
    monkeypatch.setenv("RESILIENT_CACHE_DIR", str(tmp_path / "mine"))
    assert caches.cache_root() == tmp_path / "mine"
    for off in ("off", "0", "False", "no"):
        monkeypatch.setenv("RESILIENT_CACHE", off)
        assert not caches.caches_enabled()
    monkeypatch.setenv("RESILIENT_CACHE", "on")
    assert caches.caches_enabled()


def _child(code: str, env: dict[str, str]) -> str:
    import os

    # the suite's own JAX cache (tests/conftest.py sets JAX_COMPILATION_CACHE_DIR) is a user's setting: not here
    base = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=600,
                          cwd=ROOT, env={**base, **env})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_a_users_own_jax_cache_directory_is_kept_and_off_means_off(tmp_path):
    code = """
        import jax
        from resilient.caches import enable_jax_cache
        {setup}
        print(enable_jax_cache(), jax.config.jax_compilation_cache_dir)
    """
    theirs = tmp_path / "theirs"
    out = _child(code.format(setup=f"jax.config.update('jax_compilation_cache_dir', {str(theirs)!r})"),
                 {"RESILIENT_CACHE_DIR": str(tmp_path / "ours")})
    assert out == f"{theirs} {theirs}"
    assert _child(code.format(setup=""), {"RESILIENT_CACHE": "off"}) == "None None"
    assert _child(code.format(setup=""), {"RESILIENT_CACHE_DIR": str(tmp_path / "ours")}) == \
        f"{tmp_path / 'ours' / 'jax'} {tmp_path / 'ours' / 'jax'}"


SAMPLE = """
    import warnings, numpy as np, numpyro, numpyro.distributions as dist, resilient
    def model(y=None):
        mu = numpyro.sample("mu", dist.Normal(0, 5))
        numpyro.sample("y", dist.Normal(mu, 1), obs=y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resilient.sample(model, y=np.arange(5.0), draws=100, tune=100, chains=2, random_seed=1, progressbar=False)
    print("sampled")
"""


@pytest.mark.slow
@pytest.mark.numpyro
def test_a_numpyro_run_writes_the_jax_cache_and_the_opt_out_writes_nothing(tmp_path):
    on, off = tmp_path / "on", tmp_path / "off"
    # every compilation is written, however fast this machine compiles (Resilient's floor is 0.2 s)
    assert _child("import jax; jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)\n" + SAMPLE.strip()
                  .replace("\n    ", "\n"), {"RESILIENT_CACHE_DIR": str(on)}) == "sampled"
    assert any(p.is_file() for p in (on / "jax").rglob("*")), "JAX wrote compiled programs to the cache"
    assert _child(SAMPLE, {"RESILIENT_CACHE_DIR": str(off), "RESILIENT_CACHE": "off"}) == "sampled"
    assert not off.exists() or not any(p.is_file() for p in off.rglob("*"))


class _Sampler:  # what kept_sampler keeps: its ``model`` is checked again on each hit
    def __init__(self, resolved):
        self.model = resolved


def test_a_sampler_is_kept_for_the_same_model_object_and_equal_data_only(monkeypatch):
    import numpy as np
    import numpyro
    import numpyro.distributions as dist

    from resilient.resolve import resolve_model

    def model(y=None):
        numpyro.sample("y", dist.Normal(numpyro.sample("mu", dist.Normal(0, 1)), 1), obs=y)

    def kept(resolved):
        return caches.kept_sampler(resolved, lambda: _Sampler(resolved), "numpyro", "auto")

    y = np.arange(5.0)
    first = kept(resolve_model(model, (), {"y": y}))
    assert kept(resolve_model(model, (), {"y": y.copy()})) is first, "equal values: the same compilation"
    assert kept(resolve_model(model, (), {"y": y + 1})) is not first, "other data: compiled afresh"
    assert caches.kept_sampler(resolve_model(model, (), {"y": y}), lambda: None, "numpyro", "nutpie") is None, \
        "another engine is another key"
    y[0] = 100.0  # changed in place after the first call: the kept sampler's data no longer hash as they did
    assert kept(resolve_model(model, (), {"y": np.arange(5.0)})) is not first

    def other(y=None):
        numpyro.sample("y", dist.Normal(numpyro.sample("mu", dist.Normal(0, 1)), 1), obs=y)

    assert kept(resolve_model(other, (), {"y": np.arange(5.0)})).model.model is other
    monkeypatch.setenv("RESILIENT_CACHE", "off")
    again = resolve_model(other, (), {"y": np.arange(5.0)})
    assert kept(again).model is again, "RESILIENT_CACHE=off keeps nothing"
    monkeypatch.delenv("RESILIENT_CACHE")
    for shift in range(caches.KEPT_SAMPLERS + 1):
        kept(resolve_model(model, (), {"y": np.arange(5.0) + 10 + shift}))
    assert len(caches._kept) == caches.KEPT_SAMPLERS
    caches.clear_kept()
    assert not caches._kept


def _kept_pm_model(model):
    """The sampler kept_sampler gives a pm.Model (a new one, kept, where none fits)."""
    from resilient.resolve import resolve_model

    resolved = resolve_model(model, (), {})
    return caches.kept_sampler(resolved, lambda: _Sampler(resolved), "pymc", "auto")


def test_a_pm_model_is_kept_until_its_data_or_variables_change():
    import numpy as np
    import pymc as pm

    with pm.Model() as model:
        data = pm.Data("d", np.arange(3.0))
        pm.Normal("x", data.sum(), 1)
    first = _kept_pm_model(model)
    assert _kept_pm_model(model) is first
    with model:
        pm.set_data({"d": np.ones(3)})
    assert _kept_pm_model(model) is not first, \
        "pm.set_data: nutpie's compiled model holds the data it was compiled with"
    second = _kept_pm_model(model)
    with model:
        pm.Normal("z", 0, 1)
    assert _kept_pm_model(model) is not second, "a variable added to the model"


def test_a_pm_model_built_again_alike_reuses_the_sampler_and_any_difference_compiles_afresh():
    """A notebook cell re-run builds a new pm.Model: built alike (graph, names, dims, data, coordinates), it gets
    the kept sampler; a prior parameter, a bound, a transform, dims, data or an initial value changed gets its own.
    A bounded variable's interval transform is a new object in each build (no ``__eq__``): alike, not equal."""
    import numpy as np
    import pymc as pm

    def build(scale=5.0, data=np.arange(3.0), dims="school", transform=None, initval=None, name="mu", upper=3.0):
        with pm.Model(coords={"school": ["a", "b", "c"]}) as model:
            d = pm.Data("d", data, dims="school")
            mu = pm.Normal(name, 0, scale, initval=initval)
            pm.Truncated("t", pm.Normal.dist(mu, 1), lower=0, upper=upper)
            pm.Uniform("u", 0, upper)
            tau = pm.HalfNormal("tau", 1, default_transform=transform)
            theta = pm.Normal("theta", mu, tau, dims=dims, shape=3)
            pm.Normal("y", theta * d, 1, observed=np.ones(3), dims="school")
        return model

    caches.clear_kept()
    try:
        first = _kept_pm_model(build())
        assert _kept_pm_model(build()) is first, "built alike: the first model's sampler"
        from pymc.distributions.transforms import log_exp_m1

        for changed in (dict(scale=6.0), dict(upper=4.0), dict(data=np.arange(3.0) + 1), dict(dims=None),
                        dict(transform=log_exp_m1), dict(initval=0.5), dict(name="nu")):
            assert _kept_pm_model(build(**changed)) is not first, changed
        model = build()
        assert _kept_pm_model(model) is first
        with model:
            pm.set_data({"d": np.ones(3)})
        assert _kept_pm_model(model) is not first, "pm.set_data on the new model"
        with first.model.model:
            pm.set_data({"d": np.zeros(3)})
        assert _kept_pm_model(build()) is not first, "the kept model's data changed since: not alike any more"
    finally:
        caches.clear_kept()


@pytest.mark.parametrize("engine", [pytest.param("numpyro", marks=pytest.mark.numpyro),
                                    pytest.param("pymc", marks=pytest.mark.pymc)])
def test_sampling_the_same_model_again_compiles_nothing_and_gives_the_same_draws(engine):
    import numpy as np

    import resilient

    def compiled():  # every compiled model the kept samplers hold
        return {id(c) for _, sampler in caches._kept.values() for c in sampler.cache.values()}
    y = np.random.default_rng(0).normal(1.0, 2.0, size=30)
    if engine == "numpyro":
        import numpyro
        import numpyro.distributions as dist

        def model(y=None):
            mu = numpyro.sample("mu", dist.Normal(0, 5))
            numpyro.sample("y", dist.Normal(mu, numpyro.sample("sigma", dist.HalfNormal(5))), obs=y)

        call = dict(model=model, y=y)
    else:
        import pymc as pm

        def build():
            with pm.Model() as built:
                mu = pm.Normal("mu", 0, 5)
                pm.Normal("y", mu, pm.HalfNormal("sigma", 5), observed=y)
            return built

        model = build()
        call = dict(model=model)
    options = dict(engine=engine, draws=200, tune=200, chains=2, random_seed=7, progressbar=False)
    first = resilient.sample(**call, **options)
    before = compiled()
    assert len(caches._kept) == 1 and before
    second = resilient.sample(**call, **options)
    after = compiled()
    assert len(caches._kept) == 1 and after == before, \
        "the second call reuses the first one's compiled models and compiles no other"
    assert np.array_equal(first.posterior["mu"].values, second.posterior["mu"].values), "no warm start: same draws"
    if engine == "numpyro":
        resilient.sample(model, y=y + 1, **options)
        assert len(caches._kept) == 2, "other data: another sampler, compiled afresh"
    else:  # the cell re-run: a new pm.Model built alike
        third = resilient.sample(build(), **options)
        assert len(caches._kept) == 1 and compiled() == before, "a model built alike compiles nothing"
        assert np.array_equal(first.posterior["mu"].values, third.posterior["mu"].values)


LOC = 0.0  # read by _reads_a_global at trace time


def _reads_a_global():
    import numpyro
    import numpyro.distributions as dist

    numpyro.sample("x", dist.Normal(LOC, 1.0))


@pytest.mark.numpyro
def test_a_model_function_whose_global_changed_is_compiled_afresh(monkeypatch):
    """Was: the kept sampler of the same function object was reused after a module-level value the model reads
    changed, so the second call sampled the old model (the same draws) where raw NumPyro traces afresh."""
    import resilient

    caches.clear_kept()
    options = dict(draws=100, tune=100, chains=2, random_seed=3, progressbar=False)
    first = resilient.sample(_reads_a_global, **options)
    resilient.sample(_reads_a_global, **options)
    assert len(caches._kept) == 1, "nothing changed: the kept sampler"
    monkeypatch.setattr(sys.modules[__name__], "LOC", 10.0)
    moved = resilient.sample(_reads_a_global, **options)
    assert len(caches._kept) == 2
    assert abs(float(first.posterior["x"].mean())) < 1 and abs(float(moved.posterior["x"].mean()) - 10.0) < 1


def test_the_key_of_a_model_function_follows_its_globals_closure_helpers_and_defaults(monkeypatch):
    import numpy as np

    from resilient.resolve import resolve_model

    def key(function):
        found = caches._key(resolve_model(function, (), {}), ("numpyro", "auto"))
        return None if found is None else found[0]

    scale = np.ones(3)

    def closure():
        sample("x", Normal(0.0, float(scale[0])))

    def defaults(loc=np.zeros(2)):
        sample("x", Normal(float(loc[0]), 1.0))

    def helper_user():
        sample("x", Normal(_helper(), 1.0))

    for function, change in ((closure, lambda: scale.__setitem__(0, 2.0)),
                             (defaults, lambda: defaults.__defaults__[0].__setitem__(0, 1.0)),
                             (helper_user, lambda: monkeypatch.setattr(sys.modules[__name__], "_HELPED", 5.0))):
        before = key(function)
        assert before is not None and key(function) == before, function.__name__
        change()
        assert key(function) != before, f"{function.__name__}: what it reads changed"

    unknown = object()

    def reads_an_object():
        sample("x", Normal(0.0, 1.0 if unknown else 2.0))

    assert key(reads_an_object) is None, "an object of unknown contents: not kept, compiled afresh"


_HELPED = 1.0


def _helper():
    return _HELPED


def _cell(loc: float):
    """A notebook cell that defines ``model`` (run again: a new function object, its own globals)."""
    namespace = {"__name__": "__main__", "sample": sample, "Normal": Normal}
    exec(textwrap.dedent(f"""
        def model():
            sample("x", Normal({loc}, 1.0))
    """), namespace)
    return namespace["model"]


def test_a_model_function_defined_again_alike_reuses_the_sampler_and_an_edited_one_does_not():
    from resilient.resolve import resolve_model

    def kept(function):
        resolved = resolve_model(function, (), {})
        return caches.kept_sampler(resolved, lambda: _Sampler(resolved), "numpyro", "auto")

    caches.clear_kept()
    try:
        first = kept(_cell(0.0))
        assert kept(_cell(0.0)) is first, "the cell run again: the same code reading the same values"
        assert kept(_cell(1.0)) is not first, "the cell edited: compiled afresh"
    finally:
        caches.clear_kept()


def test_a_pm_model_whose_shared_variable_changed_is_compiled_afresh():
    """Was: a ``pytensor.shared`` the model reads (not a pm.Data) changed with ``set_value`` kept the sampler, and
    nutpie's and the JAX translation's compiled models sampled the old value (PyMC's NUTS reads it afresh)."""
    import numpy as np
    import pymc as pm
    import pytensor

    loc = pytensor.shared(np.array(0.0), name="loc")
    with pm.Model() as model:
        pm.Normal("x", loc, 1.0)
    caches.clear_kept()
    try:
        first = _kept_pm_model(model)
        assert _kept_pm_model(model) is first
        loc.set_value(np.array(10.0))
        assert _kept_pm_model(model) is not first
    finally:
        caches.clear_kept()


@pytest.mark.numpyro
def test_a_compiled_sampler_compiles_afresh_when_a_global_its_function_reads_changed(monkeypatch):
    import resilient

    def warm(result):
        return (resilient.record.read_attempts(result)[0]["settings"].get("warm_start") or {}).get("used", False)

    sampler = resilient.compile(_reads_a_global)
    options = dict(draws=100, tune=300, chains=2, random_seed=3, progressbar=False)
    first = sampler.sample(**options)
    compiled = sampler.compiled
    assert warm(sampler.sample(**options)) and sampler.compiled is compiled, "nothing changed: warm, nothing compiled"
    monkeypatch.setattr(sys.modules[__name__], "LOC", 10.0)
    moved = sampler.sample(**options)
    assert sampler.compiled is not compiled
    assert abs(float(first.posterior["x"].mean())) < 1 and abs(float(moved.posterior["x"].mean()) - 10.0) < 1
    assert not warm(moved), "the old model's adaptation is not carried over"


@pytest.mark.pymc
def test_a_compiled_pm_model_samples_the_new_data_after_pm_set_data():
    """Was: resilient.compile(model).sample() after pm.set_data sampled the old data on every engine (posterior
    mean 0.0 where the new data put it at 10.0)."""
    import numpy as np
    import pymc as pm

    import resilient

    with pm.Model() as model:
        data = pm.Data("d", np.zeros(5))
        pm.Normal("y", pm.Normal("mu", 0.0, 10.0), 1.0, observed=data)
    sampler = resilient.compile(model, engine="pymc")
    options = dict(draws=200, tune=200, chains=2, random_seed=1, progressbar=False)
    first = sampler.sample(**options)
    with model:
        pm.set_data({"d": np.full(5, 10.0)})
    second = sampler.sample(**options)
    # the posterior mean is 10 x 5 / (5 + 1/100) = 9.98 (sd 0.45); the draws' mean is within a few MCSE of it
    assert abs(float(first.posterior["mu"].mean())) < 1 and abs(float(second.posterior["mu"].mean()) - 9.98) < 1
    again = resilient.compile(model, engine="pymc")
    again.compiled  # noqa: B018  (compiled before the data change, sampled after it)
    with model:
        pm.set_data({"d": np.zeros(5)})
    assert abs(float(again.sample(**options).posterior["mu"].mean())) < 1
