"""Compile once (issue #24 item 1): in one ``resilient.sample`` call, preflight, ``engine="auto"``'s gradient timing
and the engine run the same compiled log density; nothing is compiled twice. Counted, never timed
(``benchmarks/compiles.py`` prints what each engine compiles, where, and the seconds)."""

from __future__ import annotations

import logging
import warnings
from collections import Counter

import numpy as np
import pytest


def _pymc_model():
    import pymc as pm

    rng = np.random.default_rng(3)
    x = rng.normal(size=40)
    y = 1.0 + 2.0 * x + rng.normal(scale=0.5, size=40)
    with pm.Model() as model:
        beta = pm.Normal("beta", 0, 5, shape=2)
        sigma = pm.HalfNormal("sigma", 2)
        pm.Normal("y", beta[0] + beta[1] * x, sigma, observed=y)
    return model


@pytest.fixture
def value_grad_compilations(monkeypatch):
    """How many times PyMC's ``logp_dlogp_function`` is compiled (a ``ValueGradFunction`` built: graph, gradient,
    PyTensor compilation); a copy (``ValueGradFunction.copy``) is linked again, not compiled, and not counted."""
    from pymc.model import core

    counts = Counter()
    original = core.ValueGradFunction.__init__

    def counting(self, *args, **kwargs):
        counts["compiled"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(core.ValueGradFunction, "__init__", counting)
    return counts


def _sample(model, **options):
    import resilient

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return resilient.sample(model=model, draws=100, tune=100, chains=2, cores=1, random_seed=5,
                                progressbar=False, max_attempts=1, **options)


@pytest.mark.pymc
@pytest.mark.parametrize("engine", ["pymc", "auto"])
def test_pymcs_nuts_runs_the_log_density_preflight_compiled(value_grad_compilations, engine):
    """Preflight (and auto's gradient timing) compile the log density and gradient; pm.sample's NUTS step runs a
    copy of it rather than compiling its own; a second call of the same model compiles nothing more."""
    from resilient import record

    model = _pymc_model()
    first = _sample(model, engine=engine)
    used = (record.read_run(first) or {}).get("backend")
    if used != "pymc":
        pytest.skip(f"auto chose {used} here; the nutpie test covers it")
    assert value_grad_compilations["compiled"] == 1
    _sample(model, engine=engine)  # the kept sampler (resilient/caches.py): nothing compiled again
    assert value_grad_compilations["compiled"] == 1


@pytest.mark.pymc
def test_reusing_the_compiled_function_leaves_other_calls_and_the_model_alone(value_grad_compilations):
    """Within the block only init_nuts's exact call is served; other calls compile as PyMC does, and the model's
    attribute is gone after the block."""
    from resilient.backend import get_adapter
    from resilient.model import NativeModel

    compiled = get_adapter("pymc").compile(NativeModel("pymc", _pymc_model()))
    x = compiled.initial_point("median")
    value, gradient = compiled.log_density_and_gradient(x)
    assert value_grad_compilations["compiled"] == 1
    with compiled.reusing_value_grad(compiled.model):
        reused = compiled.model.logp_dlogp_function(ravel_inputs=True)
        assert value_grad_compilations["compiled"] == 1
        again, grad_again = reused(x)
        assert again == pytest.approx(value) and np.allclose(grad_again, gradient)
        compiled.model.logp_dlogp_function(ravel_inputs=True, tempered=True)  # not init_nuts's: PyMC compiles it
        assert value_grad_compilations["compiled"] == 2
    assert "logp_dlogp_function" not in compiled.model.__dict__
    with compiled.reusing_value_grad(compiled.model, {"mode": "FAST_COMPILE"}):  # other options: PyMC's own
        assert "logp_dlogp_function" not in compiled.model.__dict__


@pytest.mark.pymc
@pytest.mark.slow
def test_nutpie_compiles_once_and_preflight_compiles_no_pymc_gradient(monkeypatch, value_grad_compilations):
    """engine="nutpie": nutpie compiles the model once (preflight evaluates nutpie's own log density, the engine
    samples it); PyMC's logp_dlogp_function is never compiled."""
    import nutpie

    calls = Counter()
    original = nutpie.compile_pymc_model

    def counting(*args, **kwargs):
        calls["nutpie"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(nutpie, "compile_pymc_model", counting)
    _sample(_pymc_model(), engine="nutpie")
    assert calls["nutpie"] == 1
    assert value_grad_compilations["compiled"] == 0


@pytest.mark.numpyro
def test_numpyro_compiles_each_of_its_programs_once():
    """A NumPyro function: each XLA program of Resilient's own (the log density and gradient preflight evaluates,
    the initial points, the NUTS kernel's start and chunk) is compiled, or read from the persistent cache, once per
    signature in a call (JAX logs each compilation with the function's name and argument types)."""
    import jax
    import numpyro
    import numpyro.distributions as dist

    import resilient

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0, 5))
        sigma = numpyro.sample("sigma", dist.HalfNormal(2))
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)

    y = np.random.default_rng(1).normal(1.0, 2.0, size=30)
    messages = []

    class Collect(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if message.startswith("Compiling "):
                messages.append(message.split(" Argument mapping")[0])

    handler = Collect(level=logging.DEBUG)
    loggers = [logging.getLogger(n) for n in ("jax._src.interpreters.pxla", "jax._src.dispatch", "jax._src.pjit")]
    before = jax.config.jax_log_compiles
    jax.config.update("jax_log_compiles", True)
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # one attempt: a remedy (another tree depth, mass matrix) is another program, legitimately compiled
            resilient.sample(model, y=y, draws=150, tune=150, chains=2, random_seed=5, progressbar=False,
                             max_attempts=1)
    finally:
        jax.config.update("jax_log_compiles", before)
        for logger in loggers:
            logger.removeHandler(handler)
    ours = ("_log_density", "_initial", "init_one", "chunk_one")
    counted = Counter(m for m in messages if m.split()[1].replace("jit(", "").rstrip(")") in ours)
    assert counted, messages  # the programs were seen at all
    assert max(counted.values()) == 1, {m: n for m, n in counted.items() if n > 1}


@pytest.mark.pymc
@pytest.mark.numpyro
def test_numpyros_nuts_on_a_pm_model_checks_its_starts_without_pymcs_gradient(value_grad_compilations):
    """engine="numpyro" on a pm.Model: preflight's jittered starts are checked with the JAX log density NUTS runs;
    PyMC's own logp_dlogp_function (Numba: 11 s of arK's 17.8 s cold call) is never compiled."""
    import resilient
    from resilient.checks import run_preflight

    sampler = resilient.compile(_pymc_model(), engine="numpyro")
    assert sampler.choose_engine().engine == "pymc_numpyro"
    engine_model = sampler.cache[("pymc_numpyro", sampler.model)]  # what the loop's preflight checks
    report = run_preflight(sampler.model, "pymc", compiled=engine_model)[0]
    assert report.ok and value_grad_compilations["compiled"] == 0


@pytest.mark.pymc
@pytest.mark.numpyro
def test_auto_takes_numpyros_nuts_for_a_default_size_run_without_compiling_pymcs_gradient(value_grad_compilations):
    """#24.1 on auto's cold start: deciding (its check at PyMC's initial point included) and preflight run the JAX
    function NUTS runs, translated once; PyMC's logp_dlogp_function is never compiled and the gradient not timed."""
    import resilient
    from resilient.checks import run_preflight

    sampler = resilient.compile(_pymc_model())
    choice = sampler.choose_engine()  # draws=1000, tune=1000, chains=4: a default-size run
    assert choice.engine == "pymc_numpyro" and "the fastest cold start" in choice.reason
    engine_model = sampler.cache[("pymc_numpyro", sampler.model)]
    translated = engine_model.translate_seconds
    report = run_preflight(sampler.model, "pymc", compiled=engine_model)[0]
    assert report.ok and value_grad_compilations["compiled"] == 0
    assert sampler.choose_engine().engine == "pymc_numpyro" and engine_model.translate_seconds == translated
