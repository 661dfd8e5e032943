"""The shared API's math namespace on jax.numpy."""

from __future__ import annotations

from types import SimpleNamespace
import jax
import jax.numpy as jnp


def _scan(fn, init, xs=None, length=None):
    """``resilient.math.scan`` on jax: ``jax.lax.scan(fn, init, xs, length)`` -> ``(carry, ys)``."""
    return jax.lax.scan(fn, init, xs, length)


JAX_MATH = SimpleNamespace(
    exp=jnp.exp, log=jnp.log, log1p=jnp.log1p, expm1=jnp.expm1, sqrt=jnp.sqrt, square=jnp.square,
    abs=jnp.abs, sum=jnp.sum, mean=jnp.mean, prod=jnp.prod, dot=jnp.dot, matmul=jnp.matmul,
    sigmoid=jax.nn.sigmoid, logit=jax.scipy.special.logit, softplus=jax.nn.softplus, tanh=jnp.tanh,
    sin=jnp.sin, cos=jnp.cos, erf=jax.scipy.special.erf, lgamma=jax.scipy.special.gammaln,
    maximum=jnp.maximum, minimum=jnp.minimum, where=jnp.where, clip=jnp.clip, stack=jnp.stack,
    concatenate=jnp.concatenate, logsumexp=jax.scipy.special.logsumexp,
    log_softmax=jax.nn.log_softmax, softmax=jax.nn.softmax, cumsum=jnp.cumsum, zeros=jnp.zeros,
    ones=jnp.ones, arange=jnp.arange, reshape=jnp.reshape, transpose=jnp.transpose, outer=jnp.outer,
    diag=jnp.diag, scan=_scan,
)
