"""Resilient: trustworthy NUTS sampling with NumPyro and PyMC.

Dependency rule: modules here depend only on numpy and the standard library at import time;
backends (jax, numpyro, pymc, pytensor) and ArviZ are imported inside functions, so
``import resilient`` stays fast and works with either backend alone.
"""

from __future__ import annotations

from resilient import distributions, math
from resilient.distributions import *  # noqa: F401,F403  (the shared API's families)
from resilient.errors import (
    BackendUnavailableError, ModelError, ParameterError, PreflightError, ResilientError,
    SamplingFailed, UnsupportedModelError,
)
from resilient.model import Model, deterministic
from resilient.model import sample as _declare_site

__version__ = "0.1.0"

__all__ = [
    "sample", "preflight", "resume", "read_checkpoint", "diagnose", "write_report", "deterministic", "math", "distributions", "Model",
    "ModelError", "ParameterError", "PreflightError", "ResilientError", "SamplingFailed",
    "UnsupportedModelError", "BackendUnavailableError", "__version__",
] + list(distributions.__all__)


def sample(*args, **kwargs):
    """Declare a site inside a model, or sample a model: one name, two uses.

    * ``sample("mu", Normal(0, 5))`` / ``sample("y", Normal(mu, 1), obs=y)`` inside a model
      function declares a site (like ``numpyro.sample``) and returns its value.
    * ``sample(model, *data, backend="numpyro", draws=1000, ...)`` runs preflight and the
      resilient sampling loop and returns an ArviZ DataTree (like ``pm.sample``); it also
      takes a native PyMC model (or runs in its ``with`` block) and a NumPyro model function.
      See :func:`resilient.sampling.sample` for every argument.
    """
    if args and isinstance(args[0], str):
        return _declare_site(*args, **kwargs)
    from resilient.sampling import sample as run

    return run(*args, **kwargs)


def resume(path, model, *args, draws=1000, **kwargs):
    """Continue a NumPyro run from its checkpoint folder; see :func:`resilient.sampling.resume`."""
    from resilient.sampling import resume as run

    return run(path, model, *args, draws=draws, **kwargs)


def read_checkpoint(path, attempt=None):
    """Every finished chunk in a checkpoint folder, as a DataTree (after a crash, too)."""
    from resilient.checkpoint import read_checkpoint as read

    return read(path, attempt)


def diagnose(data, **thresholds):
    """ArviZ diagnostics with verdicts; see :func:`resilient.diagnostics.diagnose`."""
    from resilient.diagnostics import diagnose as run

    return run(data, **thresholds)


def write_report(data, out_dir, formats=("html", "md", "json"), **options):
    """Write report.html / report.md / report.json; see :func:`resilient.report.write_report`."""
    from resilient.report import write_report as run

    return run(data, out_dir, formats=formats, **options)


def preflight(model=None, *args, **kwargs):
    """Check a model's log density and gradient before sampling; see :func:`resilient.checks.preflight`."""
    from resilient.checks import preflight as run

    return run(model, *args, **kwargs)
