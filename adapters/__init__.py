"""Backend adapters, installed as ``resilient.adapters``: one package per backend behind
:class:`resilient.backend.CompiledModel`, each split by topic (math, translate, native, compiled,
runner, adapter; PyMC also control).

Dependency rule: each package here may import its own backend (jax + numpyro, or pymc + pytensor)
and ``resilient``; ``resilient`` reaches them only through the registry in :mod:`resilient.backend`,
never by a top-level import.
"""
