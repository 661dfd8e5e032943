"""The PyMC backend: shared-API models and native ``pm.Model`` objects behind one contract.

:class:`PyMCAdapter` turns a :class:`resilient.model.Model` (the shared API) or a
:class:`resilient.model.NativeModel` holding a ``pm.Model`` into a :class:`PyMCCompiledModel`,
which implements :class:`resilient.backend.CompiledModel`:

* the unconstrained vector ``x`` is PyMC's value variables (``sigma_log__`` ...) raveled in
  the order of ``model.value_vars``; blocks are named by the free variables (``sigma``);
* the model is PyMC's frozen copy (``freeze_model``), which caches its compiled functions:
  log density and gradient are the very ``logp_dlogp_function`` that ``pm.sample``'s NUTS then
  runs (compiled once, lazily on first use, so building a compiled model is cheap), and a
  retry by the loop recompiles nothing;
* ``run_nuts`` runs ``pm.sample`` with PyMC's NUTS and a per-draw callback that hands
  finished draws to the caller in chunks, and stops it (by ``KeyboardInterrupt``, the way
  PyMC documents) when the caller says so or a deadline passes.

Choices documented here because the contract leaves them to the adapter:

* ``LKJCholesky(n, eta)`` is ``pm.LKJCorr(name, n=n, eta=eta)``: in PyMC 6 ``LKJCorr``
  *is* the distribution of the lower Cholesky factor of an LKJ correlation matrix (same
  density as NumPyro's ``LKJCholesky``), with a ``CholeskyCorrTransform``.
* ``Truncated(base, lower, upper, stable)`` is ``pm.Truncated(name, base.dist(...), ...)``;
  PyMC computes the normaliser with ``logcdf``/``logccdf`` (and a dedicated
  ``TruncatedNormal`` for Normals), so ``stable`` needs nothing more. PyMC also gives an
  infinite bound an ``Interval`` transform that degenerates to a log/identity transform,
  so the motivating model's gradient is finite on this backend even without the rewrite.
* ``factor`` is a ``pm.Potential``; ``ordered=True`` is PyMC's ``ordered`` transform (chained after
  log for a positive family) with an increasing initial value; ``Mixture`` is ``pm.Mixture``;
  ``scan`` is ``pytensor.scan`` with ``jax.lax.scan``'s contract; an ``obs=`` that is a graph of
  latents (``obs=y - mu``) is a ``pm.Potential`` of the record's log density there, as on NumPyro.
  Literal parameters are 64-bit (PyTensor would make a Python ``3.0`` float32).
* Initial points reach ``pm.sample`` unconstrained by value-variable name where PyMC can turn
  them back, constrained by the variable's name where it cannot (ZeroSumNormal, LKJCholeskyCov,
  a bound that is another latent). ``datatree_layout()`` gives ``pm.sample``'s coords, dims and
  ``constant_data``; chunks carry every per-draw NUTS statistic PyMC reports, under its names.
* Native models are used as built: ``noncentered`` and ``float32`` are not applied to a
  ``pm.Model`` (``fix`` needs nothing: PyMC already handles infinite bounds and far tails), and
  ``float32`` is not applied to shared-API models either: PyMC runs in float64. What was not
  applied is listed in :attr:`PyMCCompiledModel.ignored_options`.

Modules: :mod:`.math` (the math namespace on PyTensor), :mod:`.translate` (records -> PyMC),
:mod:`.native` (a ``pm.Model``'s sites), :mod:`.compiled` (the compiled model), :mod:`.runner`
(``pm.sample`` in chunks, its statistics and failures), :mod:`.control` (worker processes, deadline
and Ctrl-C), :mod:`.adapter` (the entry point).
"""

from resilient.adapters.pymc.adapter import PyMCAdapter
from resilient.adapters.pymc.compiled import PyMCCompiledModel
from resilient.adapters.pymc.math import PYTENSOR_MATH
from resilient.adapters.pymc.translate import PyMCSiteHandler, to_pymc

__all__ = ["PyMCAdapter", "PyMCCompiledModel", "PyMCSiteHandler", "PYTENSOR_MATH", "to_pymc"]
