"""Simulation-based calibration: :func:`sbc` draws parameters and data from the prior, fits each data
set with the resilient loop (on dask.distributed, through :mod:`resilient.batch`), and checks that the
ranks of the true values among the posterior draws are uniform (Talts et al. 2018; Modrák et al. 2023).

One topic a module, each usable alone:

* :mod:`~resilient.sbc.simulation` (runs on workers): one prior draw with the backend's own forward sampler
  (:func:`prior_draw`, reached through the adapter registry), the simulated observations handed to the fit
  as data, and the ranks of the true values afterwards (:func:`rank_rows`);
* :mod:`~resilient.sbc.statistics`: :func:`uniformity_test`, the ECDF of the ranks against the simultaneous
  confidence band of Säilynoja, Bürkner and Vehtari (2022), with a stated false-alarm rate per parameter;
* :mod:`~resilient.sbc.results`: :func:`analyse` reads an output folder back (also after a crash);
* :mod:`~resilient.sbc.report`: :func:`write_sbc_report` writes ``sbc.html`` and ``sbc.json``;
* :mod:`~resilient.sbc.driver`: :func:`sbc` plans the simulation once, runs the fits and reports.

Ranks. From each fit's ``chains x draws`` posterior draws, ``rank_draws`` (L) evenly spaced draws are
kept (thinning by ``chains * draws / L``); the rank of the true value is the number of kept draws below
it (ties broken at random), a value in 0..L. With the defaults (2 chains x 500 draws, L = 99) every
10th draw is kept. Thinning is meant to leave roughly independent draws: each rank row records the
fit's bulk ESS, and the report counts the fits whose ESS was below L (their ranks may be too
concentrated in the middle or the ends: raise ``draws`` there).

``resilient.sbc`` is this package, and calling it calls :func:`sbc` (``resilient.sbc(model, ...)``), so both
``resilient.sbc(...)`` and ``import resilient.sbc.report`` work.

Dependency rule: numpy and the standard library at import time; scipy, matplotlib, jinja2, the
backends and dask are imported inside functions.
"""

from __future__ import annotations

import sys as _sys
from inspect import signature as _signature
from types import ModuleType as _ModuleType

from resilient.sbc.driver import sbc
from resilient.sbc.report import write_sbc_report
from resilient.sbc.results import SBCResult, analyse
from resilient.sbc.simulation import RANK_COLUMNS, Simulation, prior_draw, rank_rows
from resilient.sbc.statistics import ParameterCheck, null_statistics, uniformity_test

__all__ = [
    "sbc", "SBCResult", "ParameterCheck", "Simulation", "uniformity_test", "analyse", "write_sbc_report",
    "rank_rows", "RANK_COLUMNS", "prior_draw", "null_statistics",
]


class _CallablePackage(_ModuleType):
    """The package, callable as :func:`sbc` (``resilient.sbc(...)``) and importable below (``resilient.sbc.driver``)."""

    def __call__(self, *args, **kwargs):
        return sbc(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage
__signature__ = _signature(sbc)  # help() and the API reference show sbc's parameters
