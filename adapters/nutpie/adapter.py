"""The nutpie adapter: a PyMC model (native or shared-API, through the PyMC translation) or a native
NumPyro model, compiled by its own adapter and sampled by nutpie."""

from __future__ import annotations

from resilient.backend import CAPABILITIES

from typing import Any

from resilient.adapters.nutpie.compiled import NutpieCompiledModel


class NutpieAdapter:
    """Compiles what the PyMC adapter compiles (shared-API models, ``pm.Model``) for nutpie, and a native
    NumPyro model through nutpie's function interface. The model's ``compile_backend`` (``"numba"``, the
    default for PyMC models, or ``"jax"``) and ``gradient_backend`` say how nutpie compiles it.

    ``cores``: threads nutpie runs chains on (``None``: ``os.cpu_count()``), capped at the chains.
    """

    name = "nutpie"
    capabilities = CAPABILITIES["nutpie"]

    def __init__(self, cores: int | None = None) -> None:
        if cores is not None and int(cores) < 1:
            raise ValueError(f"`cores` must be at least 1, got {cores}.")
        self.cores = None if cores is None else int(cores)

    def compile(self, model: Any) -> NutpieCompiledModel:
        if getattr(model, "backend", None) == "numpyro":
            from resilient.adapters.numpyro import NumPyroAdapter

            inner = NumPyroAdapter().compile(model)
        else:
            from resilient.adapters.pymc import PyMCAdapter

            inner = PyMCAdapter(cores=self.cores).compile(model)
        return self.wrap(inner, compile_backend=getattr(model, "compile_backend", None),
                         gradient_backend=getattr(model, "gradient_backend", None))

    def wrap(self, compiled: Any, *, compile_backend: str | None = None,
             gradient_backend: str | None = None) -> NutpieCompiledModel:
        """nutpie over a model already compiled by its language's adapter (compiled once for both engines)."""
        return NutpieCompiledModel(compiled, cores=self.cores, compile_backend=compile_backend,
                                   gradient_backend=gradient_backend)
