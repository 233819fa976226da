"""``convert --peaks --features`` on profile spectra reads and picks every spectrum once.

Pass 1 spills each unit of rows (window sums, TIC, norm, mass errors, picked peaks) under
``<store>/_work/spill`` and builds the feature axis; the bands read the spill. References:
the two-pass path (what object stores still run: ``spill_root`` patched to None), whose
features equal a brute-force pyimzML reference (test_convert.test_features_equal_reference),
and the uninterrupted run for resumes. "Equal" is the whole store: the same files, the same
root attributes, every array element for element (NaN where NaN).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

import ionmap
from ionmap import kernels
from ionmap import store as st
from ionmap.engine import _convert as engine_convert
from ionmap.errors import StorageError
from ionmap.synth import make_sample

SPILL_ROWS, BAND_ROWS = 7, 3  # a band reads one or two spilled units


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    """A small seeded continuous profile section (24 x 60 pixels)."""
    return make_sample(tmp_path_factory.mktemp("onepass"), "p", seed=11, mode="continuous",
                       spectrum_type="profile", shape=(24, 60), rim_um=10.0)


@pytest.fixture
def rows(monkeypatch):
    """Units of SPILL_ROWS rows (chosen without the features), bands of BAND_ROWS."""
    monkeypatch.setattr(engine_convert, "choose_band_rows",
                        lambda shape, n_planes, nbytes: SPILL_ROWS if n_planes < 40 else BAND_ROWS)


def _arrays(group: zarr.Group, prefix: str = ""):
    for name, member in group.members():
        if isinstance(member, zarr.Group):
            yield from _arrays(member, f"{prefix}{name}/")
        else:
            yield f"{prefix}{name}", member[...]


def assert_same_store(a: Path, b: Path) -> None:
    assert sorted(p.relative_to(a) for p in a.rglob("*")) == sorted(
        p.relative_to(b) for p in b.rglob("*"))
    ga, gb = zarr.open_group(a, mode="r"), zarr.open_group(b, mode="r")
    assert ga.attrs.asdict() == gb.attrs.asdict()
    arrays = dict(_arrays(gb))
    assert arrays
    for name, got in _arrays(ga):
        assert got.dtype == arrays[name].dtype, name
        np.testing.assert_array_equal(got, arrays[name], err_msg=name)


def _two_pass(monkeypatch, imzml, out, **options):
    with monkeypatch.context() as m:
        m.setattr(st, "spill_root", lambda url: None)
        return ionmap.convert(imzml, out, **options)


@pytest.mark.parametrize("options", [
    dict(axis_sample=None),
    dict(axis_sample=300, normalize="rms"),  # the axis from a sample; scratch kept till the end
    dict(recalibrate="none", normalize="tic"),
])
def test_one_pass_equals_two_pass_and_picks_once(profile, rows, monkeypatch, tmp_path,
                                                   options):
    options = dict(progress=False, peaks=True, features=True, **options)
    picked = []
    pick = kernels.pick_peaks_batch

    def counting(batch, *args, **kwargs):
        picked.append(batch.index.copy())
        return pick(batch, *args, **kwargs)

    monkeypatch.setattr(kernels, "pick_peaks_batch", counting)
    one = ionmap.convert(profile.imzml, tmp_path / "one.zarr", **options)
    once = np.concatenate(picked)
    picked.clear()
    two = _two_pass(monkeypatch, profile.imzml, tmp_path / "two.zarr", **options)
    # every spectrum picked exactly once; the two-pass run picks the axis sample again
    n = one.attrs["source"]["n_spectra"]
    np.testing.assert_array_equal(np.sort(once), np.arange(n))
    assert len(np.concatenate(picked)) == n + min(n, one.attrs["parameters"]["axis_sample"] or n)
    assert one.attrs["layout"]["band_rows"] == BAND_ROWS and len(one.features_mz) > 10
    assert one.complete and not (tmp_path / "one.zarr" / st.WORK).exists()
    assert_same_store(tmp_path / "one.zarr", tmp_path / "two.zarr")
    assert two.complete


class Interrupt(KeyboardInterrupt):
    pass


@pytest.mark.parametrize("task", ["_spill_task", "_band_task"])
def test_interrupted_one_pass_resumes_without_rereading(profile, rows, monkeypatch, tmp_path,
                                                         task):
    """Ctrl-C during the third spill task (or band task): the store is incomplete, its
    progress lists what was spilled (or written); the resumed run spills (or writes) only
    the rest and equals an uninterrupted run."""
    options = dict(progress=False, peaks=True, features=True, axis_sample=None, workers=1)
    whole = tmp_path / "whole.zarr"
    ionmap.convert(profile.imzml, whole, **options)
    original = getattr(engine_convert, task)
    calls: list[int] = []
    interrupt = [True]

    def flaky(src, unit, *args):
        calls.append(unit.index)
        if len(calls) == 3 and interrupt and interrupt.pop():
            raise Interrupt
        return original(src, unit, *args)

    monkeypatch.setattr(engine_convert, task, flaky)
    out = tmp_path / "out.zarr"
    with pytest.raises(Interrupt):
        ionmap.convert(profile.imzml, out, **options)
    with pytest.raises(StorageError, match="incomplete"):
        ionmap.open_result(out)
    progress = st.read_root_attrs(st.open_store(out))["progress"]
    key = "spilled" if task == "_spill_task" else "bands_done"
    assert progress[key] == sorted(calls[:2])
    assert progress["spill_rows"] == SPILL_ROWS
    spill = st.spill_root(str(out))
    assert all((spill / str(u) / "meta.json").is_file() for u in progress["spilled"])
    calls.clear()
    spills = []
    spill_task = engine_convert._spill_task
    monkeypatch.setattr(engine_convert, "_spill_task",
                        lambda src, unit, *a: spills.append(unit.index) or spill_task(src, unit, *a))
    res = ionmap.convert(profile.imzml, out, resume=True, **options)
    n_units = -(-res.shape[0] // SPILL_ROWS)
    if task == "_spill_task":
        assert sorted(spills) == [u for u in range(n_units) if u not in progress["spilled"]]
    else:  # every unit was spilled: nothing is read or picked again
        assert spills == [] and sorted(calls) == [
            b for b in range(res.attrs["layout"]["n_bands"]) if b not in progress["bands_done"]]
    assert res.complete and not (out / st.WORK).exists()
    assert_same_store(out, whole)


def test_worker_processes_read_the_spill(profile, rows, tmp_path):
    """On a LocalCluster of worker processes the spill tasks and the bands that read the
    spilled units run in other processes than the driver: the same store as local threads."""
    distributed = pytest.importorskip("distributed")
    options = dict(progress=False, peaks=True, features=True, axis_sample=None)
    ionmap.convert(profile.imzml, tmp_path / "threads.zarr", **options)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        ionmap.convert(profile.imzml, tmp_path / "cluster.zarr",
                       scheduler=cluster.scheduler_address, **options)
    assert_same_store(tmp_path / "cluster.zarr", tmp_path / "threads.zarr")
