"""The nutpie adapter: the PyMC adapter's compiled model, sampled by nutpie."""

from __future__ import annotations

from typing import Any

from resilient.adapters.nutpie.compiled import NutpieCompiledModel


class NutpieAdapter:
    """Compiles what the PyMC adapter compiles (shared-API models, ``pm.Model``) for nutpie.

    ``cores``: threads nutpie runs chains on (``None``: ``os.cpu_count()``), capped at the chains.
    """

    name = "nutpie"

    def __init__(self, cores: int | None = None) -> None:
        if cores is not None and int(cores) < 1:
            raise ValueError(f"`cores` must be at least 1, got {cores}.")
        self.cores = None if cores is None else int(cores)

    def compile(self, model: Any) -> NutpieCompiledModel:
        from resilient.adapters.pymc import PyMCAdapter

        return NutpieCompiledModel(PyMCAdapter(cores=self.cores).compile(model), cores=self.cores)
