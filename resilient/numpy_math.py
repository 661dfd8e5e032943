"""The math namespace on plain numpy, used outside a model and as the reference for adapters."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np


def _logsumexp(x, axis=None, keepdims=False):
    x = np.asarray(x)
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    out = np.log(np.sum(np.exp(x - top), axis=axis, keepdims=True)) + top
    return out if keepdims else np.squeeze(out, axis=axis) if axis is not None else out.reshape(())


def _log_softmax(x, axis=-1):
    return x - _logsumexp(x, axis=axis, keepdims=True)


def _erf(x):
    from math import erf

    return np.vectorize(erf, otypes=[float])(x)


def _lgamma(x):
    from math import lgamma

    return np.vectorize(lgamma, otypes=[float])(x)


def scan(fn, init, xs, length=None):
    """``jax.lax.scan``'s contract on numpy: ``fn(carry, x) -> (carry, y)``; returns ``(carry, ys)``."""
    carry = init
    steps = len(xs) if xs is not None else int(length)
    ys = []
    for index in range(steps):
        carry, y = fn(carry, None if xs is None else xs[index])
        ys.append(y)
    return carry, (np.stack([np.asarray(y) for y in ys]) if ys and ys[0] is not None else None)


NUMPY_MATH = SimpleNamespace(
    exp=np.exp, log=np.log, log1p=np.log1p, expm1=np.expm1, sqrt=np.sqrt, square=np.square,
    abs=np.abs, sum=np.sum, mean=np.mean, prod=np.prod, dot=np.dot, matmul=np.matmul,
    sigmoid=lambda x: 1.0 / (1.0 + np.exp(-x)), logit=lambda p: np.log(p) - np.log1p(-p),
    softplus=lambda x: np.logaddexp(0.0, x), tanh=np.tanh, sin=np.sin, cos=np.cos, erf=_erf,
    lgamma=_lgamma, maximum=np.maximum, minimum=np.minimum, where=np.where, clip=np.clip,
    stack=np.stack, concatenate=np.concatenate, logsumexp=_logsumexp, log_softmax=_log_softmax,
    softmax=lambda x, axis=-1: np.exp(_log_softmax(x, axis)), cumsum=np.cumsum, zeros=np.zeros,
    ones=np.ones, arange=np.arange, reshape=np.reshape, transpose=np.transpose, outer=np.outer,
    diag=np.diag, scan=scan,
)
