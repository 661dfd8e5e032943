"""The shared API's math namespace on pytensor.tensor, with jax.numpy-like signatures."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any
import numpy as np
import pytensor.tensor as pt
from pytensor.tensor import special as _special


def _logit(p: Any) -> Any:
    return pt.log(p) - pt.log1p(-p)


def _where(condition: Any, x: Any = None, y: Any = None) -> Any:
    if x is None or y is None:
        raise TypeError("where(condition, x, y) needs all three arguments inside a model.")
    return pt.where(condition, x, y)


def _clip(x: Any, min: Any = None, max: Any = None, *, a_min: Any = None, a_max: Any = None) -> Any:
    low = min if min is not None else a_min
    high = max if max is not None else a_max
    if low is not None and high is not None:
        return pt.clip(x, low, high)
    if low is not None:
        return pt.maximum(x, low)
    if high is not None:
        return pt.minimum(x, high)
    return pt.as_tensor_variable(x)


def _reshape(x: Any, shape: Any = None, *, newshape: Any = None) -> Any:
    return pt.reshape(x, shape if shape is not None else newshape)


def _sum(x: Any, axis: Any = None, keepdims: bool = False, **_: Any) -> Any:
    return pt.sum(x, axis=axis, keepdims=keepdims)


def _mean(x: Any, axis: Any = None, keepdims: bool = False, **_: Any) -> Any:
    return pt.mean(x, axis=axis, keepdims=keepdims)


def _prod(x: Any, axis: Any = None, keepdims: bool = False, **_: Any) -> Any:
    return pt.prod(x, axis=axis, keepdims=keepdims)


def _logsumexp(x: Any, axis: Any = None, keepdims: bool = False, **_: Any) -> Any:
    return pt.logsumexp(x, axis=axis, keepdims=keepdims)


def _stack(arrays: Any, axis: int = 0) -> Any:
    return pt.stack(list(arrays), axis=axis)


def _concatenate(arrays: Any, axis: int = 0) -> Any:
    return pt.concatenate(list(arrays), axis=axis)


def _random_inputs(outputs: list[Any]) -> list[Any]:
    """The random variables (outputs of a node that takes an RNG: PyMC's RVs, ``pm.Mixture``,
    ``pm.Truncated`` ...) a graph reads, not looking past them."""
    from pytensor.tensor.random.type import RandomType

    found, seen, stack = [], set(), list(outputs)
    while stack:
        var = stack.pop()
        if var in seen:
            continue
        seen.add(var)
        owner = var.owner
        if owner is None:
            continue
        if not isinstance(var.type, RandomType) and any(isinstance(i.type, RandomType) for i in owner.inputs):
            found.append(var)
            continue
        stack.extend(owner.inputs)
    return found


def _scan(fn: Any, init: Any, xs: Any = None, length: Any = None) -> Any:
    """``jax.lax.scan``'s contract on ``pytensor.scan``: ``fn(carry, x) -> (carry, y)`` over the
    leading axis of ``xs`` (``fn(carry, None)``, ``length`` times, where ``xs`` is ``None``);
    returns ``(carry, ys)``, the last carry and the ``y`` of every step stacked."""
    import pytensor

    if xs is None and length is None:
        raise TypeError("scan(fn, init, xs=None) needs `length`.")
    if not isinstance(init, pt.Variable):  # a Python 0.5 is float32 to PyTensor, float64 to JAX (x64)
        init = np.asarray(init)
    init = pt.as_tensor_variable(init)
    sequences = [] if xs is None else [pt.as_tensor_variable(xs)]

    def call(carry: Any, x: Any) -> tuple[Any, Any]:
        new, y = fn(carry, x)
        return pt.as_tensor_variable(new), pt.as_tensor_variable(y)

    # One symbolic step, to find the carry's dtype (an integer init with a real recurrence carries
    # reals) and the model's random variables `fn` closes over: those go in as non-sequences, as
    # left implicit scan would pull their random nodes (and RNGs) into its loop, which PyMC cannot
    # compile.
    x0 = sequences[0][0].type() if sequences else None
    c0 = init.type()
    new, y = call(c0, x0)
    dtype = pytensor.scalar.upcast(init.dtype, new.dtype)
    init = init.astype(dtype)
    non_sequences = [v for v in _random_inputs([new, y]) if v is not c0 and v is not x0]

    def step(*args: Any) -> tuple[Any, Any]:  # pytensor passes sequences, then the carry, then the rest
        x, carry = (args[0], args[1]) if sequences else (None, args[0])
        new, y = call(carry, x)
        return new.astype(dtype), y

    carries, ys = pytensor.scan(step, sequences=sequences, outputs_info=[init, None], non_sequences=non_sequences,
                                n_steps=None if length is None else int(length), return_updates=False)
    return carries[-1], ys


#: Every name of :data:`resilient.math.FUNCTIONS`, on PyTensor.
PYTENSOR_MATH = SimpleNamespace(
    exp=pt.exp, log=pt.log, log1p=pt.log1p, expm1=pt.expm1, sqrt=pt.sqrt, square=pt.square,
    abs=pt.abs, sum=_sum, mean=_mean, prod=_prod, dot=pt.dot, matmul=pt.matmul,
    sigmoid=pt.sigmoid, logit=_logit, softplus=pt.softplus, tanh=pt.tanh, sin=pt.sin, cos=pt.cos,
    erf=pt.erf, lgamma=pt.gammaln, maximum=pt.maximum, minimum=pt.minimum, where=_where,
    clip=_clip, stack=_stack, concatenate=_concatenate, logsumexp=_logsumexp,
    log_softmax=lambda x, axis=-1: _special.log_softmax(x, axis=axis),
    softmax=lambda x, axis=-1: _special.softmax(x, axis=axis),
    cumsum=lambda x, axis=None: pt.cumsum(x, axis=axis),
    zeros=lambda shape, dtype=None: pt.zeros(shape, dtype=dtype),
    ones=lambda shape, dtype=None: pt.ones(shape, dtype=dtype),
    arange=pt.arange, reshape=_reshape, transpose=lambda x, axes=None: pt.transpose(x, axes),
    outer=lambda a, b: pt.outer(pt.as_tensor_variable(a), pt.as_tensor_variable(b)),
    diag=lambda v, k=0: pt.diag(pt.as_tensor_variable(v), k),
    scan=_scan,
)
