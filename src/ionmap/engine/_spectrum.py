"""The mean spectrum of a file, stored by convert so that the report only draws it."""
from __future__ import annotations

from typing import Any

import numpy as np

#: Spectra read for the mean spectrum (evenly spread over the file).
MEAN_SPECTRUM_SPECTRA = 400
#: Bins of the mean spectrum, evenly spaced in log m/z (constant ppm width).
MEAN_SPECTRUM_BINS = 20_000


def mean_spectrum(src: Any) -> tuple[np.ndarray, np.ndarray, dict]:
    """Mean spectrum of up to :data:`MEAN_SPECTRUM_SPECTRA` spectra spread evenly over an
    open imzML file, summed into :data:`MEAN_SPECTRUM_BINS` log-spaced m/z bins (one
    batch read, vectorised binning). Returns (bin centre m/z in Th, mean intensity per
    spectrum, info); both arrays empty when every spectrum is empty."""
    info = {"spectra": 0, "bins": 0,
            "method": "spectra evenly spread over the file, summed in log-spaced m/z bins "
                      "(constant ppm width), divided by the spectra read"}
    if src.mz_range is None:
        return np.zeros(0), np.zeros(0), info
    index = np.unique(np.linspace(0, src.n_spectra - 1,
                                  min(MEAN_SPECTRUM_SPECTRA, src.n_spectra)).astype(np.int64))
    batch = src.read_batch(index)
    lo, hi = src.mz_range
    lengths = batch.lengths
    # Every point's m/z, whether the batch shares one m/z array or not.
    point = np.arange(len(batch.intensity)) - np.repeat(batch.offsets[:-1], lengths)
    mz = batch.mz[np.repeat(batch.mz_starts, lengths) + point]
    edges = np.geomspace(max(lo, 1e-3), max(hi, lo * 1.001), MEAN_SPECTRUM_BINS + 1)
    sums, _ = np.histogram(mz, bins=edges, weights=batch.intensity.astype(np.float64))
    info.update(spectra=int(len(index)), bins=MEAN_SPECTRUM_BINS)
    return np.sqrt(edges[:-1] * edges[1:]), sums / max(len(index), 1), info
