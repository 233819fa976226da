"""The metadata sidecar: used on reopen, invalidated by size, mtime and UUID changes."""
from __future__ import annotations

import os
import re
import uuid

import numpy as np
import pytest

import ionmap
from ionmap.errors import TruncatedIbdError
from ionmap.imzml import _cache as cache
from ionmap.imzml import _file as imzml_file
from ionmap.imzml import _opener as opener


@pytest.fixture
def parses(monkeypatch):
    """Counts XML parses; ``parses.forbid()`` makes any parse fail the test."""
    class Counter:
        n = 0
        allowed = True

        def forbid(self):
            self.allowed = False

    counter = Counter()
    real = opener.xml.parse

    def counting(*args, **kwargs):
        assert counter.allowed, "the XML was parsed although the sidecar should serve"
        counter.n += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(opener.xml, "parse", counting)
    return counter


def same(a, b) -> None:
    assert a.summary() == b.summary()
    for name in ("coordinates", "mz_offsets", "mz_lengths", "intensity_offsets",
                 "intensity_lengths"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for i in range(a.n_spectra):
        for x, y in zip(a.spectrum(i), b.spectrum(i)):
            np.testing.assert_array_equal(x, y)


def sidecar(path) -> str:
    return str(path) + cache.SUFFIX


def test_sidecar_written_beside_and_used(write_imzml, parses):
    w = write_imzml()
    first = ionmap.open_imzml(w.path)
    assert parses.n == 1 and os.stat(sidecar(w.path)).st_mode & 0o777 == 0o644
    parses.forbid()
    second = ionmap.open_imzml(w.path)
    same(first, second)


@pytest.mark.parametrize("change", ["mtime", "size", "uuid"])
def test_sidecar_invalidated(write_imzml, parses, change):
    w = write_imzml(seed=1)
    ionmap.open_imzml(w.path)
    st = os.stat(w.path)
    if change == "mtime":
        os.utime(w.path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    elif change == "size":
        with open(w.path, "ab") as fh:
            fh.write(b"\n")
    else:  # same size and mtime, new UUID in both files
        new = uuid.uuid4()
        data = re.sub(rb"\{[0-9A-F-]{36}\}", b"{" + str(new).upper().encode() + b"}",
                      w.path.read_bytes())
        w.path.write_bytes(data)
        os.utime(w.path, ns=(st.st_atime_ns, st.st_mtime_ns))
        ibd = w.path.with_suffix(".ibd")
        ibd.write_bytes(new.bytes + ibd.read_bytes()[16:])
    f = ionmap.open_imzml(w.path)
    assert parses.n == 2
    if change == "uuid":
        assert f.uuid == str(new)


def test_derived_values_are_cached(write_imzml, parses, monkeypatch):
    w = write_imzml(points=40)
    data = re.sub(rb'\s*<cvParam[^>]*accession="MS:1000[15]2[78]"[^>]*/>', b"",
                  w.path.read_bytes())  # no lowest/highest m/z, no profile/centroid
    w.path.write_bytes(data)
    f = ionmap.open_imzml(w.path)

    def no_writes(*args, **kwargs):
        raise AssertionError("a property getter wrote the sidecar")
    with monkeypatch.context() as m:
        m.setattr(cache, "save", no_writes)
        mz_range, kind = f.mz_range, f.spectrum_type  # derived from the data by the getters
        assert kind == "centroid" and f.spectrum_type_detected and f.mz_range == mz_range
    assert f.save_metadata() == sidecar(w.path)  # kept explicitly
    parses.forbid()
    monkeypatch.setattr(imzml_file.ImzMLFile, "_data_mz_range", None)
    monkeypatch.setattr(imzml_file.ImzMLFile, "_detect_spectrum_type", None)
    g = ionmap.open_imzml(w.path)
    assert g.mz_range == mz_range and g.spectrum_type == kind


def test_user_cache_dir_when_beside_is_not_writable(write_imzml, parses):
    w = write_imzml()
    os.mkdir(sidecar(w.path))  # something unreplaceable where the sidecar would go
    first = ionmap.open_imzml(w.path)
    in_cache = cache.locations(str(w.path))[1]
    assert in_cache.startswith(os.environ["XDG_CACHE_HOME"]) and os.path.isfile(in_cache)
    parses.forbid()
    same(first, ionmap.open_imzml(w.path))


def test_corrupt_sidecar_is_ignored(write_imzml, parses):
    w = write_imzml()
    with open(sidecar(w.path), "wb") as fh:
        fh.write(b"PK\x03\x04 not really a sidecar")
    ionmap.open_imzml(w.path)
    assert parses.n == 1
    parses.forbid()
    ionmap.open_imzml(w.path)  # rewritten and now valid


def test_no_cache_writes_nothing(write_imzml, parses):
    w = write_imzml()
    ionmap.open_imzml(w.path, cache=False)
    ionmap.open_imzml(w.path, cache=False)
    assert parses.n == 2
    assert not os.path.exists(sidecar(w.path))
    assert not any(os.scandir(os.environ["XDG_CACHE_HOME"]))


def test_cached_metadata_still_validated(write_imzml):
    w = write_imzml()
    ionmap.open_imzml(w.path)
    ibd = w.path.with_suffix(".ibd")
    ibd.write_bytes(ibd.read_bytes()[:-8])
    with pytest.raises(TruncatedIbdError):
        ionmap.open_imzml(w.path)
