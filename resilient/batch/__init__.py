"""Many fits of one model on dask.distributed: :func:`sample_many` (one resilient fit per data set) and the
runner that :func:`resilient.sbc` shares.

One topic a module, in the order a fit travels:

* :mod:`~resilient.batch.spec`: the model as shipped to workers, one fit's job, seeds, settings, statuses;
* :mod:`~resilient.batch.worker`: one fit on a worker, the model compiled once per worker process;
* :mod:`~resilient.batch.fork`: the child processes a PyMC fit starts inside a Dask worker;
* :mod:`~resilient.batch.store`: the output folder (``manifest.json``, ``summary.csv``, ``fits/``);
* :mod:`~resilient.batch.cluster`: the Dask cluster and the runner that keeps fits in flight;
* :mod:`~resilient.batch.progress`: counts, ETA and the progress bar;
* :mod:`~resilient.batch.api`: :func:`sample_many` and :class:`ManyResult`.

Dependency rule: numpy and the standard library at import time; dask.distributed, the backends and
ArviZ are imported inside functions.
"""

from __future__ import annotations

from resilient.batch.api import ManyResult, sample_many
from resilient.batch.cluster import FitRunner, execute, worker_environment
from resilient.batch.spec import (
    FIT_STATUSES, SUMMARY_COLUMNS, FitJob, ModelSpec, data_fingerprint, fit_seed, load_reference, manifest_of,
    resolve_fit_timeout, run_settings,
)
from resilient.batch.store import FitStore, read_rows, read_summary
from resilient.batch.worker import run_fit, sampler_for

__all__ = [
    "sample_many", "ManyResult", "ModelSpec", "FitJob", "FitRunner", "FitStore", "run_fit", "sampler_for",
    "load_reference", "SUMMARY_COLUMNS", "FIT_STATUSES", "read_summary", "read_rows", "worker_environment",
    "data_fingerprint", "fit_seed", "run_settings", "manifest_of", "resolve_fit_timeout", "execute",
]
