"""The one data structure passed from the reader to the kernels and the engine.

A batch holds many spectra as flat arrays plus offsets, so that compiled kernels can work on
all of them in one call without a Python loop per spectrum.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SpectrumBatch:
    """Spectra ``index[k]`` of one file as flat arrays.

    Spectrum ``k`` of the batch has intensities ``intensity[offsets[k]:offsets[k + 1]]`` and
    m/z values ``mz[mz_starts[k]:mz_starts[k] + (offsets[k + 1] - offsets[k])]`` (m/z in Th,
    ascending within a spectrum).

    - processed mode and peak lists: ``mz`` has the same layout as ``intensity`` and
      ``mz_starts == offsets[:-1]``;
    - continuous mode: ``mz`` is the file's single shared m/z array, decoded once, and every
      ``mz_starts`` is 0.

    Attributes:
        index: int64 (n,), the spectra's 0-based indices in the file.
        offsets: int64 (n + 1,), offsets[0] == 0, offsets[-1] == len(intensity).
        mz: float32 or float64 m/z values.
        mz_starts: int64 (n,), start of each spectrum's m/z values in ``mz``.
        intensity: intensities (float32, float64 or an integer dtype as stored).
    """

    index: np.ndarray
    offsets: np.ndarray
    mz: np.ndarray
    mz_starts: np.ndarray
    intensity: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    @property
    def lengths(self) -> np.ndarray:
        """Number of points of each spectrum, int64 (n,)."""
        return np.diff(self.offsets)

    @property
    def shared_mz(self) -> bool:
        """True when all spectra share one m/z array (continuous mode)."""
        # Processed batches whose starts are all 0 have only empty spectra before the last,
        # so both readings of the layout agree there.
        return not self.mz_starts.any()

    def spectrum(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(mz, intensity) views of the batch's k-th spectrum."""
        a, b = int(self.offsets[k]), int(self.offsets[k + 1])
        s = int(self.mz_starts[k])
        return self.mz[s : s + (b - a)], self.intensity[a:b]
