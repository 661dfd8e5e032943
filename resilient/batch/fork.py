"""Child processes inside a Dask worker: PyMC runs its chains in forked processes, which a daemonic Dask
worker may not start, and a fork can inherit Numba's or llvmlite's lock held by another thread.
:class:`ChildProcessesAllowed` sets the worker up for one fit and puts it back; :func:`guard_forks`
registers the lock handling once per process.

Dependency rule: the standard library at import time; numba and llvmlite are imported inside
:func:`guard_forks`, only where PyMC is already loaded.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["ChildProcessesAllowed", "guard_forks"]

_FORK_GUARDED = False


def guard_forks() -> None:
    """Make forking safe for the locks a forked PyMC chain process needs: numba's compiler lock and
    llvmlite's LLVM lock (in that order, as numba takes them). Another thread of the worker (Dask's
    event loop, a garbage collection freeing an LLVM object) can hold one at the moment of the fork;
    the child then inherits it locked and waits forever (seen: a chain stuck in llvmlite's lock while
    numba loaded a cached function, about one fit in 200 with a busy logging thread). Like Python's own
    locks, each is taken before the fork and released after it, in the parent and in the child.
    Registered once per process, only where PyMC is loaded."""
    global _FORK_GUARDED
    if _FORK_GUARDED or "pymc" not in sys.modules or not hasattr(os, "register_at_fork"):
        return
    locks = []
    try:
        from numba.core.compiler_lock import global_compiler_lock

        locks.append(global_compiler_lock._lock)  # noqa: SLF001
    except (ImportError, AttributeError):
        pass
    try:
        from llvmlite.binding import ffi

        locks.append(ffi.lib._lock._lock)  # noqa: SLF001 - the RLock inside llvmlite's _LLVMLock
    except (ImportError, AttributeError):
        pass
    if not locks:
        return

    def before() -> None:
        for lock in locks:
            lock.acquire()

    def after_in_parent() -> None:
        for lock in reversed(locks):
            lock.release()

    def after_in_child() -> None:
        for lock in reversed(locks):
            reinit = getattr(lock, "_at_fork_reinit", None)
            reinit() if reinit is not None else lock.release()

    os.register_at_fork(before=before, after_in_parent=after_in_parent, after_in_child=after_in_child)
    _FORK_GUARDED = True


class ChildProcessesAllowed:
    """Lets a fit start child processes the way it would outside Dask (PyMC runs chains in processes).

    Dask workers are daemonic processes, which multiprocessing forbids to have children, and they
    default to the "spawn" start method, with which each PyMC chain process imports PyMC again and
    receives the compiled model by pickle (about 3 s more per fit, measured). For the fit, the worker
    is non-daemonic and starts children by "fork" (the platform default outside Dask, where available);
    the children die with their parent (the PyMC adapter sets PR_SET_PDEATHSIG), which is what the
    daemon rule protects, and :func:`guard_forks` keeps the locks they need from being inherited held.
    Both settings are restored when the fit ends. Workers run one fit at a time
    (one thread each), so no other task sees the change.
    """

    def __enter__(self) -> None:
        import multiprocessing

        self.config = multiprocessing.current_process()._config  # noqa: SLF001
        self.daemon = self.config.get("daemon")
        self.config["daemon"] = False
        self.method = multiprocessing.get_start_method(allow_none=True)
        if "fork" in multiprocessing.get_all_start_methods() and self.method != "fork":
            multiprocessing.set_start_method("fork", force=True)
        guard_forks()

    def __exit__(self, *exc: Any) -> None:
        import multiprocessing

        if self.daemon is None:
            self.config.pop("daemon", None)
        else:
            self.config["daemon"] = self.daemon
        if multiprocessing.get_start_method(allow_none=True) != self.method:
            multiprocessing.set_start_method(self.method, force=True)
