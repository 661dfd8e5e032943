"""The NumPyro backend: compiles a shared-API :class:`~resilient.model.Model` or a native NumPyro
model function (:class:`~resilient.model.NativeModel`) into a :class:`~resilient.backend.CompiledModel`.

Modules, in the order a model passes through them:

* :mod:`.device` asks XLA for one CPU device per core before jax starts (imported first, here);
* :mod:`.math` is the shared API's math namespace on jax.numpy;
* :mod:`.distributions` adds what NumPyro lacks (a log-space truncated Normal for far tails);
* :mod:`.translate` turns shared-API records into NumPyro distributions;
* :mod:`.native` reads a native model's sites (family, parameters, dependencies) and applies the
  stabilising rewrites and ``LocScaleReparam`` with an effect handler;
* :mod:`.compiled` flattens the latents into one unconstrained vector and builds the jitted log
  density, gradient, per-site terms and transforms;
* :mod:`.runner` runs NUTS in chunks with one compiled ``lax.scan`` for every chunk;
* :mod:`.adapter` ties them together behind :class:`~resilient.backend.Adapter`.

Precision: the model's (``float32`` on the model record); ``resilient.sample`` gives a native NumPyro function
the precision raw NumPyro would (float32 unless the user turned jax's x64 on; :mod:`resilient.precision`) and
shared-API models float64. jax's global x64 flag is never flipped; each jax call runs inside
``jax.enable_x64(...)`` (jit caches are keyed on it), so raw NumPyro and Resilient share a process.
"""

from resilient.adapters.numpyro import device  # noqa: F401  (first: the XLA device count)
from resilient.adapters.numpyro.adapter import NumPyroAdapter
from resilient.adapters.common import INITIAL_STRATEGIES
from resilient.adapters.numpyro.compiled import NumPyroCompiledModel
from resilient.adapters.numpyro.distributions import HalfStudentT, StableTruncatedNormal, TruncatedByCDF
from resilient.adapters.numpyro.math import JAX_MATH
from resilient.adapters.numpyro.runner import CHAIN_METHODS
from resilient.adapters.numpyro.translate import to_numpyro

__all__ = [
    "NumPyroAdapter", "NumPyroCompiledModel", "StableTruncatedNormal", "HalfStudentT", "TruncatedByCDF",
    "JAX_MATH", "to_numpyro", "INITIAL_STRATEGIES", "CHAIN_METHODS",
]
