"""Backend adapters: one module per backend behind :class:`resilient.backend.CompiledModel`.

Dependency rule: each module here may import its own backend (jax + numpyro, or pymc +
pytensor) and ``resilient``; ``resilient`` reaches these modules only through the registry
in :mod:`resilient.backend`, never by a top-level import.
"""
