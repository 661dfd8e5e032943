"""The old home of :func:`resilient.sample_many`, kept so ``from resilient.many import ...`` goes on working.

Many fits now live in the package :mod:`resilient.batch`, one topic a module (spec, worker, fork handling,
store, cluster, progress, API); import from there. This module re-exports the names that were public here.
"""

from __future__ import annotations

from resilient.batch import *  # noqa: F401,F403
from resilient.batch import __all__  # noqa: F401
from resilient.options import RunOptions  # noqa: F401  (was importable from here)
