"""Shared set-up for the suite: JAX's persistent compilation cache and session-wide compiled models.

Most of the suite's time is compiling models (XLA for NumPyro, PyTensor/Numba for PyMC). The same
model compiled twice costs twice; tests that only look at a model (preflight, a short run) take it
from :func:`compiled` instead, which compiles each (model, backend, options) once per session.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Before anything imports jax (CLI subprocesses inherit it too): XLA programs already compiled by an
# earlier test, or an earlier run on this machine, are read from disk instead of compiled again.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

_COMPILED: dict = {}


def _compiled(function, backend: str, *args, **options):
    """``resilient.compile(function, *args, backend=backend, **options)``, once per session."""
    import resilient

    key = (function, backend, tuple(id(a) for a in args), tuple(sorted(options.items())))
    if key not in _COMPILED:
        _COMPILED[key] = resilient.compile(function, *args, backend=backend, **options)
    return _COMPILED[key]


@pytest.fixture(scope="session")
def compiled():
    """A factory: ``compiled(model_function, backend, **options)`` -> a shared CompiledSampler."""
    return _compiled
