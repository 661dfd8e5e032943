"""The pymc_numpyro adapter: a model compiled by the PyMC adapter, sampled by NumPyro's NUTS over PyMC's JAX
translation of its log density."""

from __future__ import annotations

from typing import Any

from resilient.backend import CAPABILITIES

from resilient.adapters.pymc_numpyro.compiled import PyMCNumPyroCompiledModel


class PyMCNumPyroAdapter:
    """Compiles what the PyMC adapter compiles (shared-API models, ``pm.Model``) for NumPyro's NUTS.

    ``chain_method``: as the NumPyro adapter's (``None``: ``parallel`` where there is a device per chain, else
    ``vectorized``). ``cores`` is the PyMC adapter's (unused by NumPyro's NUTS)."""

    name = "pymc_numpyro"
    capabilities = CAPABILITIES["pymc_numpyro"]

    def __init__(self, chain_method: str | None = None, cores: int | None = None) -> None:
        from resilient.adapters.numpyro.runner import CHAIN_METHODS

        if chain_method is not None and chain_method not in CHAIN_METHODS:
            raise ValueError(f"`chain_method` must be one of {', '.join(repr(m) for m in CHAIN_METHODS)} or None, "
                             f"got {chain_method!r}.")
        if cores is not None and int(cores) < 1:
            raise ValueError(f"`cores` must be at least 1, got {cores}.")
        self.chain_method = chain_method
        self.cores = None if cores is None else int(cores)

    def compile(self, model: Any) -> PyMCNumPyroCompiledModel:
        from resilient.adapters.pymc import PyMCAdapter

        return self.wrap(PyMCAdapter(cores=self.cores).compile(model))

    def wrap(self, compiled: Any, **_: Any) -> PyMCNumPyroCompiledModel:
        """NumPyro's NUTS over a model the PyMC adapter compiled (compiled once for every engine). Keyword
        arguments (nutpie's ``compile_backend``, ``gradient_backend``) are taken and ignored: the log density is
        always PyMC's JAX translation."""
        from resilient.caches import enable_jax_cache

        enable_jax_cache()  # JAX's persistent compilation cache, as the NumPyro adapter has it (RESILIENT_CACHE)
        return PyMCNumPyroCompiledModel(compiled, chain_method=self.chain_method)
