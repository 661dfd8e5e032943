"""`import resilient` stays light: no backend, no ArviZ at import time."""

import subprocess
import sys


def test_import_resilient_imports_no_backend():
    code = ("import sys, resilient, resilient.checks, resilient.loop, resilient.sampling; "
            "heavy = [m for m in ('jax', 'numpyro', 'pymc', 'pytensor', 'nutpie', 'numba', 'dask', 'distributed', 'arviz', 'arviz_base') if m in sys.modules]; "
            "print(','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_unknown_backend_lists_the_supported_ones():
    import pytest

    from resilient.backend import get_adapter
    from resilient.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError,
                       match=r"`backend` must be one of 'numpyro', 'pymc', 'nutpie', 'pymc_numpyro', got 'stan'"):
        get_adapter("stan")


def test_adapters_install_as_resilient_adapters_not_top_level(tmp_path):
    """PyPI has a package named `adapters`: ours must not take that name in site-packages."""
    code = ("import importlib.util, resilient.adapters; "
            "print(importlib.util.find_spec('adapters') is None, resilient.adapters.__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path,
                            env={"PATH": "", "HOME": str(tmp_path)})
    assert result.stdout.split() == ["True", "resilient.adapters"]
