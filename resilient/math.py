"""Backend-neutral math for model functions: ``resilient.math.exp(x)`` calls the backend's ``exp``.

Each adapter provides a namespace with every name in :data:`FUNCTIONS` (jax.numpy-style
signatures); outside a model these fall back to numpy so helpers can be tested on plain arrays.
"""

from __future__ import annotations

from typing import Any

from resilient.context import CURRENT

FUNCTIONS = (
    "exp", "log", "log1p", "expm1", "sqrt", "square", "abs", "sum", "mean", "prod", "dot",
    "matmul", "sigmoid", "logit", "softplus", "tanh", "sin", "cos", "erf", "lgamma", "maximum",
    "minimum", "where", "clip", "stack", "concatenate", "logsumexp", "log_softmax", "softmax",
    "cumsum", "zeros", "ones", "arange", "reshape", "transpose", "outer", "diag",
)

__all__ = list(FUNCTIONS) + ["FUNCTIONS", "namespace", "scan"]


def namespace() -> Any:
    """The active backend's math namespace, or numpy's outside a model."""
    trace = CURRENT.get()
    if trace is not None:
        return trace.handler.math
    from resilient.numpy_math import NUMPY_MATH

    return NUMPY_MATH


def _delegate(name: str):
    def function(*args: Any, **kwargs: Any) -> Any:
        return getattr(namespace(), name)(*args, **kwargs)

    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"The backend's `{name}` (jax.numpy / pytensor.tensor / numpy)."
    return function


for _name in FUNCTIONS:
    globals()[_name] = _delegate(_name)
del _name


def scan(fn, init, xs=None, length=None):
    """A recurrence: ``fn(carry, x) -> (carry, y)`` over the leading axis of ``xs``; returns ``(carry, ys)``.

    ``jax.lax.scan`` on NumPyro and ``pytensor.scan`` on PyMC, so a GARCH or ARMA likelihood over
    hundreds of steps compiles as one loop instead of an unrolled graph. ``init`` and ``y`` are arrays
    (not tuples); ``xs=None`` with ``length=`` runs without a sequence.
    """
    return namespace().scan(fn, init, xs, length)
