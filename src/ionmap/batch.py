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
        checked: the m/z values are known to ascend within every spectrum (the reader
            checked them, or a kernel made them), so the kernels skip their own scan of
            the order; False (the default) for a batch made elsewhere.
    """

    index: np.ndarray
    offsets: np.ndarray
    mz: np.ndarray
    mz_starts: np.ndarray
    intensity: np.ndarray
    checked: bool = False

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

    def take(self, rows: np.ndarray) -> SpectrumBatch:
        """The batch of its spectra at positions ``rows`` (ascending): views of this one's
        arrays when they are one contiguous run in processed layout, else copies."""
        rows = np.asarray(rows, np.int64)
        lengths = np.diff(self.offsets)[rows]
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        if rows.size and rows[-1] - rows[0] + 1 == rows.size and not self.shared_mz:
            p0, p1 = int(self.offsets[rows[0]]), int(self.offsets[rows[-1] + 1])
            return SpectrumBatch(self.index[rows[0]:rows[-1] + 1], offsets,
                                 np.asarray(self.mz[p0:p1]), np.ascontiguousarray(offsets[:-1]),
                                 np.asarray(self.intensity[p0:p1]), self.checked)
        within = np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], lengths)
        points = np.repeat(self.offsets[rows], lengths) + within
        if self.shared_mz:
            return SpectrumBatch(self.index[rows], offsets, self.mz, np.zeros(rows.size, np.int64),
                                 np.asarray(self.intensity)[points], self.checked)
        mz_points = np.repeat(self.mz_starts[rows], lengths) + within
        return SpectrumBatch(self.index[rows], offsets, np.asarray(self.mz)[mz_points],
                             np.ascontiguousarray(offsets[:-1]), np.asarray(self.intensity)[points],
                             self.checked)
