"""Run a list of Dask tasks on the local threaded scheduler or a distributed cluster.

Both paths report every finished task to the caller as it completes (for the progress bar
and the resume checkpoints), in the driver process, so the caller never needs locks.
"""
from __future__ import annotations

import os
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import dask
import dask.local
import dask.multiprocessing
import dask.threaded
from dask.callbacks import Callback
from dask.delayed import Delayed

from ..errors import InputError, StorageError

#: How often distributed retries a task whose worker died (tasks are idempotent).
RETRIES = 2


#: Dask's names of its local schedulers -> the one ionmap runs ("sync", "threads",
#: "processes").
LOCAL_SCHEDULERS = {
    "sync": "sync", "synchronous": "sync", "single-threaded": "sync",
    "threads": "threads", "threading": "threads",
    "processes": "processes", "multiprocessing": "processes",
}
#: Seconds to wait for a distributed scheduler to answer before giving up.
CONNECT_TIMEOUT_S = 3


def check_scheduler(scheduler: Any) -> None:
    """Refuse a scheduler string that is neither a local scheduler name nor an address with
    its port (before any work starts); other values are checked on connecting."""
    if not isinstance(scheduler, str) or scheduler.strip().lower() in LOCAL_SCHEDULERS:
        return
    from distributed.comm import parse_address, parse_host_port

    try:
        protocol, location = parse_address(scheduler)
        if protocol in ("tcp", "tls", "ws", "wss", "ucx"):
            parse_host_port(location)
    except ValueError:
        raise InputError(scheduler, "not a Dask scheduler: give an address with its port "
                         "(e.g. tcp://127.0.0.1:8786) or a local scheduler ("
                         f"{', '.join(LOCAL_SCHEDULERS)})") from None


@contextmanager
def scheduler_client(scheduler: Any = None):
    """Yield a ``distributed.Client`` for ``scheduler``, or the name of a local scheduler.

    ``scheduler``: None (the ``DASK_SCHEDULER_ADDRESS`` variable if set, else local
    threads, yielded as None), a Dask local scheduler name (``"threads"``,
    ``"processes"``, ``"synchronous"``/``"sync"``/``"single-threaded"``; yielded as
    ``"threads"``, ``"processes"`` or ``"sync"``), a scheduler address with its port such
    as ``tcp://10.0.0.5:8786``, or an existing ``distributed.Client`` (left open). A
    scheduler that does not answer within :data:`CONNECT_TIMEOUT_S` s raises StorageError.
    """
    if scheduler is None:
        scheduler = os.environ.get("DASK_SCHEDULER_ADDRESS") or None
    if scheduler is None:
        yield None
        return
    if isinstance(scheduler, str) and scheduler.strip().lower() in LOCAL_SCHEDULERS:
        yield LOCAL_SCHEDULERS[scheduler.strip().lower()]
        return
    from distributed import Client

    if isinstance(scheduler, Client):
        yield scheduler
        return
    check_scheduler(scheduler)
    try:
        client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError) as exc:
        raise StorageError(str(scheduler), f"cannot reach the Dask scheduler (no answer "
                           f"within {CONNECT_TIMEOUT_S} s): {exc}") from None
    try:
        yield client
    finally:
        client.close()


def n_threads(client: Any = None, workers: int | None = None) -> int:
    """Threads that run tasks: the cluster's total, else ``workers`` or the core count."""
    if client is not None and not isinstance(client, str):
        return max(1, sum(client.nthreads().values()))
    if client == "sync":
        return 1
    return workers or os.cpu_count() or 1


def run_tasks(
    tasks: Sequence[Delayed],
    on_done: Callable[[int, Any], None],
    *,
    client: Any = None,
    workers: int | None = None,
    keep: bool = True,
) -> list[Any]:
    """Compute ``tasks`` and call ``on_done(i, result)`` in this process as each finishes.

    Args:
        client: a ``distributed.Client``; None or ``"threads"`` for the local threaded
            scheduler with ``workers`` threads (default: all cores), ``"processes"`` for
            ``workers`` local processes, ``"sync"`` for one thread in this process.
        keep: False hands each result to ``on_done`` only and lets it go (returns Nones), so
            that many large results (e.g. one per unit of a file) are never held together.
    Returns the results in task order. The first failing task's exception propagates
    (remaining distributed tasks are cancelled).
    """
    if not tasks:
        return []
    if client is None or isinstance(client, str):
        return _run_local(tasks, on_done, client or "threads", workers, keep)
    return _run_distributed(tasks, on_done, client, keep)


def _dropped(result: Any) -> None:
    """A task's result let go: the scheduler frees it once this has run."""


def _run_local(tasks, on_done, scheduler, workers, keep):
    index = {t.key: i for i, t in enumerate(tasks)}
    if not keep:  # the outputs are these; the tasks' own results are intermediates
        tasks = [dask.delayed(_dropped, pure=False)(t) for t in tasks]

    def posttask(key, result, dsk, state, worker_id):
        i = index.get(key)
        if i is not None:
            on_done(i, result)

    # The schedulers are passed as functions, not names: a name makes Dask import
    # ``distributed`` to look for a default client (0.3 s, once per process).
    with Callback(posttask=posttask):
        if scheduler == "sync":
            return list(dask.compute(*tasks, scheduler=dask.local.get_sync))
        if scheduler == "processes":
            return list(dask.compute(*tasks, scheduler=dask.multiprocessing.get,
                                     num_workers=workers or os.cpu_count() or 1))
        # A pool of this run's own, shut down (waiting for the tasks still running) before
        # the first error propagates: a failed run leaves no task writing to its store.
        with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
            return list(dask.compute(*tasks, scheduler=dask.threaded.get, pool=pool))


def _run_distributed(tasks, on_done, client, keep):
    futures = client.compute(list(tasks), retries=RETRIES)
    index = {f.key: i for i, f in enumerate(futures)}
    results: list[Any] = [None] * len(futures)
    # Each future puts itself in the queue once finished, erred or cancelled (the client
    # calls back as soon as the scheduler reports it). Not ``distributed.as_completed``:
    # with another Client in the process (a notebook's, or the one that started a
    # LocalCluster) its wake-ups came up to 4 s late, 3.9 s of a 10 s conversion.
    finished: queue.SimpleQueue = queue.SimpleQueue()
    for future in futures:
        future.add_done_callback(finished.put)
    try:
        for _ in futures:
            future = finished.get()
            i = index[future.key]
            result = future.result()
            on_done(i, result)
            if keep:
                results[i] = result
            del result
            future.release()
    except BaseException:
        client.cancel(futures)
        raise
    return results


class ProgressBar:
    """A rich progress bar on stderr (local and distributed alike); silent when disabled."""

    def __init__(self, enabled: bool = True) -> None:
        self._progress = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(),
                console=Console(stderr=True), transient=False,
            )
        self._task = None

    def __enter__(self) -> ProgressBar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def phase(self, description: str, total: int) -> None:
        """Start a new bar of ``total`` units (e.g. spectra)."""
        if self._progress is not None:
            self._task = self._progress.add_task(description, total=total)

    def advance(self, amount: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, amount)
