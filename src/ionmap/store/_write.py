"""Writing a result store: creating its arrays, band writes (run inside tasks),
normalisation, the pyramid and viewer display ranges.

See :mod:`ionmap.store._layout` for the paths; a band task writes whole shards only.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr
import zarr.codecs

from ._backend import Store, storage_errors
from ._layout import (
    FEATURES,
    ION,
    ION_PLANES_PER_CHUNK,
    MASK,
    MASS_ERROR,
    TIC,
    WORK,
    Layout,
    level_shapes,
)
from ._ngff import OME_VERSION, DisplayRange, multiscales, omero

# -- creating a result -----------------------------------------------------------------------


def create_array(
    group: zarr.Group, name: str, shape: tuple[int, ...], dtype: str, layout: Layout,
    dims: Sequence[str], fill: Any = 0, planes_per_chunk: int = 0,
) -> zarr.Array:
    chunks, shards = layout.chunking(shape, np.dtype(dtype).itemsize, planes_per_chunk)
    return group.create_array(
        name, shape=shape, dtype=dtype, chunks=chunks, shards=shards, fill_value=fill,
        dimension_names=list(dims), overwrite=True, compressors=_compressor(),
    )


def _compressor() -> zarr.codecs.BloscCodec:
    # Noisy float images barely compress (~1.5x); Blosc lz4 with byte shuffle gets the
    # same ratio as zstd at 2x its speed, and every Zarr v3 reader has it.
    return zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


@storage_errors
def create_root(store: Store, attrs: dict) -> None:
    """Create the root group alone (attrs with complete = false) and ``_work``: the state
    of a run that spills before it knows its layout (:func:`create_result` follows)."""
    root = zarr.open_group(store, mode="w", zarr_format=3, attributes={"ionmap": attrs})
    root.create_group(WORK)


@storage_errors
def create_result(
    store: Store, attrs: dict, layout: Layout, channel_names: Sequence[str],
    pixel_size_um: Sequence[float] | None, *, normalized: bool,
    axis: np.ndarray | None = None, mass_error: bool = False, keep_work: bool = False,
) -> None:
    """Create the root (attrs with complete = false), ion_images, tic, mask, the scratch
    group of a normalised run, given a feature ``axis`` (m/z, Th) the features, and with
    ``mass_error`` the recalibration maps. ``keep_work``: the root exists (from
    :func:`create_root`) and its ``_work`` (the spill) stays; the attrs are replaced."""
    if keep_work:
        root = zarr.open_group(store, mode="r+", zarr_format=3)
        root.update_attributes({"ionmap": attrs})
    else:
        root = zarr.open_group(store, mode="w", zarr_format=3, attributes={"ionmap": attrs})
    ny, nx = layout.shape
    levels = level_shapes(layout.shape)
    k = len(channel_names)
    ion = root.create_group(ION, overwrite=True, attributes={"ome": {
        "version": OME_VERSION,
        "multiscales": multiscales(ION, "cyx", len(levels), pixel_size_um, method="mean"),
        "omero": omero(channel_names, None),
    }})
    tic = root.create_group(TIC, overwrite=True, attributes={"ome": {
        "version": OME_VERSION,
        "multiscales": multiscales(TIC, "yx", len(levels), pixel_size_um, method="mean"),
    }})
    for level, (ly, lx) in enumerate(levels):
        create_array(ion, str(level), (k, ly, lx), "float32", layout, "cyx",
                      planes_per_chunk=ION_PLANES_PER_CHUNK)
        create_array(tic, str(level), (ly, lx), "float32", layout, "yx")
    create_array(root, MASK, (ny, nx), "bool", layout, "yx", fill=False)
    if mass_error:
        create_array(root, MASS_ERROR, (3, ny, nx), "float32", layout, "cyx",
                     fill=float("nan"), planes_per_chunk=3)
    if normalized:
        work = root.require_group(WORK)
        create_array(work, ION, (k, ny, nx), "float32", layout, "cyx",
                      planes_per_chunk=ION_PLANES_PER_CHUNK)
        create_array(work, "norm", (ny, nx), "float64", layout, "yx")
    if axis is not None:
        _create_features(root, axis, layout, pixel_size_um, normalized=normalized)


def _create_features(
    root: zarr.Group, axis: np.ndarray, layout: Layout,
    pixel_size_um: Sequence[float] | None, *, normalized: bool,
) -> None:
    """Create ``features/mz`` (the axis, m/z in Th) and the empty cube ``features/0``."""
    axis = np.asarray(axis, dtype=np.float64)
    ny, nx = layout.shape
    group = root.create_group(FEATURES, overwrite=True, attributes={"ome": {
        "version": OME_VERSION,
        "multiscales": multiscales(FEATURES, "cyx", 1, pixel_size_um, method="mean"),
        # viewers list the features by their m/z, not as anonymous channels
        "omero": omero([f"m/z {mz:.4f}" for mz in axis], None),
    }})
    mz = group.create_array("mz", shape=axis.shape, dtype="float64",
                            chunks=(max(1, len(axis)),), dimension_names=["c"], overwrite=True)
    mz[...] = axis
    create_array(group, "0", (len(axis), ny, nx), "float32", layout, "cyx")
    if normalized:
        work = root.require_group(WORK)
        create_array(work, FEATURES, (len(axis), ny, nx), "float32", layout, "cyx")


# -- band I/O (runs inside tasks) ------------------------------------------------------------


def _array(store: Store, path: str, mode: str = "r+") -> zarr.Array:
    return zarr.open_array(store, path=path, mode=mode, zarr_format=3)


@storage_errors
def write_band(
    store: Store, y0: int, *, images: np.ndarray, tic: np.ndarray,
    mask: np.ndarray, norm: np.ndarray | None = None, features: np.ndarray | None = None,
    mass_error: np.ndarray | None = None,
) -> None:
    """Write one band (rows y0 .. y0 + rows, full width) of every level-0 array.

    With ``norm`` (the per-pixel normaliser) the raw images and features go to the scratch
    group, to be normalised by :func:`normalize_band` once the global scale is known.
    """
    y1 = y0 + mask.shape[0]
    _array(store, f"{WORK}/{ION}" if norm is not None else f"{ION}/0")[:, y0:y1, :] = images
    if features is not None:
        path = f"{WORK}/{FEATURES}" if norm is not None else f"{FEATURES}/0"
        _array(store, path)[:, y0:y1, :] = features
    if norm is not None:
        _array(store, f"{WORK}/norm")[y0:y1, :] = norm
    if mass_error is not None:
        _array(store, MASS_ERROR)[:, y0:y1, :] = mass_error
    _array(store, f"{TIC}/0")[y0:y1, :] = tic
    _array(store, MASK)[y0:y1, :] = mask


@storage_errors
def read_norm(store: Store) -> np.ndarray:
    """The per-pixel normaliser (float64 TIC or RMS) written by the bands."""
    return _array(store, f"{WORK}/norm", "r")[...]


@storage_errors
def read_mass_error(store: Store) -> np.ndarray:
    """The (3, y, x) float32 mass error maps (before, after, model offset; ppm)."""
    return _array(store, MASS_ERROR, "r")[...]


@storage_errors
def normalize_band(
    store: Store, y0: int, y1: int, scale: float, features: bool
) -> None:
    """ion_images/0 (and features/0) rows [y0, y1) = raw × scale / norm (0 where norm is 0).

    Reads the scratch copies, so running it twice gives the same result (idempotent).
    """
    norm = _array(store, f"{WORK}/norm", "r")[y0:y1, :]
    factor = np.zeros_like(norm)
    np.divide(scale, norm, out=factor, where=norm > 0)
    pairs = [(f"{WORK}/{ION}", f"{ION}/0")]
    if features:
        pairs.append((f"{WORK}/{FEATURES}", f"{FEATURES}/0"))
    for src, dst in pairs:
        raw = _array(store, src, "r")[:, y0:y1, :]
        _array(store, dst)[:, y0:y1, :] = (raw * factor).astype(np.float32)


@storage_errors
def delete_scratch(store: Store) -> None:
    """Remove ``_work`` (after the normalised arrays are written)."""
    root = zarr.open_group(store, mode="r+", zarr_format=3)
    if WORK in root:
        del root[WORK]


def downsample_mean(block: np.ndarray) -> np.ndarray:
    """Mean of 2 × 2 pixel blocks over the last two axes; odd edges average what exists.

    Sums in float64 (four strided views of the block, no padded copy), result in the
    block's dtype."""
    *lead, ny, nx = block.shape
    ey, ex = ny - ny % 2, nx - nx % 2
    out = np.empty((*lead, math.ceil(ny / 2), math.ceil(nx / 2)), np.float64)
    core = out[..., : ey // 2, : ex // 2]
    np.add(block[..., 0:ey:2, 0:ex:2], block[..., 1:ey:2, 0:ex:2], out=core, dtype=np.float64)
    core += block[..., 0:ey:2, 1:ex:2]
    core += block[..., 1:ey:2, 1:ex:2]
    core *= 0.25
    if nx % 2:  # the last column: pairs of rows
        np.add(block[..., 0:ey:2, -1], block[..., 1:ey:2, -1], out=out[..., : ey // 2, -1],
               dtype=np.float64)
        out[..., : ey // 2, -1] *= 0.5
    if ny % 2:  # the last row: pairs of columns, and the corner alone
        np.add(block[..., -1, 0:ex:2], block[..., -1, 1:ex:2], out=out[..., -1, : ex // 2],
               dtype=np.float64)
        out[..., -1, : ex // 2] *= 0.5
        if nx % 2:
            out[..., -1, -1] = block[..., -1, -1]
    return out.astype(block.dtype)


@storage_errors
def pyramid_band(store: Store, group: str, level: int, y0: int, y1: int) -> None:
    """Level ``level`` rows [y0, y1) of ``group`` from level ``level - 1`` (2 × 2 means)."""
    src = _array(store, f"{group}/{level - 1}", "r")
    dst = _array(store, f"{group}/{level}")
    block = src[..., 2 * y0 : min(2 * y1, src.shape[-2]), :]
    dst[..., y0:y1, :] = downsample_mean(block)


def display_ranges(store: Store) -> list[DisplayRange]:
    """(min, max, start, end) display range per channel from the coarsest level.

    ``end`` is the 99.5th percentile of non-zero pixels so a few hot pixels do not wash out
    a viewer's contrast.
    """
    ion = zarr.open_group(store, path=ION, mode="r", zarr_format=3)
    n_levels = len(ion.attrs["ome"]["multiscales"][0]["datasets"])
    data = _array(store, f"{ION}/{n_levels - 1}", "r")[...]
    ranges = []
    for channel in data:
        values = channel[channel != 0]
        if values.size == 0:
            ranges.append((0.0, 0.0, 0.0, 1.0))
            continue
        lo, hi = float(values.min()), float(values.max())
        end = float(np.percentile(values, 99.5))
        ranges.append((lo, hi, min(lo, 0.0), end if end > 0 else hi))
    return ranges


@storage_errors
def write_display_ranges(store: Store, names: Sequence[str]) -> None:
    """Store viewer contrast ranges in the ion_images ``omero`` metadata."""
    ion = zarr.open_group(store, path=ION, mode="r+", zarr_format=3)
    ome = dict(ion.attrs["ome"])
    ome["omero"] = omero(names, display_ranges(store))
    ion.update_attributes({"ome": ome})
