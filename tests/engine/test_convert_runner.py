"""The Dask driver: every task reported once, in the driver, locally and on a cluster."""
from __future__ import annotations

import gc
import threading
import weakref

import dask
import pytest

from ionmap import InputError
from ionmap.engine._run import ProgressBar, run_tasks, scheduler_client


def _square(x):
    return x * x


def _fail(x):
    if x == 3:
        raise InputError("/data/x.imzML", "spectrum 3 is broken")
    return x


def _tasks(fn, n, tag):
    return [dask.delayed(fn, pure=False)(i, dask_key_name=f"{tag}-{i}") for i in range(n)]


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as c:
        yield c


@pytest.mark.parametrize("mode", ["threads", "sync", "cluster"])
def test_every_task_is_reported_once_in_the_driver(mode, request):
    seen = []
    driver = threading.get_ident()

    def on_done(i, result):
        assert threading.get_ident() == driver
        seen.append((i, result))

    if mode == "cluster":
        address = request.getfixturevalue("cluster").scheduler_address
        with scheduler_client(address) as client:
            results = run_tasks(_tasks(_square, 12, "sq-c"), on_done, client=client)
    else:
        results = run_tasks(_tasks(_square, 12, f"sq-{mode}"), on_done, client=mode,
                            workers=2)
    assert results == [i * i for i in range(12)]
    assert sorted(seen) == [(i, i * i) for i in range(12)]


class _Part:
    """A large task result (an axis part per unit, say), weak-referenceable."""

    def __init__(self, x):
        self.x = x


@pytest.mark.parametrize("mode", ["sync", "threads", "cluster"])
def test_results_not_kept_are_let_go(mode, request):
    """keep=False: each result reaches on_done and is not held afterwards (sync: not even
    while later tasks run), so one result per unit of a file is never held at once."""
    refs, seen = [], []

    def on_done(i, part):
        gc.collect()
        if mode == "sync":  # one at a time: every earlier result is gone already
            assert all(r() is None for r in refs), i
        refs.append(weakref.ref(part))
        seen.append((i, part.x))

    tasks = [dask.delayed(_Part, pure=False)(i, dask_key_name=f"part-{mode}-{i}")
             for i in range(8)]
    if mode == "cluster":
        address = request.getfixturevalue("cluster").scheduler_address
        with scheduler_client(address) as client:
            results = run_tasks(tasks, on_done, client=client, keep=False)
    else:
        results = run_tasks(tasks, on_done, client=mode, workers=2, keep=False)
    gc.collect()
    assert results == [None] * 8 and sorted(seen) == [(i, i) for i in range(8)]
    if mode != "cluster":  # in-process workers of the cluster may cache a little longer
        assert all(r() is None for r in refs)


def test_errors_reach_the_caller_intact(cluster):
    with pytest.raises(InputError, match="spectrum 3 is broken") as info:
        run_tasks(_tasks(_fail, 6, "fail-t"), lambda i, r: None, workers=2)
    assert info.value.path == "/data/x.imzML"
    with scheduler_client(cluster.scheduler_address) as client:
        with pytest.raises(InputError, match="spectrum 3 is broken"):
            run_tasks(_tasks(_fail, 6, "fail-c"), lambda i, r: None, client=client)


def test_scheduler_from_environment(monkeypatch, cluster):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
    with scheduler_client(None) as client:
        assert client is not None and client.scheduler.address == cluster.scheduler_address
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
    with scheduler_client(None) as client:
        assert client is None


def test_progress_bar_counts(capsys):
    with ProgressBar(True) as bar:
        bar.phase("work", 10)
        run_tasks(_tasks(_square, 5, "pb"), lambda i, r: bar.advance(2), workers=2)
        assert bar._progress.tasks[0].completed == 10
    with ProgressBar(False) as bar:  # disabled: a no-op
        bar.phase("work", 3)
        bar.advance(3)
