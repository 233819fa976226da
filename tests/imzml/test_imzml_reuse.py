"""Batches read into a thread's kept buffers (``reuse``) equal fresh ones."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import ionmap
from ionmap.imzml import _file


def _values(batch):
    return batch.index.copy(), batch.offsets.copy(), batch.mz.copy(), batch.intensity.copy()


@pytest.mark.parametrize("mode", ["processed", "continuous"])
def test_reuse_reads_equal_fresh_reads_and_share_the_buffers(write_imzml, mode):
    f = ionmap.open_imzml(write_imzml(shape=(6, 7), points=50, seed=5, mode=mode,
                                      spectrum_type="profile").path, cache=False)
    fresh = [_values(b) for b in f.iter_batches(max_bytes=900)]
    assert len(fresh) > 3
    seen = set()
    for want, batch in zip(fresh, f.iter_batches(max_bytes=900, reuse=True)):
        for got, w in zip(_values(batch), want):
            np.testing.assert_array_equal(got, w)
        seen.add(batch.intensity.__array_interface__["data"][0])
    # consecutive batches of a size are written over the same memory, not fresh arrays
    assert len(seen) < len(fresh)
    # a fresh read after them is untouched by later reuse reads
    keep = f.read_batch([0, 1, 2])
    before = keep.intensity.copy()
    f.read_batch([5, 6, 7], reuse=True)
    np.testing.assert_array_equal(keep.intensity, before)


def test_reuse_buffers_are_per_thread_and_bounded(write_imzml, monkeypatch):
    f = ionmap.open_imzml(write_imzml(shape=(8, 8), points=60, seed=2).path, cache=False)
    want = [f.read_batch([i, i + 1]).intensity.copy() for i in range(0, 60, 2)]
    got: dict[int, list] = {0: [], 1: []}

    def read(t):
        for i in range(0, 60, 2):
            got[t].append(f.read_batch([i, i + 1], reuse=True).intensity.copy())

    threads = [threading.Thread(target=read, args=(t,)) for t in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for t in got:
        for g, w in zip(got[t], want):
            np.testing.assert_array_equal(g, w)
    monkeypatch.setattr(_file, "KEPT_BYTES", 16)  # above the bound: fresh arrays
    a = f.read_batch([0, 1, 2], reuse=True)
    b = f.read_batch([3, 4, 5], reuse=True)
    assert not np.shares_memory(a.intensity, b.intensity)
