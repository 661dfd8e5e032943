"""Chain worker processes and stopping: workers that die with a killed parent, the deadline and Ctrl-C watcher."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from typing import Any, Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from resilient.adapters.pymc.runner import _Collector


#: Seconds without a new draw, once a stop is due, before the run is interrupted by a signal.
_STOP_GRACE = 1.0


@contextlib.contextmanager
def _quiet_fork() -> Iterator[None]:
    """Hide JAX's "os.fork() was called" RuntimeWarning when PyMC forks its chain workers.

    The workers never call JAX, which is what the warning is about; a fork server would avoid it
    but costs each call ~10-15 s of worker start-up (measured on a two-variable model).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        yield


class _WorkersDieWithUs:
    """A multiprocessing context that is ``base`` except that its processes die with the one that
    started them (Linux ``PR_SET_PDEATHSIG``), passed to ``pm.sample`` as ``mp_ctx``.

    PyMC's chain workers otherwise outlive a parent killed by SIGKILL (the OOM killer, a batch
    scheduler): each forked worker holds its siblings' pipe ends, so none sees EOF, and they sleep
    holding their memory until someone kills them by hand. The kernel ties the signal to the
    thread that started the worker: the one blocked in ``pm.sample`` until the workers are done.
    """

    def __init__(self, base: Any) -> None:
        self._base = base
        self.processes: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)

    def Process(self, *, target: Callable, args: tuple = (), **kwargs: Any) -> Any:  # noqa: N802
        # fork and spawn start the worker from this process, so a parent id other than ours means
        # we died before the worker could ask to die with us; under a fork server it is the server.
        parent = os.getpid() if self._base.get_start_method() in ("fork", "spawn") else None
        process = self._base.Process(target=_die_with_parent, args=(parent, target, *args), **kwargs)
        self.processes.append(process)
        return process


def _die_with_parent(parent: int | None, target: Callable, *args: Any) -> Any:
    """Run ``target(*args)`` in a worker that gets SIGKILL when its parent exits (Linux only)."""
    before = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no prctl here: the worker runs as PyMC would run it
        pass
    if os.getppid() != (before if parent is None else parent):
        os._exit(1)  # the parent is already gone
    return target(*args)


def _chain_worker_context() -> Any:
    """The ``mp_ctx`` for ``pm.sample``: PyMC's own choice on Linux (the platform default start
    method; our models compile without JAX), with workers that die with us; ``None`` (PyMC
    decides) elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    return _WorkersDieWithUs(multiprocessing.get_context())


class _StopControl:
    """Stops ``pm.sample`` promptly: the callback raises ``KeyboardInterrupt`` at a draw, and,
    when no draw comes for a while after a stop is due (one long NUTS step, compilation), a
    watchdog thread sends SIGINT to the main thread. Ctrl-C is told apart from our own stop.

    Signals work in the main thread only; elsewhere the stop happens at the next draw.
    """

    def __init__(self, collector: _Collector, deadline: float | None) -> None:
        self.collector = collector
        self.deadline = deadline
        self.reason: str | None = None
        self.in_callback = False
        self._armed = False
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._last_progress = time.monotonic()
        self._previous_handler: Any = None
        self._main = threading.current_thread() is threading.main_thread()
        self._watchdog: threading.Thread | None = None

    def __enter__(self) -> "_StopControl":
        self.collector.control = self
        if self._main:
            self._previous_handler = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._on_sigint)
            self._main_ident = threading.get_ident()
            if self.deadline is not None:  # a stop by on_chunk happens at a draw, no watchdog needed
                self._watchdog = threading.Thread(target=self._watch, name="resilient-pymc-watchdog", daemon=True)
        self._armed = True
        if self._watchdog is not None:
            self._watchdog.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.disarm()
        if self._main:
            previous = self._previous_handler
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
        self.collector.control = None

    def progress(self) -> None:
        self._last_progress = time.monotonic()

    def note_interrupt(self) -> None:
        """A KeyboardInterrupt came out of pm.sample: ours if a stop was due, else the user's."""
        if self.reason is None and self.collector.reason is None:
            self.reason = "interrupted"

    def disarm(self) -> None:
        with self._lock:
            self._armed = False
        self._done.set()
        if self._watchdog is not None and self._watchdog.is_alive():
            self._watchdog.join(timeout=2.0)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.reason is None and self.collector.reason is None:
            self.reason = "interrupted"
        if not self._armed or self.in_callback:
            return  # the callback raises when it ends; after the run, there is nothing to stop
        raise KeyboardInterrupt

    def _watch(self) -> None:
        while not self._done.wait(0.1):
            now = time.monotonic()
            if self.reason is None and self.collector.reason is None:
                if self.deadline is None or now <= self.deadline:
                    continue
                self.reason = "deadline"
            if now - self._last_progress < _STOP_GRACE:
                continue
            with self._lock:
                if not self._armed:
                    return
                self._last_progress = now
                signal.pthread_kill(self._main_ident, signal.SIGINT)
