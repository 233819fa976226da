"""The result store: a Zarr v3 hierarchy with OME-NGFF 0.5 metadata.

Layout (paths relative to the store root)::

    zarr.json            attrs["ionmap"]: version, source, parameters, targets, layout,
                         progress, complete (written false first, true last)
    ion_images/          OME-NGFF image, axes (c, y, x), one channel per target
        0, 1, ...        float32 levels; level l is 2**l times coarser (mean of 2x2 blocks)
        labels/NAME/     OME-NGFF labels (y, x) written by :func:`write_labels`
    tic/0, tic/1, ...    OME-NGFF image (y, x): total ion count of each pixel's spectrum
    mask                 bool (y, x): the pixel has a spectrum
    features/            only with features: ``mz`` (F,) float64 axis in Th and
        0                float32 (F, y, x) feature cube (an OME-NGFF image, one level)
    mass_error           only when recalibrated: float32 (3, y, x), per pixel the median
                         error (ppm) of the reference ions on the recorded axis, after the
                         model, and the model offset a(x, y) (NaN: no reference found)
    _work/               scratch space of an unfinished normalised run (deleted at the end)

Pixel (x, y) of the imzML file (1-based) is image[..., y - 1, x - 1]. Every banded array is
sharded one band tall and the full width wide, so a band task writes whole shard objects
and no two tasks write the same object.
"""
from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.abc.store
import zarr.codecs
import zarr.core.sync
import zarr.storage

from ..errors import InputError, IonmapError, StorageError
from ..storage import local_path
from .plan import Layout, level_shapes

ION = "ion_images"
TIC = "tic"
MASK = "mask"
FEATURES = "features"
MASS_ERROR = "mass_error"
WORK = "_work"
LABELS = "labels"
OME_VERSION = "0.5"
#: Version of the ionmap layout inside the root ``ionmap`` attribute.
FORMAT = 1
#: Ion images per inner chunk: reading one channel decodes at most this many, and a band
#: of a few dozen targets is a handful of chunks per tile (Zarr pays per chunk).
ION_PLANES_PER_CHUNK = 4

# A qualitative palette (hex RGB) for channel colours in viewers.
_PALETTE = ("FF00FF", "00FFFF", "FFFF00", "FF0000", "00FF00", "0000FF", "FF8000", "FFFFFF")


# -- opening stores --------------------------------------------------------------------------


def open_store(
    url: str | os.PathLike, storage_options: Mapping[str, Any] | None = None, *,
    read_only: bool = False,
) -> zarr.abc.store.Store:
    """A Zarr store for a local path or an fsspec URL (``s3://bucket/prefix.zarr``).

    ``storage_options`` go to fsspec (e.g. ``{"endpoint_url": "http://127.0.0.1:8333"}``);
    without them s3fs reads the standard AWS variables.
    """
    url = os.fspath(url)
    path = local_path(url)
    if path is None:
        try:
            return zarr.storage.FsspecStore.from_url(
                url, storage_options=dict(storage_options or {}), read_only=read_only
            )
        except (ImportError, ValueError) as exc:
            raise StorageError(url, f"cannot open object store: {exc}") from None
    return zarr.storage.LocalStore(path, read_only=read_only)


@functools.lru_cache(maxsize=16)
def _cached_store(url: str, options_json: str) -> zarr.abc.store.Store:
    return open_store(url, json.loads(options_json))


def worker_store(url: str, storage_options: Mapping[str, Any] | None) -> zarr.abc.store.Store:
    """The writable store for ``url``, opened once per process (tasks call this)."""
    return _cached_store(os.fspath(url), json.dumps(dict(storage_options or {}), sort_keys=True))


def _location(store: zarr.abc.store.Store) -> str:
    if isinstance(store, zarr.storage.LocalStore):
        return str(store.root)
    return f"{getattr(store.fs, 'protocol', ('store',))[0]}://{store.path}"


def _storage_errors(fn):
    """Report failures of the store itself (unreachable server, denied access, full disk)
    as one-line StorageErrors naming the store; ionmap's own errors pass unchanged."""
    @functools.wraps(fn)
    def wrapper(store, *args, **kwargs):
        try:
            return fn(store, *args, **kwargs)
        except IonmapError:
            raise
        except Exception as exc:  # noqa: BLE001 - fsspec backends raise many kinds
            raise StorageError(_location(store), f"{fn.__name__.strip('_').replace('_', ' ')}"
                               f" failed: {type(exc).__name__}: {exc}") from exc
    return wrapper


def _exists(store: zarr.abc.store.Store, key: str) -> bool:
    return zarr.core.sync.sync(store.exists(key))


@_storage_errors
def read_root_attrs(store: zarr.abc.store.Store) -> dict | None:
    """The root ``ionmap`` attribute, or None when the store holds no ionmap result."""
    if not _exists(store, "zarr.json"):
        return None
    try:
        root = zarr.open_group(store, mode="r", zarr_format=3)
    except Exception:  # noqa: BLE001 - any unreadable root is "not an ionmap store"
        return None
    attrs = root.attrs.asdict().get("ionmap")
    return dict(attrs) if isinstance(attrs, Mapping) else None


@_storage_errors
def _is_empty(store: zarr.abc.store.Store) -> bool:
    if isinstance(store, zarr.storage.LocalStore):
        root = Path(store.root)
        return not root.exists() or (root.is_dir() and not any(root.iterdir()))
    return zarr.core.sync.sync(store.is_empty(""))


def prepare_output(
    url: str, storage_options: Mapping[str, Any] | None, *, resume: bool, overwrite: bool
) -> tuple[zarr.abc.store.Store, dict | None]:
    """Open the output store and decide what to do with what is there.

    Returns (store, attrs of the unfinished run to resume, or None for a fresh start).
    Raises StorageError for a finished result without ``overwrite``, for an interrupted run
    without ``resume``/``overwrite``, and for a non-ionmap path (never deleted).
    """
    if local_path(url) is not None and os.path.isfile(local_path(url)):
        raise StorageError(url, "output exists and is a file, not a Zarr store")
    store = open_store(url, storage_options)
    attrs = read_root_attrs(store)
    empty = attrs is None and _is_empty(store)
    if attrs is None:
        if not empty:
            raise StorageError(url, "output exists and is not an ionmap result; refusing to "
                               "overwrite it (choose another OUTPUT)")
        return store, None
    if overwrite:
        _clear(store)
        return store, None
    if attrs.get("complete"):
        if resume:
            return store, attrs
        raise StorageError(url, "a finished ionmap result already exists here "
                           "(use overwrite=True to replace it)")
    if not resume:
        raise StorageError(url, "holds an interrupted conversion (use resume=True to continue "
                           "it or overwrite=True to start again)")
    return store, attrs


@_storage_errors
def _clear(store: zarr.abc.store.Store) -> None:
    zarr.core.sync.sync(store.clear())


# -- creating a result -----------------------------------------------------------------------


def _axes(names: Sequence[str], pixel_size_um: Sequence[float] | None) -> list[dict]:
    axes = []
    for name in names:
        if name == "c":
            axes.append({"name": "c", "type": "channel"})
        else:
            axis = {"name": name, "type": "space"}
            if pixel_size_um is not None:
                axis["unit"] = "micrometer"
            axes.append(axis)
    return axes


def multiscales(
    name: str, axis_names: Sequence[str], n_levels: int,
    pixel_size_um: Sequence[float] | None, *, method: str, centred: bool = True,
) -> list[dict]:
    """OME-NGFF 0.5 ``multiscales`` for ``n_levels`` levels halving y and x.

    Scales are in µm per pixel (x, y from ``pixel_size_um``; 1 per pixel when unknown).
    ``centred``: level l pixels are means of 2**l blocks, so their centres sit
    (2**l - 1) / 2 level-0 pixels in (a translation); False for subsampled labels.
    """
    sx, sy = (1.0, 1.0) if pixel_size_um is None else (float(pixel_size_um[0]),
                                                      float(pixel_size_um[1]))
    lead = [1.0] * (len(axis_names) - 2)
    datasets = []
    for level in range(n_levels):
        f = float(2**level)
        transforms: list[dict] = [{"type": "scale", "scale": [*lead, sy * f, sx * f]}]
        if centred and level:
            shift = (f - 1) / 2
            transforms.append({"type": "translation",
                               "translation": [*(0.0 for _ in lead), sy * shift, sx * shift]})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    return [{
        "name": name,
        "axes": _axes(axis_names, pixel_size_um),
        "datasets": datasets,
        "type": method,
        "metadata": {"description": f"level l = {method} of 2**l x 2**l blocks of level 0"},
    }]


def _omero(names: Sequence[str], windows: Sequence[tuple[float, float, float, float]] | None
           ) -> dict:
    channels = []
    for i, label in enumerate(names):
        lo, hi, start, end = windows[i] if windows else (0.0, 1.0, 0.0, 1.0)
        channels.append({
            "label": label,
            "color": _PALETTE[i % len(_PALETTE)],
            "active": i < 3,
            "window": {"min": lo, "max": hi, "start": start, "end": end},
        })
    return {"channels": channels, "rdefs": {"model": "color"}}


def _create_array(
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


@_storage_errors
def create_result(
    store: zarr.abc.store.Store, attrs: dict, layout: Layout, channel_names: Sequence[str],
    pixel_size_um: Sequence[float] | None, *, normalized: bool,
    axis: np.ndarray | None = None, mass_error: bool = False,
) -> None:
    """Create the root (attrs with complete = false), ion_images, tic, mask, the scratch
    group of a normalised run, given a feature ``axis`` (m/z, Th) the features, and with
    ``mass_error`` the recalibration maps."""
    root = zarr.open_group(store, mode="w", zarr_format=3, attributes={"ionmap": attrs})
    ny, nx = layout.shape
    levels = level_shapes(layout.shape)
    k = len(channel_names)
    ion = root.create_group(ION, attributes={"ome": {
        "version": OME_VERSION,
        "multiscales": multiscales(ION, "cyx", len(levels), pixel_size_um, method="mean"),
        "omero": _omero(channel_names, None),
    }})
    tic = root.create_group(TIC, attributes={"ome": {
        "version": OME_VERSION,
        "multiscales": multiscales(TIC, "yx", len(levels), pixel_size_um, method="mean"),
    }})
    for level, (ly, lx) in enumerate(levels):
        _create_array(ion, str(level), (k, ly, lx), "float32", layout, "cyx",
                      planes_per_chunk=ION_PLANES_PER_CHUNK)
        _create_array(tic, str(level), (ly, lx), "float32", layout, "yx")
    _create_array(root, MASK, (ny, nx), "bool", layout, "yx", fill=False)
    if mass_error:
        _create_array(root, MASS_ERROR, (3, ny, nx), "float32", layout, "cyx",
                      fill=float("nan"), planes_per_chunk=3)
    if normalized:
        work = root.create_group(WORK)
        _create_array(work, ION, (k, ny, nx), "float32", layout, "cyx",
                      planes_per_chunk=ION_PLANES_PER_CHUNK)
        _create_array(work, "norm", (ny, nx), "float64", layout, "yx")
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
    }})
    mz = group.create_array("mz", shape=axis.shape, dtype="float64",
                            chunks=(max(1, len(axis)),), dimension_names=["c"], overwrite=True)
    mz[...] = axis
    _create_array(group, "0", (len(axis), ny, nx), "float32", layout, "cyx")
    if normalized:
        work = root.require_group(WORK)
        _create_array(work, FEATURES, (len(axis), ny, nx), "float32", layout, "cyx")


@_storage_errors
def update_root_attrs(store: zarr.abc.store.Store, attrs: dict) -> None:
    """Replace the root ``ionmap`` attribute (the only writer is the driver process)."""
    zarr.open_group(store, mode="r+", zarr_format=3).update_attributes({"ionmap": attrs})


# -- band I/O (runs inside tasks) ------------------------------------------------------------


def _array(store: zarr.abc.store.Store, path: str, mode: str = "r+") -> zarr.Array:
    return zarr.open_array(store, path=path, mode=mode, zarr_format=3)


@_storage_errors
def write_band(
    store: zarr.abc.store.Store, y0: int, *, images: np.ndarray, tic: np.ndarray,
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


@_storage_errors
def read_norm(store: zarr.abc.store.Store) -> np.ndarray:
    """The per-pixel normaliser (float64 TIC or RMS) written by the bands."""
    return _array(store, f"{WORK}/norm", "r")[...]


@_storage_errors
def read_mass_error(store: zarr.abc.store.Store) -> np.ndarray:
    """The (3, y, x) float32 mass error maps (before, after, model offset; ppm)."""
    return _array(store, MASS_ERROR, "r")[...]


@_storage_errors
def normalize_band(
    store: zarr.abc.store.Store, y0: int, y1: int, scale: float, features: bool
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


@_storage_errors
def delete_scratch(store: zarr.abc.store.Store) -> None:
    """Remove ``_work`` (after the normalised arrays are written)."""
    zarr.core.sync.sync(store.delete_dir(WORK))


def downsample_mean(block: np.ndarray) -> np.ndarray:
    """Mean of 2 × 2 pixel blocks over the last two axes; odd edges average what exists."""
    *lead, ny, nx = block.shape
    oy, ox = math.ceil(ny / 2), math.ceil(nx / 2)
    padded = np.zeros((*lead, oy * 2, ox * 2), dtype=np.float64)
    padded[..., :ny, :nx] = block
    sums = padded.reshape(*lead, oy, 2, ox, 2).sum(axis=(-3, -1))
    counts = np.zeros((oy * 2, ox * 2))
    counts[:ny, :nx] = 1
    counts = counts.reshape(oy, 2, ox, 2).sum(axis=(-3, -1))
    return (sums / counts).astype(block.dtype)


@_storage_errors
def pyramid_band(store: zarr.abc.store.Store, group: str, level: int, y0: int, y1: int) -> None:
    """Level ``level`` rows [y0, y1) of ``group`` from level ``level - 1`` (2 × 2 means)."""
    src = _array(store, f"{group}/{level - 1}", "r")
    dst = _array(store, f"{group}/{level}")
    block = src[..., 2 * y0 : min(2 * y1, src.shape[-2]), :]
    dst[..., y0:y1, :] = downsample_mean(block)


def channel_windows(store: zarr.abc.store.Store) -> list[tuple[float, float, float, float]]:
    """(min, max, start, end) display window per channel from the coarsest level.

    ``end`` is the 99.5th percentile of non-zero pixels so a few hot pixels do not wash out
    a viewer's contrast.
    """
    ion = zarr.open_group(store, path=ION, mode="r", zarr_format=3)
    n_levels = len(ion.attrs["ome"]["multiscales"][0]["datasets"])
    data = _array(store, f"{ION}/{n_levels - 1}", "r")[...]
    windows = []
    for channel in data:
        values = channel[channel != 0]
        if values.size == 0:
            windows.append((0.0, 0.0, 0.0, 1.0))
            continue
        lo, hi = float(values.min()), float(values.max())
        end = float(np.percentile(values, 99.5))
        windows.append((lo, hi, min(lo, 0.0), end if end > 0 else hi))
    return windows


@_storage_errors
def write_channel_windows(store: zarr.abc.store.Store, names: Sequence[str]) -> None:
    """Store viewer contrast windows in the ion_images ``omero`` metadata."""
    ion = zarr.open_group(store, path=ION, mode="r+", zarr_format=3)
    ome = dict(ion.attrs["ome"])
    ome["omero"] = _omero(names, channel_windows(store))
    ion.update_attributes({"ome": ome})


# -- progress checkpoints --------------------------------------------------------------------


class Checkpoint:
    """Records finished bands in the root attrs so that ``--resume`` can skip them.

    Only the driver process writes (no races); writes are throttled to one per
    ``interval`` seconds, and :meth:`flush` writes the rest. A band is recorded only after
    its task returned, i.e. after its data was written.
    """

    def __init__(self, store: zarr.abc.store.Store, attrs: dict, interval: float = 1.0):
        self.store = store
        self.attrs = attrs
        self.interval = interval
        self._done = set(attrs["progress"]["bands_done"])
        self._written = time.monotonic()
        self._dirty = False

    @property
    def done(self) -> set[int]:
        return set(self._done)

    def band_done(self, band: int) -> None:
        self._done.add(int(band))
        self._dirty = True
        if time.monotonic() - self._written >= self.interval:
            self.flush()

    def set(self, key: str, value: Any) -> None:
        """Record a progress flag (e.g. ``axis``, ``normalized``) and write it now."""
        self.attrs["progress"][key] = value
        self._dirty = True
        self.flush()

    def finish(self) -> None:
        """Write ``complete: true`` (the last write of a run)."""
        self.attrs["complete"] = True
        self._dirty = True
        self.flush()

    def flush(self) -> None:
        if not self._dirty:
            return
        self.attrs["progress"]["bands_done"] = sorted(self._done)
        update_root_attrs(self.store, self.attrs)
        self._written = time.monotonic()
        self._dirty = False


# -- labels ----------------------------------------------------------------------------------


def _label_colors(colors: Mapping[int, Sequence[int]] | Iterable[Mapping] | None) -> list[dict]:
    if colors is None:
        return []
    if isinstance(colors, Mapping):
        return [{"label-value": int(v), "rgba": [int(c) for c in rgba]}
                for v, rgba in sorted(colors.items())]
    return [dict(c) for c in colors]


def _label_properties(props: Mapping[int, Mapping] | Iterable[Mapping] | None) -> list[dict]:
    if props is None:
        return []
    if isinstance(props, Mapping):
        return [{"label-value": int(v), **dict(p)} for v, p in sorted(props.items())]
    return [dict(p) for p in props]


def _consistent(colors: list[dict], props: list[dict]) -> tuple[list[dict], list[dict]]:
    """Give colours and properties the same label values (NGFF validators require it)."""
    if not colors or not props:
        return colors, props
    have_c = {c["label-value"] for c in colors}
    have_p = {p["label-value"] for p in props}
    for v in sorted(have_p - have_c):
        rgb = _PALETTE[int(v) % len(_PALETTE)]
        colors.append({"label-value": v,
                       "rgba": [int(rgb[i : i + 2], 16) for i in (0, 2, 4)] + [255]})
    props.extend({"label-value": v} for v in sorted(have_c - have_p))
    key = lambda d: d["label-value"]  # noqa: E731
    return sorted(colors, key=key), sorted(props, key=key)


def write_labels(
    result_url: str | os.PathLike, name: str, labels: np.ndarray, *,
    colors: Mapping[int, Sequence[int]] | Iterable[Mapping] | None = None,
    properties: Mapping[int, Mapping] | Iterable[Mapping] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Write an OME-NGFF label image under ``ion_images/labels/<name>`` of a result.

    Args:
        result_url: a finished result store (local path or URL).
        name: label image name (e.g. ``hotspots``); an existing one is replaced.
        labels: integer array (y, x), same shape as the ion images; 0 is background.
        colors: ``{label value: (r, g, b, a)}`` (0-255) or a list of NGFF color dicts.
        properties: ``{label value: {key: value}}`` or a list of dicts with
            ``label-value``; shown by viewers (e.g. the hotspot's map and class).

    The label pyramid matches the image levels (level l = labels[::2**l, ::2**l]), so the
    labels open in napari over the ion images.
    """
    url = os.fspath(result_url)
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(url, f"labels {name!r} must be integers, got {labels.dtype}")
    if not name or "/" in name or name.startswith("."):
        raise InputError(url, f"invalid label name {name!r}")
    store = open_store(url, storage_options)
    attrs = read_root_attrs(store)
    if attrs is None:
        raise StorageError(url, "not an ionmap result")
    shape = tuple(attrs["shape"])
    if labels.shape != shape:
        raise InputError(url, f"labels {name!r} have shape {labels.shape}, the ion images "
                         f"{shape}")
    layout = Layout(shape, int(attrs["layout"]["band_rows"]))
    pixel = attrs.get("pixel_size_um")
    ion = zarr.open_group(store, path=ION, mode="r+", zarr_format=3)
    n_levels = len(ion.attrs["ome"]["multiscales"][0]["datasets"])
    group = ion.require_group(LABELS)
    existing = list(group.attrs.asdict().get("ome", {}).get("labels", []))
    color_list, prop_list = _consistent(_label_colors(colors), _label_properties(properties))
    label = group.create_group(name, overwrite=True, attributes={"ome": {
        "version": OME_VERSION,
        "image-label": {
            "version": OME_VERSION,
            "colors": color_list,
            "properties": prop_list,
            "source": {"image": "../../"},
        },
        "multiscales": multiscales(name, "yx", n_levels, pixel, method="subsample",
                                   centred=False),
    }})
    for level in range(n_levels):
        data = labels[:: 2**level, :: 2**level]
        _create_array(label, str(level), data.shape, str(labels.dtype), layout, "yx")[...] = data
    if name not in existing:
        existing.append(name)
    group.update_attributes({"ome": {"version": OME_VERSION, "labels": existing}})
