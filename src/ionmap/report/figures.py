"""Figures of a result as PNG bytes (matplotlib, Agg; no display needed).

Images are drawn in the MSI pixel frame (x right, y down, 0-based), off-tissue pixels grey.
"""
from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np

#: Spectra read to draw the mean spectrum (evenly spread over the file).
MEAN_SPECTRUM_SPECTRA = 400
#: Bins of the mean spectrum, evenly spaced in log m/z (constant ppm width).
MEAN_SPECTRUM_BINS = 20_000


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _show(ax, image: np.ndarray, mask: np.ndarray | None, title: str, fig) -> None:
    from ..regions.export import draw_map

    draw_map(fig, ax, np.where(mask, image, np.nan) if mask is not None else image)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def image_grid(images: Mapping[str, np.ndarray], mask: np.ndarray | None = None,
               columns: int = 4) -> bytes:
    """Several (ny, nx) images side by side, each scaled to its own 99.5th percentile."""
    names = list(images)
    cols = max(1, min(columns, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    ny, nx = next(iter(images.values())).shape if names else (1, 1)
    cell = 2.8
    fig = _figure(cell * cols, cell * rows * ny / nx + 0.35 * rows)
    for i, name in enumerate(names):
        _show(fig.add_subplot(rows, cols, i + 1), images[name], mask, name, fig)
    return _png(fig)


def mean_spectrum(mz: np.ndarray, intensity: np.ndarray,
                  targets: Sequence[Mapping] = ()) -> bytes:
    """A mean spectrum (m/z in Th) with the panel's target m/z marked."""
    fig = _figure(9, 3)
    ax = fig.add_subplot()
    ax.plot(mz, intensity, lw=0.6, color="#333333")
    for t in targets:
        ax.axvline(t["mz"], color="#d62728", lw=0.6, alpha=0.6)
    if targets:
        ax.text(0.99, 0.95, "red: panel targets", transform=ax.transAxes, ha="right",
                va="top", fontsize=8, color="#d62728")
    ax.set_xlabel("m/z")
    ax.set_ylabel("mean intensity")
    return _png(fig)


def read_mean_spectrum(imzml: str, storage_options: Mapping | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Mean spectrum of up to :data:`MEAN_SPECTRUM_SPECTRA` spectra spread over the file,
    summed into log-spaced m/z bins; returns (bin centre m/z, mean intensity per spectrum),
    both empty when every spectrum is empty."""
    from ..imzml import open_imzml

    with open_imzml(imzml, storage_options) as f:
        if f.mz_range is None:  # every spectrum is empty
            return np.zeros(0), np.zeros(0)
        index = np.unique(np.linspace(0, f.n_spectra - 1,
                                      min(MEAN_SPECTRUM_SPECTRA, f.n_spectra)).astype(np.int64))
        batch = f.read_batch(index)
        lo, hi = f.mz_range
    lengths = batch.lengths
    # Every point's m/z, whether the batch shares one m/z array or not.
    point = np.arange(len(batch.intensity)) - np.repeat(batch.offsets[:-1], lengths)
    mz = batch.mz[np.repeat(batch.mz_starts, lengths) + point]
    edges = np.geomspace(max(lo, 1e-3), max(hi, lo * 1.001), MEAN_SPECTRUM_BINS + 1)
    sums, _ = np.histogram(mz, bins=edges, weights=batch.intensity.astype(np.float64))
    return np.sqrt(edges[:-1] * edges[1:]), sums / max(len(index), 1)


def distance_curves(curves: Sequence[Mapping], hotspots: Sequence[Mapping],
                    cell_type: str) -> bytes:
    """Density of ``cell_type`` (cells/mm²) against signed distance from each hotspot's edge
    (µm; negative inside), one line per hotspot coloured by its class."""
    from ..regions.export import CLASS_COLORS

    fig = _figure(7, 3.4)
    ax = fig.add_subplot()
    classes = {h["id"]: h["class"] for h in hotspots}
    for hid in sorted({c["id"] for c in curves}):
        rows = sorted((c for c in curves if c["id"] == hid and c["cell_type"] == cell_type),
                      key=lambda c: c["distance_um"])
        if not rows:
            continue
        color = np.array(CLASS_COLORS.get(classes.get(hid, ""), (128, 128, 128))) / 255
        ax.plot([r["distance_um"] for r in rows], [r["density_per_mm2"] for r in rows],
                color=color, lw=1.2, marker="o", ms=2.5, label=f"#{hid} {classes.get(hid, '')}")
    ax.axvline(0, color="black", lw=0.8, ls="--")
    ax.set_xlabel("signed distance from hotspot edge (µm; < 0 inside)")
    ax.set_ylabel(f"{cell_type} density (cells/mm²)")
    if ax.lines[1:]:
        ax.legend(fontsize=7, ncol=2, frameon=False)
    return _png(fig)
