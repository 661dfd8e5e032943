"""The model run in progress: one context variable, read by the model API, the math namespace and
distribution records (which are lenient with bad parameters inside a model, strict outside).

It lives apart from :mod:`resilient.model` so records and math need not import the model layer.
"""

from __future__ import annotations

import contextvars
from typing import Any

__all__ = ["CURRENT", "inside_model"]

#: the :class:`resilient.model.Trace` running a model function now, or None.
CURRENT: contextvars.ContextVar[Any] = contextvars.ContextVar("resilient_trace", default=None)


def inside_model() -> bool:
    """True while a model function runs under a trace."""
    return CURRENT.get() is not None
