"""The Dask side of a batch: the cluster (the caller's client, a scheduler address or an embedded
``LocalCluster``), the environment of the workers Resilient starts, and :class:`FitRunner`, which keeps
a bounded number of fits in flight and accounts for every one (a fit whose worker keeps dying, or that
runs past ``fit_timeout``, is a ``lost`` row).

Dependency rule: the standard library at import time; dask.distributed is imported inside functions.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from typing import Any, Iterable, Iterator

from resilient.batch.progress import Progress, ProgressBar
from resilient.batch.spec import FitJob
from resilient.batch.store import FitStore
from resilient.batch.worker import reason_of, run_fit
from resilient.errors import ResilientError

__all__ = ["worker_environment", "Cluster", "FitRunner", "execute"]

def worker_environment(threads: int = 1, devices: int = 1) -> dict[str, str]:
    """Environment for worker processes Resilient starts: native thread pools sized to the worker's
    threads, so workers on one machine do not fight over its cores, and ``devices`` XLA host devices,
    so NumPyro runs that many chains in parallel (pmap) instead of vectorised. Give the chain count:
    the chains' sampling is a small part of a fit here, their compile the large one, and the
    vectorised NUTS program takes about twice as long to compile (measured: 3.6 s against 1.6 s of
    warm-up per fit of a two-parameter model, 2 chains)."""
    env = {name: str(threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                           "NUMBA_NUM_THREADS")}
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        flags = f"{flags} --xla_force_host_platform_device_count={int(devices)}".strip()
    env["XLA_FLAGS"] = flags
    return env


#: glibc's allocator thresholds for the worker processes Resilient starts (Dask's pre-spawn environment, read by
#: glibc when the process starts). Dask's default sets ``MALLOC_TRIM_THRESHOLD_=65536`` to hand memory back sooner;
#: any explicit value turns glibc's dynamic mmap threshold off, so every buffer over 128 KiB is mapped and unmapped
#: again: a NumPyro fit of 20,000 observations took 1.9 s instead of 0.85-0.97 s (2026-12-07, this machine). These
#: are the values glibc's own dynamic thresholds settle at (32 MiB; twice that before trimming): 0.85 s.
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": 33554432, "MALLOC_TRIM_THRESHOLD_": 67108864}
#: Dask's own default for the trim threshold: only that one is replaced (a value the user configured is kept).
_DASK_TRIM_DEFAULT = 65536


def _use_worker_malloc() -> bool:
    """Put :data:`WORKER_MALLOC` into this process's environment, which the worker processes a ``LocalCluster``
    starts inherit (Dask's nannies also take a variable they set from this environment over their config, and write
    their values into it: an earlier cluster's ``MALLOC_TRIM_THRESHOLD_=65536`` is there). False, changing nothing,
    where the user set either threshold (in the environment or Dask's config): theirs is kept."""
    import dask

    configured = dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {}

    def effective(name: str) -> Any:
        return os.environ.get(name, configured.get(name))

    trim = effective("MALLOC_TRIM_THRESHOLD_")
    if effective("MALLOC_MMAP_THRESHOLD_") is not None or (trim is not None and str(trim) != str(_DASK_TRIM_DEFAULT)):
        return False
    os.environ.update({name: str(value) for name, value in WORKER_MALLOC.items()})
    return True


class Cluster:
    """The Dask client to use: the caller's ``Client``, one connected to a scheduler address, or an
    embedded ``LocalCluster`` (``workers`` processes, one thread each; default one per core)."""

    def __init__(self, client: Any = None, *, workers: int | None = None, devices: int = 1,
                 connect_timeout: float = 30.0, memory_limit: str | float | None = "auto") -> None:
        from distributed import Client, LocalCluster

        self.cluster = None
        self.own = client is None or isinstance(client, str)
        if client is None:
            count = int(workers or os.cpu_count() or 1)
            if count < 1:
                raise ResilientError(f"`workers` must be a positive integer, got {workers!r}.")
            _use_worker_malloc()
            self.cluster = LocalCluster(n_workers=count, threads_per_worker=1, processes=True,
                                        dashboard_address=None, host="127.0.0.1",
                                        env=worker_environment(1, devices),
                                        memory_limit=memory_limit)
            self.client = Client(self.cluster)
        elif isinstance(client, str):
            try:
                self.client = Client(client, timeout=connect_timeout)
            except OSError as error:
                raise ResilientError(f"Cannot reach the Dask scheduler at {client} within {connect_timeout:g} s: "
                                     f"{error}. Check the address (tcp://host:8786) and that the scheduler runs."
                                     ) from error
        else:
            self.client = client

    def close(self) -> None:
        if not self.own:
            return
        try:
            self.client.close(timeout=10)
        finally:
            if self.cluster is not None:
                self.cluster.close(timeout=20)


class FitRunner:
    """Submits fits to Dask (at most ``max_in_flight`` at once), writes each result as it arrives and
    accounts for every fit. Bounded waits: no worker for ``worker_timeout`` seconds stops the run with
    an error (finished fits stay on disk); a fit running longer than ``fit_timeout`` has its worker
    restarted and is recorded ``lost``."""

    def __init__(self, client: Any, store: FitStore, *, max_in_flight: int | None = None,
                 fit_timeout: float | None = None, worker_timeout: float = 120.0, poll: float = 0.25,
                 progress: ProgressBar | None = None) -> None:
        self.client = client
        self.store = store
        self.max_in_flight = max_in_flight
        self.fit_timeout = fit_timeout
        self.worker_timeout = worker_timeout
        self.poll = poll
        self.bar = progress
        self.topic = f"resilient-fits-{os.getpid()}-{time.time_ns()}"
        self._lock = threading.Lock()
        self.starts: dict[str, int] = {}
        self.running: dict[str, tuple[str, float]] = {}

    def _on_event(self, event: Any) -> None:
        _, message = event
        if not isinstance(message, dict) or message.get("event") != "start":
            return
        with self._lock:
            fit_id = message["fit_id"]
            self.starts[fit_id] = self.starts.get(fit_id, 0) + 1
            self.running[fit_id] = (message.get("worker", ""), time.monotonic())

    def run(self, jobs: Iterable[FitJob], progress: Progress) -> Progress:
        self.client.subscribe_topic(self.topic, self._on_event)
        pending: dict[Any, FitJob] = {}
        source: Iterator[FitJob] = iter(jobs)
        exhausted = False
        no_workers_since: float | None = None
        try:
            while True:
                limit = self.max_in_flight or max(2 * self._threads(), 2) + 2
                while not exhausted and len(pending) < limit:
                    job = next(source, None)
                    if job is None:
                        exhausted = True
                        break
                    if self.store.finished(job.fit_id):
                        progress.skipped += 1
                        continue
                    job = replace(job, topic=self.topic)
                    future = self.client.submit(run_fit, job, key=f"resilient-fit-{self.topic}-{job.fit_id}",
                                                pure=False)
                    pending[future] = job
                if not pending:
                    break
                finished = [future for future in pending if future.done()]  # a few futures: polling is cheap
                for future in finished:
                    job = pending.pop(future)
                    self._record(future, job, progress)
                    future.release()
                if not finished:
                    time.sleep(self.poll)
                    no_workers_since = self._check_workers(no_workers_since)
                    self._check_timeouts(pending, progress)
                in_flight = {j.fit_id for j in pending.values()}
                with self._lock:
                    progress.running = sum(1 for fit_id in self.running if fit_id in in_flight)
                if self.bar is not None:
                    self.bar.update()
        finally:
            for future in pending:
                future.cancel()
            try:
                self.client.unsubscribe_topic(self.topic)
            except Exception:  # noqa: BLE001 - the client may already be closing
                pass
        progress.running = 0
        return progress

    def _threads(self) -> int:
        try:
            return max(sum(self.client.nthreads().values()), 1)
        except Exception:  # noqa: BLE001
            return 1

    def _record(self, future: Any, job: FitJob, progress: Progress) -> None:
        with self._lock:
            starts = self.starts.get(job.fit_id, 1)
            worker = self.running.pop(job.fit_id, ("", 0.0))[0]
        if future.status == "finished":
            result = future.result()
            result["row"]["starts"] = max(starts, 1)
            if starts > 1:
                lost = f"{starts - 1} worker(s) died while running this fit; Dask ran it again"
                result["row"]["reason"] = "; ".join(r for r in (result["row"]["reason"], lost) if r)
        else:
            try:
                error = future.exception()
            except BaseException as cancelled:  # noqa: BLE001 - a cancelled future has no exception to give
                error = cancelled
            result = {"row": _lost_row(job, starts, worker, reason_of(error) + (
                " (the fit was started on a worker that died each time Dask tried it: an out-of-memory kill "
                "or a crash of the process; see the workers' logs)" if type(error).__name__ == "KilledWorker"
                else ""))}
        row = self.store.write(result)
        progress.finished_here += 1
        status = row["status"]
        if status == "ok":
            progress.ok += 1
        elif status == "lost":
            progress.lost += 1
        else:
            progress.failed += 1

    def _check_workers(self, since: float | None) -> float | None:
        if self._threads_or_zero() > 0:
            return None
        now = time.monotonic()
        if since is None:
            return now
        if now - since > self.worker_timeout:
            raise ResilientError(
                f"No Dask worker has been connected for {self.worker_timeout:g} s, so no fit can run. The finished "
                f"fits are in {self.store.out}; start workers (or give no scheduler for a local cluster) and run the "
                "same command again to continue.")
        return since

    def _threads_or_zero(self) -> int:
        try:
            return sum(self.client.nthreads().values())
        except Exception:  # noqa: BLE001
            return 0

    def _check_timeouts(self, pending: dict[Any, FitJob], progress: Progress) -> None:
        if self.fit_timeout is None:
            return
        now = time.monotonic()
        with self._lock:
            late = {fit_id: worker for fit_id, (worker, since) in self.running.items()
                    if now - since > self.fit_timeout}
        for future, job in list(pending.items()):
            if job.fit_id not in late:
                continue
            future.cancel()
            pending.pop(future)
            worker = late[job.fit_id]
            with self._lock:
                self.running.pop(job.fit_id, None)
                starts = self.starts.get(job.fit_id, 1)
            if worker.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
                try:
                    self.client.restart_workers([worker], timeout=60, raise_for_error=False)
                except Exception:  # noqa: BLE001 - a worker that will not restart is the scheduler's to drop
                    pass
            self.store.write({"row": _lost_row(job, starts, worker, (
                f"the fit ran past fit_timeout={self.fit_timeout:g} s; its worker was restarted"))})
            progress.finished_here += 1
            progress.lost += 1


def _lost_row(job: FitJob, starts: int, worker: str, reason: str) -> dict[str, Any]:
    return {"fit_id": job.fit_id, "index": job.index, "status": "lost", "reason": reason,
            "backend": job.backend or "", "chains": job.run.get("chains"), "draws": job.run.get("draws"),
            "random_seed": job.random_seed, "starts": starts, "worker": worker}


def execute(jobs: Iterable[FitJob], store: FitStore, *, total: int | None, client: Any, workers: int | None,
            progressbar: bool, progress_lines: bool, description: str, fit_timeout: float | None,
            worker_timeout: float, max_in_flight: int | None, devices: int = 1) -> Progress:
    """Run ``jobs`` on the cluster ``client`` names (or a local one, with ``devices`` XLA devices per
    worker) into ``store``."""
    progress = Progress(total=total)
    cluster = Cluster(client, workers=workers, devices=devices)
    bar = ProgressBar(progressbar, progress, description, lines=progress_lines)
    try:
        runner = FitRunner(cluster.client, store, max_in_flight=max_in_flight, fit_timeout=fit_timeout,
                           worker_timeout=worker_timeout, progress=bar)
        runner.run(jobs, progress)
    finally:
        bar.close()
        store.close()
        cluster.close()
    return progress
