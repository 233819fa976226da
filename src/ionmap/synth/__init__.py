"""Synthetic MALDI-MSI tumour sections with planted ground truth.

:func:`make_sample` writes, into one folder,

- ``NAME.imzML`` + ``NAME.ibd``: real imzML written by pyimzML's writer (UUID, SHA-1,
  mode, spectrum type, polarity, pixel size, grid size). Only tissue pixels have a
  spectrum by default (``off_tissue="absent"``, so the file's pixel mask is the tissue);
  ``off_tissue="matrix"`` also writes matrix-only spectra at low TIC off the tissue.
  Coordinates are 1-based in the file.
- ``NAME.cells.csv`` (``x,y,cell_type`` in µm) or ``NAME.cells.geojson`` (QuPath cell
  objects in histology pixels), in an annotation frame that is the MSI frame rotated,
  scaled and shifted;
- ``NAME.landmarks.csv`` (``msi_x,msi_y,x,y``: 0-based MSI pixel → annotation frame);
- ``NAME.truth.json``: everything planted (niches, immune classes, transform, ...).

Frames: MSI positions are ``(x, y)`` in pixels, 0-based, pixel centres at integers
(``msi_to_cells`` maps homogeneous ``(x, y, 1)`` to the cell frame). m/z in Th.

Truth JSON (main fields): ``shape`` [ny, nx]; ``pixel_size_um``; ``off_tissue``;
``tissue_runs`` (tissue as row runs [y, x_start, x_end)); ``n_spectra``; ``cells_file``,
``cells_unit`` ("um" | "px"), ``histology_pixel_size_um`` (GeoJSON only, else null);
``msi_to_cells`` (3×3); ``transform`` {``rotation_deg``, ``scale`` (cell-frame units per
MSI pixel), ``translation`` [tx, ty] (cell-frame units)}; ``rim_um``; ``niches``: [{``id``,
``kind`` (lactate | kynurenine | lipid), ``maps`` (map names that must show it),
``center_x``, ``center_y``, ``radius_px`` (MSI pixels, 0-based), ``immune_class``
(inflamed | immune-excluded | immune-desert), ``folds`` (planted fold per target),
``cd8_inside_factor``, ``cd8_rim_factor`` (CD8 density × baseline)}]; ``cell_types``,
``cd8_label``, ``cell_density_per_mm2`` (baselines), ``cell_counts``; ``panel``,
``targets``, ``target_mz``; spectrum settings (``mz_range``, ``resolving_power``,
``n_peaks``, ``mass_shift_ppm_max``, ...).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._files import make_dir, write_atomic
from .._geometry import apply_affine
from ..chem import panel
from ..errors import InputError, StorageError
from ._cells import (
    BASE_DENSITY,
    CD8,
    CELL_TYPES,
    HISTOLOGY_PIXEL_UM,
    PlantedCells,
    annotated_part,
    landmarks,
    make_cells,
    make_transform,
    niche_densities,
    part_polygon,
    write_cells_csv,
    write_geojson,
    write_landmarks,
)
from ._layout import NICHE_MAPS, Section, make_section
from ._spectra import (
    MATRIX_IONS,
    NOISE_SIGMA,
    POINTS_PER_FWHM,
    Confounders,
    Pixels,
    Renderer,
    add_impostors,
    available_kinds,
    calibration_drift,
    make_peaks,
    make_pixels,
    mz_range,
    niche_folds,
)
from ._writer import SynthWriter

__all__ = ["Confounders", "SampleFiles", "make_sample", "sample_summary", "parse_size", "parse_shape"]

MODES = ("processed", "continuous")
SPECTRUM_TYPES = ("profile", "centroid")
DTYPES = ("float32", "float64")
POLARITIES = ("negative", "positive")
CELL_FORMATS = ("csv", "geojson")
OFF_TISSUE = ("absent", "matrix")
#: Aim for this many float32 values per block of spectra (bounds memory, ~tens of MB).
_BLOCK_VALUES = 2_000_000


@dataclass(frozen=True)
class SampleFiles:
    """Paths of one synthetic sample and its ground truth (``truth_dict``, as in
    ``truth``'s JSON file)."""

    imzml: Path
    ibd: Path
    cells: Path
    landmarks: Path
    truth: Path
    truth_dict: dict


#: Files of a sample NAME in its folder (NAME + suffix), whichever cell format it has.
SAMPLE_SUFFIXES = (".imzML", ".ibd", ".cells.csv", ".cells.geojson", ".landmarks.csv",
                   ".truth.json")


def make_sample(
    outdir: str | Path,
    name: str = "sample",
    *,
    seed: int = 0,
    mode: str = "processed",
    spectrum_type: str = "profile",
    mz_dtype: str = "float64",
    intensity_dtype: str = "float32",
    polarity: str = "negative",
    shape: tuple[int, int] = (60, 80),
    pixel_size_um: float = 25.0,
    resolving_power: float = 20000.0,
    cells_format: str = "csv",
    target_bytes: int | None = None,
    off_tissue: str = "absent",
    n_niches: int | None = None,
    n_background: int | None = None,
    dense_axis: bool = False,
    rim_um: float = 60.0,
    landmark_noise_px: float = 0.2,
    annotated_fraction: float = 1.0,
    landmarks_other_unit: bool = False,
    near_symmetric: bool = False,
    drift_ppm: float = 0.0,
    drift_gradient_ppm: float = 0.0,
    impostors: tuple[float, ...] = (),
    confounders: Confounders | None = None,
    overwrite: bool = False,
) -> SampleFiles:
    """Write a synthetic tumour section (imzML, cells, landmarks, truth) into ``outdir``.

    Args:
        outdir: folder to write into (created if missing); files are ``NAME.*``.
        seed: everything is deterministic per seed; the tissue, niches and cells depend
            only on seed, shape, polarity and pixel size, not on mode/type/dtypes.
        mode: "processed" (own m/z array per spectrum) or "continuous" (one shared axis).
        spectrum_type: "profile" (Gaussian peaks, FWHM = m/R, 5 points per FWHM on a
            constant-ppm grid) or "centroid" (one point per detected peak).
        mz_dtype, intensity_dtype: "float32" or "float64" in the .ibd.
        polarity: "negative" (tme-negative panel, 9-AA matrix) or "positive"
            (tme-positive panel, DHB matrix). A niche kind needs its panel targets: the
            positive panel has no lactate, so positive samples plant kynurenine and
            lipid niches only.
        shape: grid ``(ny, nx)`` in pixels; the tissue covers about half of it.
        pixel_size_um: MSI pixel size (µm), written to the imzML.
        resolving_power: R = m/FWHM of profile peaks.
        cells_format: "csv" (``x,y,cell_type``, µm) or "geojson" (QuPath cells, histology
            pixels of ``HISTOLOGY_PIXEL_UM`` µm).
        target_bytes: write a benchmark-sized file instead: the grid (same aspect as
            ``shape``) is chosen so the .ibd reaches at least this many bytes (typically
            within +5 %; more when the target is too small for a grid holding three
            niches); continuous profile spectra then carry ~1000 ions (> 20k points).
            The same generator runs, in blocks of spectra: memory does not grow with size.
        off_tissue: "absent" (no spectra off tissue) or "matrix" (matrix-only spectra).
        n_niches: number of niches (default: 3–4 on small grids, more on large ones); 0
            makes a null section (no niche at all).
        n_background: number of unassigned background ions, plus their isotopes (default
            40; 450 for continuous profile files made with ``target_bytes``).
        dense_axis: store the whole m/z grid of profile spectra (raw TOF-like, ~260k points
            per spectrum) instead of only the points within ±2 FWHM of some ion.
        rim_um: width (µm) of the rim outside each niche where excluded niches gather CD8.
        landmark_noise_px: Gaussian placement error (MSI pixels) of the landmarks.
        annotated_fraction: cells only on this share of the tissue (a random half-plane;
            a partial annotation). GeoJSON cells then carry the annotated region as a
            QuPath annotation; truth gives each niche's ``annotated_fraction``.
        landmarks_other_unit: the landmarks' annotation side in the other unit than the
            cells (histology pixels of ``HISTOLOGY_PIXEL_UM`` for µm cells, µm for pixel
            cells): the unit confusion users make.
        near_symmetric: a tissue outline almost alike after a 180° turn.
        drift_ppm: calibration error (ppm) added to every peak of every pixel, on top of
            the small built-in drift (≤ 5 ppm). Continuous centroid files share one peak
            list, so they carry ``drift_ppm`` only.
        drift_gradient_ppm: a linear calibration gradient: the error changes by this many
            ppm from one edge of the grid to the opposite one, along a seeded direction
            (``drift_direction_deg`` in the truth).
        impostors: m/z values (Th) of impostor peaks: one peak each, no isotopes, with a
            spatially random abundance (what a wrong annotation looks like).
        confounders: nuisance effects of real sections (:class:`Confounders`: ionisation
            fields, smooth background abundance, bright matrix off tissue); drawn from
            their own random stream, so a sample without them is unchanged.
        overwrite: replace the files of an earlier sample ``NAME`` in ``outdir`` (all of
            them, so no stale cell file of the other format stays); without it an
            existing one is an error.

    Returns:
        SampleFiles with the paths and the truth dictionary.
    """
    _check(mode, MODES, "mode")
    _check(spectrum_type, SPECTRUM_TYPES, "spectrum_type")
    _check(mz_dtype, DTYPES, "mz_dtype")
    _check(intensity_dtype, DTYPES, "intensity_dtype")
    _check(polarity, POLARITIES, "polarity")
    _check(cells_format, CELL_FORMATS, "cells_format")
    _check(off_tissue, OFF_TISSUE, "off_tissue")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise InputError(None, f"sample name {name!r}: use letters, digits, '_', '-', '.'")
    if not (len(shape) == 2 and min(shape) >= 8) or pixel_size_um <= 0 or resolving_power <= 0:
        raise InputError(None, "shape needs two sizes >= 8 px; pixel size and R must be > 0")
    if not 0 < annotated_fraction <= 1:
        raise InputError(None, f"annotated_fraction must be in (0, 1], not {annotated_fraction}")
    shape = (int(shape[0]), int(shape[1]))
    if n_background is None:
        big_profile = bool(target_bytes) and mode == "continuous" and spectrum_type == "profile"
        n_background = 450 if big_profile else 40

    out = Path(outdir)
    earlier = [out / f"{name}{suffix}" for suffix in SAMPLE_SUFFIXES
               if (out / f"{name}{suffix}").exists()]
    if earlier and not overwrite:
        raise InputError(earlier[0], "exists (an earlier sample); pass overwrite=True to "
                         "replace it")
    make_dir(out)
    try:
        for old in earlier:
            old.unlink()
    except OSError as exc:
        raise StorageError(old, f"cannot remove the earlier sample ({exc.strerror})") from None

    def streams() -> list[np.random.Generator]:
        # Independent streams, so e.g. the cells do not change with the spectrum type.
        return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(7)]

    rng_peaks, _, _, rng_spectra, rng_cells, rng_marks, rng_geo = streams()
    # two more streams, so the drift and impostors leave every other draw unchanged
    seed_drift, seed_impostors = np.random.SeedSequence(seed).spawn(9)[7:]
    seed_confounders = np.random.SeedSequence(seed).spawn(11)[10]  # likewise
    rng_part = np.random.default_rng(np.random.SeedSequence(seed).spawn(10)[9])  # partial annotation
    panel_name = f"tme-{polarity}"
    targets = panel(panel_name)
    kinds = available_kinds(targets)
    lo, hi = mz_range(targets, polarity)
    impostors = tuple(float(m) for m in impostors)
    peaks = make_peaks(targets, polarity, resolving_power, lo, hi, n_background, rng_peaks,
                       impostors)
    renderer = Renderer(peaks, mode, spectrum_type, resolving_power, lo, hi,
                        dense_axis=dense_axis, axis_shift_ppm=drift_ppm)
    rim_px = rim_um / pixel_size_um
    isize, msize = np.dtype(intensity_dtype).itemsize, np.dtype(mz_dtype).itemsize

    def build(grid: tuple[int, int]) -> tuple[Section, list[dict], Pixels]:
        r_layout, r_pixels = streams()[1:3]  # fresh: a grid tried while sizing leaves no trace
        lay = make_section(grid, kinds, rim_px, r_layout, n_niches, near_symmetric)
        if lay is None:
            raise InputError(None, f"grid {grid[0]}x{grid[1]} is too small for three niches "
                             f"with a {rim_um:g} µm rim; use a larger shape")
        fl = [niche_folds(targets, n.kind, r_pixels) for n in lay.niches]
        px = make_pixels(lay, targets, fl, off_tissue, pixel_size_um, r_pixels, confounders,
                         np.random.default_rng(seed_confounders))
        return lay, fl, add_impostors(px, len(impostors), np.random.default_rng(seed_impostors))

    layout, folds, pixels = build(shape)
    if target_bytes:
        layout, folds, pixels = _grow_to(target_bytes, shape, build, pixels, renderer,
                                         isize, msize)
        shape = layout.shape
    pixels, drift_deg = calibration_drift(pixels, shape, drift_ppm, drift_gradient_ppm,
                                          np.random.default_rng(seed_drift))

    def path(suffix: str) -> Path:
        return out / f"{name}{suffix}"  # not with_suffix: names may contain dots

    imzml, ibd = path(".imzML"), path(".ibd")
    settings = dict(name=name, seed=seed, mode=mode, spectrum_type=spectrum_type,
                    mz_dtype=mz_dtype, intensity_dtype=intensity_dtype, polarity=polarity,
                    shape=list(shape), pixel_size_um=pixel_size_um,
                    resolving_power=resolving_power, off_tissue=off_tissue,
                    n_background=n_background, dense_axis=dense_axis, n_niches=n_niches,
                    **({"drift_ppm": drift_ppm, "drift_gradient_ppm": drift_gradient_ppm,
                        "impostors": list(impostors)}
                       if drift_ppm or drift_gradient_ppm or impostors else {}),
                    **({"confounders": confounders.to_dict()} if confounders else {}))
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).digest()
    file_uuid = uuid.UUID(bytes=digest[:16], version=4)
    n_points = _write_imzml(imzml, renderer, pixels, shape, pixel_size_um, file_uuid,
                            mode, spectrum_type, mz_dtype, intensity_dtype, polarity, rng_spectra)

    # Cells and landmarks, in the annotation frame: µm (CSV) or histology pixels (GeoJSON).
    geojson = cells_format == "geojson"
    cells_path, marks_path = path(f".cells.{cells_format}"), path(".landmarks.csv")
    histo_um = HISTOLOGY_PIXEL_UM if geojson else None
    cd8 = niche_densities(layout, rng_cells)
    cells = make_cells(layout, cd8, pixel_size_um, rng_cells)
    matrix, transform = make_transform(shape, pixel_size_um / (histo_um or 1.0), rng_cells)
    part, ring = None, None
    if annotated_fraction < 1:
        normal, offset = annotated_part(layout.mask, annotated_fraction, rng_part)
        keep = cells.x * normal[0] + cells.y * normal[1] <= offset
        cells = PlantedCells(cells.x[keep], cells.y[keep], cells.cell_type[keep])
        part = {"normal": normal.tolist(), "offset": offset}
        ring = np.column_stack(apply_affine(matrix, part_polygon(shape, normal, offset)).T)
    cx, cy = apply_affine(matrix, np.column_stack([cells.x, cells.y])).T
    if geojson:
        write_geojson(cells_path, cx, cy, cells.cell_type, 1.0 / HISTOLOGY_PIXEL_UM, rng_geo,
                      annotation=ring)
    else:
        write_cells_csv(cells_path, cx, cy, cells.cell_type)
    marks = landmarks(layout, rng_marks)
    # Landmarks in the other unit: histology pixels for µm cells, µm for pixel cells.
    other = (HISTOLOGY_PIXEL_UM if geojson else 1.0 / HISTOLOGY_PIXEL_UM) \
        if landmarks_other_unit else 1.0
    write_landmarks(marks_path, marks, np.diag([other, other, 1.0]) @ matrix,
                    landmark_noise_px, rng_marks)

    truth = {
        **{k: settings[k] for k in ("name", "seed", "mode", "spectrum_type", "polarity",
                                    "mz_dtype", "intensity_dtype", "shape", "pixel_size_um",
                                    "off_tissue")},
        "imzml_file": imzml.name,
        "ibd_file": ibd.name,
        "ibd_bytes": ibd.stat().st_size,
        "uuid": str(file_uuid),
        "n_spectra": int(len(pixels.x)),
        "tissue_pixels": int(layout.mask.sum()),
        "tissue_runs": _runs(layout.mask),
        "cells_file": cells_path.name,
        "cells_unit": "px" if geojson else "um",
        "histology_pixel_size_um": histo_um,
        "landmarks_file": marks_path.name,
        "landmark_noise_px": landmark_noise_px,
        "landmarks_other_unit": landmarks_other_unit,
        "near_symmetric": near_symmetric,
        "annotated_fraction": annotated_fraction,
        "annotated_part": part,
        "msi_to_cells": matrix.tolist(),
        "transform": transform,
        "rim_um": rim_um,
        "confounders": (confounders or Confounders()).to_dict(),
        "niches": [
            {
                "id": n.id, "kind": n.kind, "maps": NICHE_MAPS[n.kind],
                "center_x": n.center_x, "center_y": n.center_y, "radius_px": n.radius_px,
                "immune_class": n.immune_class, "folds": f,
                "cd8_inside_factor": d["inside"], "cd8_rim_factor": d["rim"],
                "annotated_fraction": _share_annotated(n, part),
            }
            for n, f, d in zip(layout.niches, folds, cd8)
        ],
        "cell_types": list(CELL_TYPES),
        "cd8_label": CD8,
        "cell_density_per_mm2": BASE_DENSITY,
        "cell_counts": {t: int((cells.cell_type == t).sum()) for t in CELL_TYPES},
        "panel": panel_name,
        "targets": [t.name for t in targets],
        "target_mz": {t.name: t.mz for t in targets},
        "matrix": MATRIX_IONS[polarity][0],
        "mz_range": [lo, hi],
        "resolving_power": resolving_power,
        "points_per_fwhm": POINTS_PER_FWHM,
        "dense_axis": dense_axis,
        "n_peaks": int(len(peaks.mz)),
        "points_per_spectrum_mean": round(n_points / max(1, len(pixels.x)), 1),
        "mass_shift_ppm_max": round(float(np.abs(pixels.shift_ppm).max()), 3),
        "drift_ppm": drift_ppm,
        "drift_gradient_ppm": drift_gradient_ppm,
        "drift_direction_deg": round(drift_deg, 3),
        "impostor_mz": list(impostors),
        "noise_sigma": NOISE_SIGMA,
    }
    truth_path = path(".truth.json")
    write_atomic(truth_path, json.dumps(truth, indent=1))
    return SampleFiles(imzml, ibd, cells_path, marks_path, truth_path, truth)


def _share_annotated(niche, part: dict | None) -> float:
    """Share of a niche's disk inside the annotated half-plane (1 without one)."""
    if part is None:
        return 1.0
    yy, xx = np.mgrid[-1:1:41j, -1:1:41j]
    disk = np.hypot(xx, yy) <= 1
    x, y = niche.center_x + niche.radius_px * xx[disk], niche.center_y + niche.radius_px * yy[disk]
    nx_, ny_ = part["normal"]
    return round(float(np.mean(x * nx_ + y * ny_ <= part["offset"])), 3)


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise InputError(None, f"{what} {value!r} is not one of {', '.join(allowed)}")


def _block_size(renderer: Renderer) -> int:
    width = max(len(renderer.axis), len(getattr(renderer, "c_peak", ())), 1)
    return int(np.clip(_BLOCK_VALUES // width, 4, 2048))


def _write_imzml(path: Path, renderer: Renderer, px: Pixels, shape: tuple[int, int],
                 pixel_size_um: float, file_uuid: uuid.UUID, mode: str, spectrum_type: str,
                 mz_dtype: str, intensity_dtype: str, polarity: str,
                 rng: np.random.Generator) -> int:
    """Render spectra block by block and feed them to the writer; returns points written."""
    n, step, points = len(px.x), _block_size(renderer), 0
    xs, ys = px.x + 1, px.y + 1  # imzML coordinates are 1-based
    with SynthWriter(str(path), shape=shape, pixel_size_um=pixel_size_um, file_uuid=file_uuid,
                     mz_dtype=np.dtype(mz_dtype).type,
                     intensity_dtype=np.dtype(intensity_dtype).type,
                     mode=mode, spec_type=spectrum_type, polarity=polarity) as w:
        for start in range(0, n, step):
            sl = slice(start, min(n, start + step))
            blk = renderer.block(px, sl, rng)
            mzs = blk.mz.astype(mz_dtype, copy=False)
            ints = blk.intensity.astype(intensity_dtype, copy=False)
            off = blk.offsets
            for k, (x, y) in enumerate(zip(xs[sl].tolist(), ys[sl].tolist())):
                a, b = off[k], off[k + 1]
                w.addSpectrum(mzs if blk.shared else mzs[a:b], ints[a:b], (x, y))
            points += int(off[-1])
    return points


def _grow_to(target: int, shape: tuple[int, int], build, px: Pixels, renderer: Renderer,
             isize: int, msize: int):
    """Scale the grid (aspect of ``shape`` kept) until the spectra reach ``target`` bytes,
    estimated by rendering a probe of pixels spread over each candidate layout."""

    def need(px: Pixels) -> float:
        if renderer.mode == "continuous":  # every spectrum has the axis' length
            n_axis = len(renderer.axis)
            return max(1.0, (target - 16 - n_axis * msize) / (n_axis * isize))
        probe = np.linspace(0, len(px.x) - 1, min(512, len(px.x))).astype(int)
        sample = Pixels(px.x[probe], px.y[probe], px.abundance[probe], px.tic[probe],
                        px.shift_ppm[probe])
        rng, step = np.random.default_rng(0), _block_size(renderer)
        points = sum(renderer.block(sample, slice(i, i + step), rng).offsets[-1]
                     for i in range(0, len(probe), step))
        # Assume 1.5 % smaller spectra than probed (sampling error): never undershoot.
        per = 0.985 * points / len(probe) * (isize + msize)
        return max(1.0, (target - 16) / per)

    # Each grid has its own outline, so iterate: keep the smallest grid that is big enough.
    grid, n, best = shape, need(px), None
    for _ in range(10):
        s = 1.0 if px is None else math.sqrt(n / len(px.x)) * 1.003
        grid = (max(8, math.ceil(grid[0] * s)), max(8, math.ceil(grid[1] * s)))
        try:
            built = build(grid)
        except InputError:  # too small for the niches: the file will exceed the target
            grid, n, px = (math.ceil(grid[0] * 1.1), math.ceil(grid[1] * 1.1)), 1.0, None
            continue
        px = built[2]
        n = need(px)
        if len(px.x) >= n and (best is None or len(px.x) < len(best[2].x)):
            best = built
        if best is not None and len(best[2].x) <= 1.03 * n:
            break
    if best is None:
        raise InputError(None, f"could not size a grid for {target} bytes")
    return best


def _runs(mask: np.ndarray) -> list[list[int]]:
    """Tissue as row runs ``[y, x_start, x_end)`` (0-based, end exclusive)."""
    pad = np.zeros((mask.shape[0], mask.shape[1] + 2), np.int8)
    pad[:, 1:-1] = mask
    d = np.diff(pad, axis=1)
    ys, x0 = np.nonzero(d == 1)
    _, x1 = np.nonzero(d == -1)
    return np.column_stack([ys, x0, x1]).tolist()


def parse_shape(text: str) -> tuple[int, int]:
    """``"60x80"`` → ``(60, 80)`` (ny, nx)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×,]\s*(\d+)\s*", text)
    if not m:
        raise InputError(None, f"not a grid size NYxNX: {text!r}")
    return int(m.group(1)), int(m.group(2))


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int:
    """``"1.5GB"`` → 1500000000 bytes (kB/MB/GB/TB decimal, KiB/MiB/GiB/TiB binary)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise InputError(None, f"not a size such as 1.5GB or 400MB: {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def sample_summary(sample: SampleFiles) -> str:
    """A short human-readable description of a written sample."""
    t = sample.truth_dict
    ny, nx = t["shape"]

    def size(p: Path) -> str:
        b = p.stat().st_size
        return f"{b / 1e6:.1f} MB" if b >= 1e5 else f"{b / 1e3:.1f} kB"

    lines = [f"Synthetic sample {t['name']!r} (seed {t['seed']}) in {sample.imzml.parent}"]
    for p in (sample.imzml, sample.ibd, sample.cells, sample.landmarks, sample.truth):
        lines.append(f"  {p.name:<28} {size(p):>10}")
    lines.append(
        f"Grid {ny} x {nx} px at {t['pixel_size_um']:g} µm; {t['n_spectra']} spectra "
        f"({t['mode']}, {t['spectrum_type']}, {t['polarity']} mode, m/z {t['mz_dtype']}, "
        f"intensity {t['intensity_dtype']}); {t['tissue_pixels']} tissue pixels"
    )
    lines.append(f"Niches ({len(t['niches'])}):")
    for n in t["niches"]:
        lines.append(
            f"  #{n['id']} {n['kind']:<10} at x={n['center_x']:.1f} y={n['center_y']:.1f} "
            f"r={n['radius_px']:.1f} px  {n['immune_class']}  (maps: {', '.join(n['maps'])})"
        )
    counts = ", ".join(f"{k} {v}" for k, v in t["cell_counts"].items())
    tr = t["transform"]
    lines.append(f"Cells ({sum(t['cell_counts'].values())}): {counts}")
    lines.append(
        f"Cell frame: rotated {tr['rotation_deg']:.1f}°, {tr['scale']:.3f} {t['cells_unit']}/px, "
        f"shifted ({tr['translation'][0]:.0f}, {tr['translation'][1]:.0f}) {t['cells_unit']}"
    )
    return "\n".join(lines)
