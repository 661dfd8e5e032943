"""One conformance test of the backend contract, parametrised over every registered adapter."""

import numpy as np
import pytest

from examples import reference_models
from resilient.backend import ADAPTERS, STAT_NAMES, CompiledModel, NUTSSettings, get_adapter
from resilient.math import FUNCTIONS
from resilient.model import Model

MARKS = {"numpyro": pytest.mark.numpyro, "pymc": pytest.mark.pymc, "nutpie": pytest.mark.pymc,
         "pymc_numpyro": [pytest.mark.pymc, pytest.mark.numpyro]}
BACKENDS = [pytest.param(name, marks=MARKS[name]) for name in ADAPTERS]


@pytest.fixture(scope="module")
def eight_schools():
    function, data, _ = reference_models.load("eight_schools-eight_schools_noncentered")
    return Model(function, (), data)


@pytest.fixture(scope="module")
def compiled_models(eight_schools):
    cache = {}

    def get(backend):
        if backend not in cache:
            cache[backend] = get_adapter(backend).compile(eight_schools)
        return cache[backend]

    return get


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_model_meets_the_contract(backend, compiled_models):
    compiled = compiled_models(backend)
    assert isinstance(compiled, CompiledModel)
    assert compiled.backend == backend
    assert compiled.dimension == 10 and set(compiled.latent_names) == {"mu", "tau", "theta_trans"}
    covered = sorted(i for block in compiled.blocks().values() for i in range(compiled.dimension)[block])
    assert covered == list(range(compiled.dimension))
    x = compiled.initial_point("default", 3)
    value, gradient = compiled.log_density_and_gradient(x)
    assert np.isfinite(value) and gradient.shape == (10,)
    assert np.isclose(sum(compiled.site_log_densities(x).values()), value, rtol=1e-8, atol=1e-8)
    step = 1e-6
    numeric = [(compiled.log_density(x + step * e) - compiled.log_density(x - step * e)) / (2 * step)
               for e in np.eye(compiled.dimension)]
    assert np.allclose(numeric, gradient, rtol=1e-4, atol=1e-5)
    values = compiled.constrain(x)
    assert set(values) >= {"mu", "tau", "theta_trans", "theta"} and values["tau"] > 0
    assert np.allclose(compiled.unconstrain({k: values[k] for k in compiled.latent_names}), x)
    gradients = compiled.site_gradients(x)
    assert set(gradients["y"]) >= {"mu", "tau", "theta_trans"}
    for strategy in ("default", "uniform", "prior", "median"):
        point = compiled.initial_point(strategy, 1)
        assert point.shape == (10,) and np.isfinite(compiled.log_density(point))
    assert np.allclose(compiled.observed_data()["y"], [28, 8, -3, 7, -1, 1, 18, 12])


@pytest.mark.parametrize("backend", BACKENDS)
def test_run_nuts_delivers_chunks_with_the_standard_statistics(backend, compiled_models):
    compiled = compiled_models(backend)
    chunks = []
    settings = NUTSSettings(draws=60, tune=60, chains=2, random_seed=5, chunk_size=25)
    outcome = compiled.run_nuts(settings, lambda chunk: chunks.append(chunk) or True)
    assert outcome.completed
    post = [c for c in chunks if not c.warmup]
    per_chain = {}
    for chunk in post:
        assert set(STAT_NAMES) <= set(chunk.sample_stats)  # the standard ones; a backend may add its own
        assert chunk.posterior["theta"].shape[1:] == (chunk.size, 8)
        assert chunk.sample_stats["diverging"].dtype == bool
        for chain in chunk.chains:
            per_chain[chain] = per_chain.get(chain, 0) + chunk.size
    assert per_chain == {0: 60, 1: 60}
    # chunk_size draws a chunk, or whole multiples of it (nutpie hands over what finished since its last
    # look); only a chain's last chunk of a phase may be shorter.
    for chain in (0, 1):
        for warmup in (True, False):
            sizes = [c.size for c in chunks if chain in c.chains and c.warmup == warmup]
            assert all(size % 25 == 0 for size in sizes[:-1]), sizes


@pytest.mark.parametrize("backend", BACKENDS)
def test_math_namespace_is_complete(backend):
    from resilient.model import Trace

    adapter = get_adapter(backend)
    seen = {}

    def probe():
        from resilient.model import current_trace

        seen["math"] = current_trace().handler.math
        from resilient import sample
        from resilient.distributions import Normal

        sample("x", Normal(0, 1))

    adapter.compile(Model(probe))
    missing = [name for name in FUNCTIONS if not hasattr(seen["math"], name)]
    assert missing == []
    assert Trace  # the namespace reached the model through the trace


@pytest.mark.parametrize("backend", ["numpyro", "pymc", "nutpie"])
def test_each_adapter_declares_its_capabilities_as_the_registry_does(backend):
    """Core asks resilient.backend.capabilities(name) (no backend import); the adapter class carries the same
    record, so what core believes and what the adapter does cannot drift apart."""
    import importlib

    from resilient.backend import ADAPTERS, capabilities
    from resilient.engine import MASS_MATRICES, MODELLING

    pytest.importorskip(ADAPTERS[backend][2])
    module, attribute, _ = ADAPTERS[backend]
    adapter = getattr(importlib.import_module(module), attribute)
    assert adapter.capabilities == capabilities(backend)
    assert MASS_MATRICES[backend] == capabilities(backend).mass_matrices
    assert MODELLING[backend] == capabilities(backend).language
