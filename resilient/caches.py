"""Compilation caches that outlive the process (issue #24): a second Python process sampling the same model
skips the compilations the first one paid for, where the backend can keep them.

* JAX (NumPyro's NUTS): XLA's persistent compilation cache, switched on in
  ``<cache root>/jax`` the first time Resilient compiles a NumPyro model, unless the user has set JAX's own
  ``jax_compilation_cache_dir`` (theirs is kept) or turned it off.
* PyTensor (PyMC's NUTS): its C modules are cached in PyTensor's ``compiledir`` (``~/.pytensor``) by PyTensor
  itself, on by default; Resilient leaves it as it is.
* Numba (nutpie's default backend): nutpie compiles the model's graph into functions made at run time, which
  Numba's on-disk cache (``cache=True``) cannot keep; there is no cache to switch on.

The cache root is ``$RESILIENT_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/resilient`` (``~/.cache/resilient``).
``RESILIENT_CACHE=off`` (or ``0``, ``false``, ``no``) keeps Resilient from switching any cache on.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root", "caches_enabled", "enable_jax_cache"]

_OFF = {"off", "0", "false", "no"}
#: compilations shorter than this are not written (JAX's default is 1 s; NumPyro's NUTS kernel for a small
#: model compiles in well under a second on a quiet machine and is still worth keeping).
MIN_COMPILE_SECONDS = 0.2

_jax_done = False


def caches_enabled() -> bool:
    """False when ``RESILIENT_CACHE`` says off."""
    return os.environ.get("RESILIENT_CACHE", "on").strip().lower() not in _OFF


def cache_root() -> Path:
    """Where Resilient keeps its caches (see the module's docstring)."""
    explicit = os.environ.get("RESILIENT_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "resilient"


def enable_jax_cache() -> str | None:
    """Switch JAX's persistent compilation cache on in ``<cache root>/jax`` (once per process), unless it is off
    (``RESILIENT_CACHE``) or the user set their own directory. Returns the directory in use, or None."""
    global _jax_done
    import jax

    if _jax_done or not caches_enabled():
        return jax.config.jax_compilation_cache_dir
    _jax_done = True
    if jax.config.jax_compilation_cache_dir:  # the user's own choice wins
        return jax.config.jax_compilation_cache_dir
    directory = cache_root() / "jax"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: run without the cache rather than fail
        return None
    jax.config.update("jax_compilation_cache_dir", str(directory))
    if jax.config.jax_persistent_cache_min_compile_time_secs == 1.0:  # JAX's default; a user's own value is kept
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return str(directory)
