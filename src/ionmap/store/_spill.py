"""The spill area of a ``--peaks --features`` conversion: what the first pass keeps of each
unit (a run of image rows) of picked spectra, so that the feature pass reads it instead of
the imzML file.

A unit lives in ``<store>/_work/spill/<unit>/``:

- ``values.npz``: per spectrum (n of them, in the unit's order) ``index`` int64 (file
  index), ``tic``, ``sums`` (n, K), and when present ``norm``, ``mass_error`` (3, n),
  float64, exactly as computed;
- ``offsets.npy`` int64 (n + 1,), ``mz.bin`` and ``intensity.bin``: the picked peaks as
  flat raw arrays in the dtypes of ``meta.json`` (written last), appended batch by batch
  while they are computed and memory-mapped when read, so neither side holds a unit.

Local stores only (the caller keeps the two-pass path for object stores); every worker
that writes the store sees it. Which units are complete is recorded in the store's
progress by the driver, not here: a unit directory left by an interrupted task is simply
written again.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._files import local_path
from ..batch import SpectrumBatch
from ..errors import StorageError
from ._layout import WORK

SPILL = "spill"


def spill_root(url: str) -> Path | None:
    """The spill area of the store at ``url``, or None for a store that is not local."""
    path = local_path(os.fspath(url))
    return None if path is None else Path(path) / WORK / SPILL


def delete_spill(url: str) -> None:
    """Remove the spill area of a local store (nothing there is fine), and ``_work`` when
    it is left empty."""
    root = spill_root(url)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)
        with contextlib.suppress(OSError):  # _work itself when nothing else is in it
            root.parent.rmdir()


@contextlib.contextmanager
def _spill_errors(url: str, what: str):
    """A failing spill file (full disk, denied access) as a one-line StorageError."""
    try:
        yield
    except OSError as exc:
        raise StorageError(url, f"{what} failed: {exc.strerror or exc}") from exc


class SpillWriter:
    """Writes one unit: :meth:`append` per batch of picked peaks with their per-spectrum
    values, :meth:`close` once (the unit is complete when it returned)."""

    def __init__(self, url: str, unit: int) -> None:
        root = spill_root(url)
        if root is None:
            raise ValueError(f"{url}: spilling needs a local store")
        self.url, self.dir = url, root / str(int(unit))
        with _spill_errors(url, "spill"):
            shutil.rmtree(self.dir, ignore_errors=True)  # what an interrupted task left
            self.dir.mkdir(parents=True)
            self._mz = open(self.dir / "mz.bin", "wb")  # noqa: SIM115 - closed in close()
            self._intensity = open(self.dir / "intensity.bin", "wb")  # noqa: SIM115
        self._lengths: list[np.ndarray] = []
        self._values: dict[str, list[np.ndarray]] = {"index": []}
        self._dtypes: dict[str, str] = {}

    def append(self, peaks: SpectrumBatch, **values: np.ndarray | None) -> None:
        """Peaks (processed layout, as :func:`ionmap.kernels.pick_peaks_batch` gives them)
        and per-spectrum arrays (spectra along the last axis; None: not computed)."""
        self._dtypes.setdefault("mz", peaks.mz.dtype.str)
        self._dtypes.setdefault("intensity", peaks.intensity.dtype.str)
        n = int(peaks.offsets[-1])
        with _spill_errors(self.url, "spill"):
            np.ascontiguousarray(peaks.mz[:n]).tofile(self._mz)
            np.ascontiguousarray(peaks.intensity[:n]).tofile(self._intensity)
        self._lengths.append(np.diff(peaks.offsets))
        self._values["index"].append(np.asarray(peaks.index, np.int64))
        for name, value in values.items():
            if value is not None:
                self._values.setdefault(name, []).append(value)

    def close(self) -> None:
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)
        with _spill_errors(self.url, "spill"):
            self._mz.close()
            self._intensity.close()
            np.save(self.dir / "offsets.npy", np.r_[0, np.cumsum(lengths)].astype(np.int64))
            np.savez(self.dir / "values.npz",
                     **{k: np.concatenate(v, axis=-1) if v else np.zeros(0, np.int64)
                        for k, v in self._values.items()})  # a unit without spectra too
            (self.dir / "meta.json").write_text(json.dumps(self._dtypes))


@dataclass(frozen=True)
class Spill:
    """A unit as written: ``peaks`` (memory-mapped flat arrays, processed layout) and
    ``values`` (name -> per-spectrum array, spectra along the last axis)."""

    peaks: SpectrumBatch
    values: dict[str, np.ndarray]


def _mapped(path: Path, dtype: str) -> np.ndarray:
    if path.stat().st_size == 0:  # an empty file cannot be mapped
        return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def read_spill(url: str, unit: int) -> Spill:
    """The spilled unit ``unit`` of the store at ``url``."""
    directory = spill_root(url) / str(int(unit))
    with _spill_errors(url, "reading the spill"):
        dtypes = json.loads((directory / "meta.json").read_text())
        with np.load(directory / "values.npz") as z:
            values = {k: z[k] for k in z.files}
        offsets = np.load(directory / "offsets.npy")
        mz = _mapped(directory / "mz.bin", dtypes.get("mz", "<f8"))
        intensity = _mapped(directory / "intensity.bin", dtypes.get("intensity", "<f8"))
    return Spill(SpectrumBatch(values.pop("index"), offsets, mz,
                               np.ascontiguousarray(offsets[:-1]), intensity), values)

