"""The nutpie engine: PyMC models (native, or shared-API ones through the PyMC translation) compiled
by ``nutpie.compile_pymc_model`` (Numba, or JAX where asked: ``backend="jax"``), and native NumPyro
models through nutpie's function interface, sampled by nutpie's NUTS (Rust), behind the same
:class:`resilient.backend.CompiledModel` contract as the other adapters.

* Everything but sampling is the PyMC adapter's (:class:`~resilient.adapters.pymc.compiled.PyMCCompiledModel`:
  the layout of ``x``, per-site terms for attribution, initial points, constrain/unconstrain,
  dims and coords), except the whole log density and gradient: those are nutpie's own compiled
  function, the one its sampler calls, so preflight checks what is sampled.
* ``run_nuts`` starts nutpie's non-blocking sampler and waits on it with a deadline; the draws
  it has finished reach ``on_chunk`` every ``chunk_size`` draws of a chain. A deadline, Ctrl-C or
  ``on_chunk`` returning ``False`` aborts it; the draws finished by then are kept.
* Mass matrix: ``NUTSSettings.mass_matrix`` ``"diag"`` (nutpie's default, gradient-based) or
  ``"low_rank"`` (Seyboldt, Carlson and Carpenter's low-rank Fisher adaptation).
* The JAX backend and NumPyro models call a jitted JAX function from Rust through Python for every
  gradient (holding the GIL: chains take turns); ``engine="auto"`` never picks them, and keeps NumPyro
  models on NumPyro's NUTS, which runs whole trajectories in XLA.
"""

from resilient.adapters.nutpie.adapter import NutpieAdapter
from resilient.adapters.nutpie.compiled import NutpieCompiledModel

__all__ = ["NutpieAdapter", "NutpieCompiledModel"]
