"""The pymc_numpyro engine: a PyMC model (native, or shared-API through the PyMC translation) sampled by NumPyro's
NUTS over PyMC's JAX translation of its log density, as ``pm.sample(nuts_sampler="numpyro")`` runs it
(``pymc.sampling.jax.get_jaxified_graph``), behind the same :class:`resilient.backend.CompiledModel` contract.

``engine="numpyro"`` (or pm.sample's ``nuts_sampler="numpyro"``) on a ``pm.Model`` selects it
(:attr:`resilient.backend.Capabilities.nuts_of`); ``engine="pymc_numpyro"`` names it for any model PyMC compiles.

* Everything but the log density and sampling is the PyMC adapter's
  (:class:`~resilient.adapters.pymc.compiled.PyMCCompiledModel`: the layout of ``x`` (PyMC's value variables),
  per-site terms for attribution, initial points, constrain/unconstrain, observed data, dims, coords and
  ``pm.Data``, the pointwise log likelihood); the whole log density and gradient are the jitted JAX function that
  NumPyro's NUTS runs, so preflight checks what is sampled.
* Sampling is the NumPyro adapter's chunked driver (:class:`~resilient.adapters.numpyro.compiled.NumPyroCompiledModel`):
  NUTS in jitted chunks of ``chunk_size`` draws, a deadline checked between chunks, the whole ``HMCState`` as the
  sampler state (a checkpointed run resumes exactly; a later call warm-starts from its adaptation), mass matrix
  ``"diag"`` or ``"full"``.
* Always float64: the JAX functions are built and run with x64 on for this thread's computation only
  (``jax.enable_x64``); the process's global flag is left as the user set it.
* sample_stats: :data:`resilient.backend.STAT_NAMES`, the names ``pm.sample(nuts_sampler="numpyro")`` gives, with
  ``lp`` the log density (PyMC's JAX path puts NumPyro's potential energy, its negative, there).
"""

from resilient.adapters.pymc_numpyro.adapter import PyMCNumPyroAdapter
from resilient.adapters.pymc_numpyro.compiled import PyMCNumPyroCompiledModel

__all__ = ["PyMCNumPyroAdapter", "PyMCNumPyroCompiledModel"]
