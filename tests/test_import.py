"""`import resilient` stays light: no backend, no ArviZ at import time."""

import subprocess
import sys


def test_import_resilient_imports_no_backend():
    code = ("import sys, resilient, resilient.checks, resilient.loop, resilient.sampling; "
            "heavy = [m for m in ('jax', 'numpyro', 'pymc', 'pytensor', 'arviz', 'arviz_base') if m in sys.modules]; "
            "print(','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_unknown_backend_lists_the_supported_ones():
    import pytest

    from resilient.backend import get_adapter
    from resilient.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match=r"`backend` must be one of 'numpyro', 'pymc', got 'stan'"):
        get_adapter("stan")
