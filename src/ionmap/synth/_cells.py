"""Immune and stromal cells, the MSI → annotation transform, landmarks, and their files.

Cells are drawn in the MSI pixel frame (continuous positions, pixel centres at integers)
as an inhomogeneous Poisson process, then mapped to the annotation frame by a similarity
transform (rotation, scale, shift): µm for CSV, histology-image pixels for GeoJSON.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._geometry import apply_affine, nearest_pixel
from ._layout import Section, smooth_field

CD8 = "CD8"
#: Tissue baseline densities (cells/mm²).
BASE_DENSITY: dict[str, float] = {
    "CD8": 300.0, "Treg": 60.0, "M2_macrophage": 150.0, "MDSC": 80.0, "CAF": 250.0,
    "Tumor": 1800.0,
}
CELL_TYPES = tuple(BASE_DENSITY)
#: CD8 density inside a niche and in its rim, relative to baseline: (low, high) per class.
CD8_INSIDE = {"inflamed": (1.3, 2.0), "immune-excluded": (0.03, 0.03), "immune-desert": (0.0, 0.0)}
CD8_RIM = {"inflamed": (1.0, 1.0), "immune-excluded": (3.0, 4.5), "immune-desert": (0.0, 0.0)}
#: Other classes enriched inside niches of a kind (fold over baseline).
KIND_ENRICHMENT = {
    "kynurenine": {"Treg": 3.0, "MDSC": 3.0},
    "lactate": {"M2_macrophage": 2.5, "MDSC": 1.5},
    "lipid": {"MDSC": 2.0, "M2_macrophage": 1.5},
}
#: CAFs line the rim of immune-excluded niches (the stromal barrier).
CAF_EXCLUDED_RIM = 2.5
HISTOLOGY_PIXEL_UM = 0.5
_COLORS = {
    "CD8": [220, 40, 40], "Treg": [240, 160, 0], "M2_macrophage": [40, 160, 60],
    "MDSC": [150, 60, 200], "CAF": [120, 90, 40], "Tumor": [40, 90, 220],
}


@dataclass(frozen=True)
class PlantedCells:
    """Cells in MSI pixel coordinates ``(x, y)`` (0-based pixel centres) and their class."""

    x: np.ndarray
    y: np.ndarray
    cell_type: np.ndarray


def niche_densities(layout: Section, rng: np.random.Generator) -> list[dict]:
    """Planted CD8 multipliers per niche: ``{"inside": f, "rim": f}`` (× baseline)."""
    out = []
    for n in layout.niches:
        out.append({
            "inside": round(float(rng.uniform(*CD8_INSIDE[n.immune_class])), 3),
            "rim": round(float(rng.uniform(*CD8_RIM[n.immune_class])), 3),
        })
    return out


def make_cells(
    layout: Section,
    cd8: list[dict],
    pixel_size_um: float,
    rng: np.random.Generator,
) -> PlantedCells:
    """Draw every class by thinning: candidates uniform over the grid at the class's
    highest density, kept with probability density(x, y) / highest density."""
    ny, nx = layout.shape
    px_mm2 = (pixel_size_um / 1000.0) ** 2
    stroma = np.clip(1.0 + 0.35 * smooth_field(layout.shape, 200.0 / pixel_size_um, rng), 0.3, 1.7)
    xs, ys, types = [], [], []
    for ctype, base in BASE_DENSITY.items():
        peak = base * 5.0  # ≥ every density below: thinning needs density ≤ peak
        n_cand = rng.poisson(peak * px_mm2 * nx * ny)
        x = rng.uniform(-0.5, nx - 0.5, n_cand)
        y = rng.uniform(-0.5, ny - 0.5, n_cand)
        ix, iy = nearest_pixel(np.column_stack([x, y]))
        ix, iy = np.clip(ix, 0, nx - 1), np.clip(iy, 0, ny - 1)
        dens = np.where(layout.mask[iy, ix], base, 0.0)
        if ctype == "Tumor":
            dens *= 2.0 - stroma[iy, ix]
        elif ctype == "CAF":
            dens *= stroma[iy, ix]
        for niche, f in zip(layout.niches, cd8):
            d = niche.distance(x, y)
            inside = d < niche.radius_px
            rim = ~inside & (d < niche.radius_px + layout.rim_px)
            if ctype == CD8:
                dens = np.where(inside, dens * f["inside"], np.where(rim, dens * f["rim"], dens))
            else:
                dens = np.where(inside, dens * KIND_ENRICHMENT[niche.kind].get(ctype, 1.0), dens)
                if ctype == "CAF" and niche.immune_class == "immune-excluded":
                    dens = np.where(rim, dens * CAF_EXCLUDED_RIM, dens)
        keep = rng.uniform(0.0, peak, n_cand) < dens
        xs.append(x[keep])
        ys.append(y[keep])
        types.append(np.full(int(keep.sum()), ctype))
    return PlantedCells(np.concatenate(xs), np.concatenate(ys), np.concatenate(types))


def make_transform(
    shape: tuple[int, int], units_per_px: float, rng: np.random.Generator
) -> tuple[np.ndarray, dict]:
    """A random similarity MSI pixel → annotation frame: rotation ±5–30°, scale
    ``units_per_px`` ±3 %, shifted so the whole grid lands at positive coordinates.
    Returns the 3×3 matrix (homogeneous ``(x, y, 1)``) and ``{rotation_deg, scale,
    translation}``."""
    ny, nx = shape
    angle = float(rng.choice([-1.0, 1.0]) * rng.uniform(5.0, 30.0))
    scale = float(units_per_px * rng.uniform(0.97, 1.03))
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    lin = scale * np.array([[c, -s], [s, c]])
    corners = np.array([[-0.5, -0.5], [nx - 0.5, -0.5], [-0.5, ny - 0.5], [nx - 0.5, ny - 0.5]])
    low = (corners @ lin.T).min(axis=0)
    margin = rng.uniform(8.0, 40.0, 2) * units_per_px
    t = margin - low
    m = np.eye(3)
    m[:2, :2] = lin
    m[:2, 2] = t
    return m, {"rotation_deg": round(angle, 6), "scale": scale, "translation": t.tolist()}


def landmarks(layout: Section, rng: np.random.Generator, n: int = 8) -> np.ndarray:
    """``n`` well-spread points on the tissue outline (0.5 px inside), as MSI ``(x, y)``."""
    theta = 2 * np.pi * np.arange(n) / n + rng.uniform(0, 2 * np.pi / n)
    return layout.tissue.boundary(theta, inset=0.5)


def write_landmarks(path: Path, msi_xy: np.ndarray, m: np.ndarray, noise_px: float,
                    rng: np.random.Generator) -> None:
    """``msi_x,msi_y,x,y``: MSI pixel (0-based) → annotation frame, the annotation side
    placed with ``noise_px`` MSI pixels of Gaussian error (like a hand-placed point)."""
    jitter = rng.normal(0.0, noise_px, msi_xy.shape)
    table = np.column_stack([msi_xy, apply_affine(m, msi_xy + jitter)])
    np.savetxt(path, table, fmt="%.3f", delimiter=",", header="msi_x,msi_y,x,y", comments="")


def annotated_part(mask: np.ndarray, fraction: float, rng: np.random.Generator
                   ) -> tuple[np.ndarray, float]:
    """A half-plane holding ``fraction`` of the tissue pixels, in a random direction: the
    part of the section whose cells were annotated. Returns (unit normal, offset): MSI
    points ``p`` with ``p · normal ≤ offset`` are annotated."""
    theta = rng.uniform(0.0, 2 * np.pi)
    normal = np.array([np.cos(theta), np.sin(theta)])
    yy, xx = np.nonzero(mask)
    return normal, float(np.quantile(xx * normal[0] + yy * normal[1], fraction))


def part_polygon(shape: tuple[int, int], normal: np.ndarray, offset: float) -> np.ndarray:
    """The MSI grid's rectangle (pixel edges) cut to the half-plane ``p · normal ≤ offset``:
    a closed (k, 2) ring of MSI (x, y) (one Sutherland–Hodgman clipping step)."""
    ny, nx = shape
    rect = np.array([[-0.5, -0.5], [nx - 0.5, -0.5], [nx - 0.5, ny - 0.5], [-0.5, ny - 0.5]])
    side = rect @ normal - offset
    out = []
    for i in range(4):
        a, b, sa, sb = rect[i], rect[(i + 1) % 4], side[i], side[(i + 1) % 4]
        if sa <= 0:
            out.append(a)
        if (sa <= 0) != (sb <= 0):
            out.append(a + (b - a) * sa / (sa - sb))
    return np.array(out + out[:1])


def write_cells_csv(path: Path, x: np.ndarray, y: np.ndarray, cell_type: np.ndarray) -> None:
    """Plain cell table ``x,y,cell_type`` (µm)."""
    with open(path, "w", newline="") as fh:
        fh.write("x,y,cell_type\n")
        for ctype in CELL_TYPES:
            sel = cell_type == ctype
            if sel.any():
                np.savetxt(fh, np.column_stack([x[sel], y[sel]]), fmt=f"%.2f,%.2f,{ctype}")


def write_geojson(path: Path, x: np.ndarray, y: np.ndarray, cell_type: np.ndarray,
                  px_per_um: float, rng: np.random.Generator,
                  annotation: np.ndarray | None = None) -> None:
    """QuPath-style FeatureCollection of cell objects in histology pixels: elliptical
    cell and nucleus polygons (8 vertices) centred on each cell; ``annotation``: a closed
    ring (histology pixels) written first as the annotation the cells were detected in."""
    n = len(x)
    radius = rng.uniform(4.0, 7.0, n) * px_per_um
    elong = rng.uniform(1.0, 1.4, n)
    rot = rng.uniform(0, np.pi, n)
    t = np.linspace(0, 2 * np.pi, 9)[:-1]
    u = np.cos(t)[None, :] * (radius * elong)[:, None]
    v = np.sin(t)[None, :] * (radius / elong)[:, None]
    c, s = np.cos(rot)[:, None], np.sin(rot)[:, None]
    dx, dy = u * c - v * s, u * s + v * c

    def rings(f: float) -> list:
        px = np.round(x[:, None] + f * dx, 2)
        py = np.round(y[:, None] + f * dy, 2)
        ring = np.stack([px, py], axis=-1)
        return np.concatenate([ring, ring[:, :1]], axis=1).tolist()

    cell, nucleus = rings(1.0), rings(0.6)
    features = [
        {
            "type": "Feature",
            "id": f"cell-{i}",
            "geometry": {"type": "Polygon", "coordinates": [cell[i]]},
            "nucleusGeometry": {"type": "Polygon", "coordinates": [nucleus[i]]},
            "properties": {
                "objectType": "cell",
                "classification": {"name": str(ct), "color": _COLORS.get(str(ct), [128, 128, 128])},
            },
        }
        for i, ct in enumerate(cell_type)
    ]
    if annotation is not None:
        features.insert(0, {"type": "Feature", "id": "annotated-region",
                            "geometry": {"type": "Polygon",
                                         "coordinates": [np.round(annotation, 2).tolist()]},
                            "properties": {"objectType": "annotation", "name": "annotated"}})
    with open(path, "w") as fh:
        json.dump({"type": "FeatureCollection", "features": features}, fh, separators=(",", ":"))
