"""Figures of stored results as PNG bytes (matplotlib, Agg; no display needed).

Images are drawn in the MSI pixel frame (x right, y down, pixel centres at 0-based
integers), NaN (off tissue, masked) light grey, each with a colour bar naming its unit and
a scale bar in µm when the pixel size is known. Hotspot outlines carry the hotspot id of
``hotspots.csv`` and the class colour of :mod:`ionmap.report._palette`.
"""
from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..regions import outlines
from . import _palette as palette

_DPI = 110
#: Scale-bar lengths tried (µm): the longest that fits in a quarter of the image width.
_BAR_UM = (10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000)


def png(fig) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def figure(width: float, height: float):
    """A constrained-layout figure (inches) not tied to any display."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def bar_length_um(nx: int, pixel_size_um: float | None) -> float | None:
    """Length (µm) of the scale bar of an image ``nx`` pixels wide, or None (unknown size)."""
    if not pixel_size_um:
        return None
    return max([b for b in _BAR_UM if b <= nx * pixel_size_um / 4] or [_BAR_UM[0]])


def bar_label(length_um: float) -> str:
    """``500 µm`` or ``2 mm``."""
    return f"{length_um / 1000:g} mm" if length_um >= 1000 else f"{length_um:g} µm"


def scale_bar(ax, nx: int, pixel_size_um: float | None) -> None:
    """A white-on-black scale bar (µm) in the lower left, about a quarter of the width."""
    length = bar_length_um(nx, pixel_size_um)
    if length is None:
        return
    from matplotlib.patheffects import withStroke
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    label = bar_label(length)
    bar = AnchoredSizeBar(ax.transData, length / pixel_size_um, label, "lower left",
                          pad=0.4, color="white", frameon=False, size_vertical=max(nx / 150, 0.4),
                          fontproperties={"size": 7, "weight": "bold"})
    for child in bar.get_child().get_children():
        for artist in getattr(child, "get_children", lambda: [])():
            artist.set_path_effects([withStroke(linewidth=2, foreground="black")])
    ax.add_artist(bar)


def draw_map(fig, ax, values: np.ndarray, *, unit: str, pixel_size_um: float | None,
             title: str = "", symmetric: float | None = None) -> None:
    """One (ny, nx) map: viridis from 0 to the 99.5th percentile, NaN light grey, a colour
    bar labelled with ``unit`` and a scale bar. ``symmetric``: a diverging map from
    -symmetric to +symmetric instead (signed errors, e.g. ppm)."""
    import matplotlib

    cmap = matplotlib.colormaps["RdBu_r" if symmetric else "viridis"].with_extremes(
        bad="#e6e6e6")
    finite = values[np.isfinite(values)]
    vmax = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    vmin = min(0.0, float(finite.min())) if finite.size else 0.0
    if symmetric:
        vmin, vmax = -symmetric, symmetric
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin,
                   vmax=vmax if vmax > vmin else vmin + 1.0, interpolation="nearest")
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    bar.set_label(unit, fontsize=7)
    bar.ax.tick_params(labelsize=7)
    scale_bar(ax, values.shape[1], pixel_size_um)
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def image_grid(images: Mapping[str, np.ndarray], units: Mapping[str, str] | str, *,
               pixel_size_um: float | None, mask: np.ndarray | None = None,
               columns: int = 4, symmetric: float | None = None) -> bytes:
    """Several (ny, nx) images side by side, each scaled to its own 99.5th percentile
    (or all from -symmetric to +symmetric, diverging), with its unit (one for all, or per
    image) and a scale bar."""
    names = list(images)
    cols = max(1, min(columns, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    ny, nx = next(iter(images.values())).shape if names else (1, 1)
    cell = 2.9
    fig = figure(cell * cols, cell * rows * ny / nx + 0.45 * rows)
    for i, name in enumerate(names):
        image = np.asarray(images[name], np.float64)
        if mask is not None:
            image = np.where(mask, image, np.nan)
        unit = units if isinstance(units, str) else units.get(name, "")
        draw_map(fig, fig.add_subplot(rows, cols, i + 1), image, unit=unit,
                 pixel_size_um=pixel_size_um, title=name, symmetric=symmetric)
    return png(fig)


def error_histogram(hist: Mapping) -> bytes:
    """The stored mass-error histogram (:func:`ionmap.recal.error_histogram`): pixels per
    ppm bin before and after recalibration."""
    edges = np.asarray(hist["edges_ppm"], float)
    fig = figure(6, 2.8)
    ax = fig.add_subplot()
    for name, color in (("before", "#999999"), ("after", "#1f77b4")):
        if name in hist:
            med = hist.get(f"{name}_median_abs_ppm")
            ax.stairs(hist[name], edges, color=color, lw=1.2,
                      label=f"{name} (median |error| {med} ppm)")
    ax.set_xlabel("mass error (ppm)")
    ax.set_ylabel("pixels")
    ax.legend(fontsize=7)
    return png(fig)


def overlay(values: np.ndarray, labels: np.ndarray, rows: Sequence[Mapping],
            cells_xy: np.ndarray | None, *, unit: str, pixel_size_um: float | None,
            title: str, cell_label: str, max_cells: int = 200_000, seed: int = 0) -> bytes:
    """A map with its hotspot outlines (class colour, black halo, the hotspot id of
    hotspots.csv at each), cells as dots (at most ``max_cells``, a seeded random subset)
    and a legend whose cell marker is drawn exactly as the cells are."""
    from matplotlib.lines import Line2D
    from matplotlib.patheffects import withStroke

    ny, nx = values.shape
    fig = figure(6.4, 6.4 * ny / nx + 0.9)
    ax = fig.add_subplot()
    draw_map(fig, ax, values, unit=unit, pixel_size_um=pixel_size_um)
    dot = max(0.5, 400.0 / max(nx, ny))
    if cells_xy is not None and len(cells_xy):
        xy = np.asarray(cells_xy)
        if len(xy) > max_cells:
            xy = xy[np.random.default_rng(seed).choice(len(xy), max_cells, replace=False)]
        ax.scatter(xy[:, 0], xy[:, 1], s=dot, c=palette.CELL_FACE,
                   edgecolors=palette.CELL_EDGE, linewidths=0.2, rasterized=True)
    halo = [withStroke(linewidth=3.2, foreground="black")]
    classes = {int(r["id"]): str(r.get("class", "")) for r in rows}
    for k, polys in outlines(labels).items():
        color = palette.rgb01(classes.get(k, ""))
        for poly in polys:
            for ring in poly:
                ax.plot(ring[:, 0], ring[:, 1], color=color, lw=1.6, path_effects=halo)
        outer = max((p[0] for p in polys), key=len)
        top = outer[np.argmin(outer[:, 1])]
        ax.annotate(str(k), (top[0], top[1]), xytext=(0, 3), textcoords="offset points",
                    ha="center", va="bottom", fontsize=8, fontweight="bold", color=color,
                    path_effects=[withStroke(linewidth=2.5, foreground="black")])
    handles = [Line2D([], [], color=palette.rgb01(c), lw=2, path_effects=halo, label=c)
               for c in palette.CLASS_RGB]
    if cells_xy is not None:
        handles.append(ax.scatter([], [], s=dot, c=palette.CELL_FACE,
                                  edgecolors=palette.CELL_EDGE, linewidths=0.2,
                                  label=cell_label))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=5,
              fontsize=7, frameon=False)
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(ny - 0.5, -0.5)
    ax.set_title(f"{title}: {len(rows)} hotspot(s), numbered as in hotspots.csv", fontsize=9)
    return png(fig)


def mean_spectrum(mz: np.ndarray, intensity: np.ndarray,
                  targets: Sequence[Mapping] = ()) -> bytes:
    """The mean spectrum (m/z) with the panel's target m/z marked and named."""
    fig = figure(9, 3.2)
    ax = fig.add_subplot()
    ax.plot(mz, intensity, lw=0.6, color="#333333")
    top = float(intensity.max()) if len(intensity) else 1.0
    for i, t in enumerate(sorted(targets, key=lambda t: t["mz"])):
        ax.axvline(t["mz"], color="#d62728", lw=0.6, alpha=0.6)
        ax.text(t["mz"], top * (1.02 + 0.07 * (i % 3)), t["name"], rotation=0, fontsize=6,
                ha="center", color="#d62728")
    ax.set_ylim(0, top * 1.25 if top > 0 else 1)
    ax.set_xlabel("m/z")
    ax.set_ylabel("mean intensity per spectrum (counts)")
    return png(fig)


def distance_curves(curves: Sequence[Mapping], hotspots: Sequence[Mapping],
                    cell_type: str) -> bytes:
    """Density of ``cell_type`` (cells/mm²) against signed distance from each hotspot's
    edge (µm; negative inside), one line per hotspot in its class colour."""
    fig = figure(7, 3.4)
    ax = fig.add_subplot()
    classes = {h["id"]: h["class"] for h in hotspots}
    for hid in sorted({c["id"] for c in curves}):
        rows = sorted((c for c in curves if c["id"] == hid and c["cell_type"] == cell_type),
                      key=lambda c: c["distance_um"])
        if not rows:
            continue
        ax.plot([r["distance_um"] for r in rows], [r["density_per_mm2"] for r in rows],
                color=palette.rgb01(classes.get(hid, "")), lw=1.2, marker="o", ms=2.5,
                label=f"#{hid} {classes.get(hid, '')}")
    ax.axvline(0, color="black", lw=0.8, ls="--")
    ax.set_xlabel("signed distance from hotspot edge (µm; < 0 inside)")
    ax.set_ylabel(f"{cell_type} density (cells/mm²)")
    if ax.lines[1:]:
        ax.legend(fontsize=7, ncol=2, frameon=False)
    return png(fig)
