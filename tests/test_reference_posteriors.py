"""Both backends reproduce the six posteriordb reference posteriors through resilient.sample."""

import pytest

import resilient
from resilient import record
from examples import reference_models
from tests.reference_checks import mismatches

BACKENDS = [pytest.param("numpyro", marks=pytest.mark.numpyro), pytest.param("pymc", marks=pytest.mark.pymc)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", reference_models.NAMES)
def test_reference_posterior(name, backend):
    function, data, reference = reference_models.load(name)
    result = resilient.sample(function, backend=backend, draws=1000, tune=1000, chains=4, random_seed=20261126,
                              progressbar=False, **data)
    variables = sorted({key.split("[")[0] for key in reference})
    assert mismatches(result, reference, variables) == []
    attempts = record.read_attempts(result)
    assert [a["outcome"] for a in attempts] == ["accepted"], "healthy models need no retry"
    preflight = record.read_preflight(result)
    assert {f["severity"] for f in preflight["findings"]} <= {"info"}
