"""Run a list of Dask tasks on the local threaded scheduler or a distributed cluster.

Both paths report every finished task to the caller as it completes (for the progress bar
and the resume checkpoints), in the driver process, so the caller never needs locks.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import dask
from dask.callbacks import Callback
from dask.delayed import Delayed

from ..errors import StorageError

#: How often distributed retries a task whose worker died (tasks are idempotent).
RETRIES = 2


@contextmanager
def scheduler_client(scheduler: Any = None):
    """Yield a ``distributed.Client`` for ``scheduler``, or None for the local threads.

    ``scheduler``: None (the ``DASK_SCHEDULER_ADDRESS`` variable if set, else local
    threads), ``"threads"``, ``"sync"`` (one thread, for debugging), a scheduler address
    such as ``tcp://10.0.0.5:8786``, or an existing ``distributed.Client`` (left open).
    """
    if scheduler is None:
        scheduler = os.environ.get("DASK_SCHEDULER_ADDRESS") or None
    if scheduler is None or scheduler in ("threads", "sync"):
        yield None if scheduler is None else scheduler
        return
    from distributed import Client

    if isinstance(scheduler, Client):
        yield scheduler
        return
    try:
        client = Client(scheduler, timeout="30s")
    except (OSError, TimeoutError) as exc:
        raise StorageError(str(scheduler), f"cannot reach the Dask scheduler: {exc}") from None
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
) -> list[Any]:
    """Compute ``tasks`` and call ``on_done(i, result)`` in this process as each finishes.

    Args:
        client: a ``distributed.Client``; None or ``"threads"`` for the local threaded
            scheduler with ``workers`` threads (default: all cores), ``"sync"`` for one
            thread in this process.
    Returns the results in task order. The first failing task's exception propagates
    (remaining distributed tasks are cancelled).
    """
    if not tasks:
        return []
    if client is None or isinstance(client, str):
        return _run_local(tasks, on_done, "sync" if client == "sync" else "threads", workers)
    return _run_distributed(tasks, on_done, client)


def _run_local(tasks, on_done, scheduler, workers):
    index = {t.key: i for i, t in enumerate(tasks)}

    def posttask(key, result, dsk, state, worker_id):
        i = index.get(key)
        if i is not None:
            on_done(i, result)

    with Callback(posttask=posttask):
        if scheduler == "sync":
            return list(dask.compute(*tasks, scheduler="sync"))
        # A pool of this run's own, shut down (waiting for the tasks still running) before
        # the first error propagates: a failed run leaves no task writing to its store.
        with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
            return list(dask.compute(*tasks, scheduler="threads", pool=pool))


def _run_distributed(tasks, on_done, client):
    from distributed import as_completed

    futures = client.compute(list(tasks), retries=RETRIES)
    index = {f.key: i for i, f in enumerate(futures)}
    results: list[Any] = [None] * len(futures)
    try:
        for future in as_completed(futures):
            i = index[future.key]
            results[i] = future.result()
            on_done(i, results[i])
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
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

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
