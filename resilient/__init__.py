"""Resilient: trustworthy NUTS sampling with NumPyro and PyMC.

Dependency rule: modules here depend only on numpy and the standard library at import time;
backends (jax, numpyro, pymc, pytensor) and ArviZ are imported inside functions, so
``import resilient`` stays fast and works with either backend alone.
"""

from __future__ import annotations

from resilient import distributions, math, model
from resilient.distributions import *  # noqa: F401,F403  (the shared API's families)
from resilient.errors import (
    BackendUnavailableError, ModelError, ParameterError, PreflightError, ResilientError, ResilientWarning,
    SamplerError, SamplingFailed, UnsupportedModelError,
)
from resilient.model import Model, deterministic, factor
from resilient.policy import Policy
from resilient.sampling import CompiledSampler, compile, sample
from resilient.batch import sample_many
from resilient import sbc  # the package, callable as the function: resilient.sbc(model, ...)

__version__ = "0.1.0"

__all__ = [
    "sample", "compile", "sample_many", "sbc", "preflight", "check_agreement", "resume", "read_checkpoint", "diagnose", "write_report", "display_report", "deterministic", "factor",
    "math", "model", "distributions", "Model", "Policy", "CompiledSampler",
    "ModelError", "ParameterError", "PreflightError", "ResilientError", "SamplingFailed", "SamplerError",
    "ResilientWarning", "UnsupportedModelError", "BackendUnavailableError", "__version__",
] + list(distributions.__all__)


def resume(path, model, *args, draws=None, **kwargs):
    """Continue a checkpointed run (NumPyro, PyMC's NUTS, nutpie) to ``draws`` per chain (None: the run's own);
    see :func:`resilient.sampling.resume`."""
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


def display_report(data, **options):
    """Show the HTML report inline in a Jupyter notebook; see :func:`resilient.notebook.display_report`."""
    from resilient.notebook import display_report as show

    return show(data, **options)


def check_agreement(model, *args, **kwargs):
    """Sample a shared-API model on both backends and compare; see :func:`resilient.agreement.check_agreement`."""
    from resilient.agreement import check_agreement as run

    return run(model, *args, **kwargs)


def preflight(model=None, *args, **kwargs):
    """Check a model's log density and gradient before sampling; see :func:`resilient.checks.preflight`."""
    from resilient.checks import preflight as run

    return run(model, *args, **kwargs)
