"""Before jax makes its devices: one XLA CPU device per core, so chains can run in parallel."""

from __future__ import annotations

import os
import re
import sys


def _backend_started() -> bool:
    """True once jax has created its devices (the device count is fixed from then on)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge._backends)
    except (ImportError, AttributeError):  # a jax without this internal: assume started
        return True


if not _backend_started():  # one XLA device per core, so chains can run in parallel (pmap)
    import numpyro as _numpyro

    if not re.search(r"--xla_force_host_platform_device_count=", os.environ.get("XLA_FLAGS", "")):
        _numpyro.set_host_device_count(os.cpu_count() or 1)
