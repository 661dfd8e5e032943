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
# earlier test, or an earlier run on this machine (from any clone), are read from disk instead of compiled again.
# Beside Resilient's own cache (resilient.caches.cache_root(): $RESILIENT_CACHE_DIR, else $XDG_CACHE_HOME or
# ~/.cache, then resilient/), in a folder of its own; the repository's .cache/ where that cannot be made.
def _jax_cache_folder() -> Path:
    base = os.environ.get("RESILIENT_CACHE_DIR") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "resilient")
    folder = Path(base).expanduser() / "jax-tests"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = ROOT / ".cache" / "jax"
    return folder


os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_jax_cache_folder()))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

_COMPILED: dict = {}


def _compiled(function, backend: str, *args, **options):
    """``resilient.compile(function, *args, backend=backend, **options)``, once per session."""
    import resilient

    key = (function, backend, tuple(id(a) for a in args), tuple(sorted(options.items())))
    if key not in _COMPILED:
        _COMPILED[key] = resilient.compile(function, *args, backend=backend, **options)
    return _COMPILED[key]


@pytest.fixture(autouse=True)
def _fresh_engine_session():
    """Each test starts with no PyMC sampling time and no nutpie compilation on record and no compiled sampler
    kept from another test, so engine="auto" decides the same whatever ran before it in this process, which
    differs with how pytest-xdist shares the files out (the ski-rental rule in resilient.engine counts that
    time; an earlier nutpie compilation makes the next cheaper; a kept one makes nutpie free)."""
    from resilient import caches, engine

    engine.reset_session()
    engine.HISTORY.compiles.clear()
    caches.clear_kept()
    yield


@pytest.fixture(scope="session")
def compiled():
    """A factory: ``compiled(model_function, backend, **options)`` -> a shared CompiledSampler."""
    return _compiled


@pytest.fixture(scope="module")
def client():
    """A real dask LocalCluster: two worker processes, one thread each, on 127.0.0.1; closed (and the
    processes ended) after the module that used it."""
    from distributed import Client, LocalCluster

    from resilient.many import worker_environment

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           host="127.0.0.1", env=worker_environment(1, 2))
    client = Client(cluster)
    try:
        client.wait_for_workers(2, timeout=60)
        yield client
    finally:
        client.close(timeout=10)
        cluster.close(timeout=30)
