"""Errors users see. Model errors name the site, the value and the fix; they print without traceback."""

from __future__ import annotations

import os
import warnings
from typing import Any

from resilient.states import SAMPLER_ERROR_KINDS, SamplerErrorKind

__all__ = ["ResilientError", "ModelError", "ParameterError", "UnsupportedModelError", "BackendUnavailableError",
           "PreflightError", "SamplingFailed", "SamplerError", "ResilientWarning", "DiscreteLatentError", "warn"]


class ResilientError(Exception):
    """Base of every error Resilient raises on purpose."""


class ModelError(ResilientError, ValueError):
    """Something is wrong with the user's model or data (not a bug of ours)."""

    def __init__(self, message: str, *, site: str | None = None, argument: str | None = None,
                 value: Any = None, fix: str | None = None) -> None:
        super().__init__(message)
        self.site = site
        self.argument = argument
        self.value = value
        self.fix = fix


class ParameterError(ModelError):
    """A distribution parameter breaks its rule (a negative scale, a probability above 1...)."""


class UnsupportedModelError(ResilientError, TypeError):
    """The object passed as a model is not one Resilient knows how to run."""


class DiscreteLatentError(ModelError, UnsupportedModelError):
    """A latent variable is discrete: NUTS cannot sample it (a model error preflight names by site)."""


class BackendUnavailableError(ResilientError, ImportError):
    """A backend was asked for but its package is not installed, or the name is unknown."""


class PreflightError(ModelError):
    """Preflight found a blocking problem it could not fix; ``report`` holds the findings."""

    def __init__(self, message: str, report: Any) -> None:
        super().__init__(message)
        self.report = report


class SamplingFailed(ResilientError, RuntimeError):
    """The sampling loop gave up; it carries the attempt log, the preflight report and the draws so far."""

    def __init__(self, message: str, *, attempts: Any = (), preflight: Any = None, partial: Any = None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.preflight = preflight
        self.partial = partial


class SamplerError(ResilientError, RuntimeError):
    """The backend's sampler stopped with an error part-way through a run.

    Adapters raise it from the backend's own error after handing over every draw finished
    before it, so the loop keeps those draws. ``kind`` says whether a remedy can help:
    ``"numerical"`` (an energy or mass matrix that overflowed: retried like a non-finite log
    density), ``"resources"`` (out of memory: retrying the same run would fail again) or
    ``"crash"`` (anything else raised inside the sampler: a bug to read, not to retry).
    """

    KINDS = SAMPLER_ERROR_KINDS

    def __init__(self, message: str, *, backend: str, kind: SamplerErrorKind, chain: int | None = None) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"SamplerError kind must be one of {self.KINDS}, got {kind!r}")
        super().__init__(message)
        self.backend = backend
        self.kind = kind
        self.chain = chain


class ResilientWarning(UserWarning):
    """Something the user should know about a result that was still returned."""


#: frames in these folders are ours: a warning points past them, at the user's line.
_OUR_FILES = (os.path.dirname(os.path.abspath(__file__)),
              os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "adapters"))


def warn(message: str, category: type[Warning] = None) -> None:
    """Warn at the first caller outside Resilient (computed per call, whatever the call depth)."""
    warnings.warn(message, category or ResilientWarning, skip_file_prefixes=_OUR_FILES)
