"""OME-NGFF label images inside a result store (``ion_images/labels/NAME``)."""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from ..errors import InputError, StorageError
from ._backend import open_store, read_root_attrs
from ._layout import ION, LABELS, Layout
from ._ngff import OME_VERSION, image_label, multiscales
from ._write import create_array


def write_labels(
    result_url: str | os.PathLike, name: str, labels: np.ndarray, *,
    colors: Mapping[int, Sequence[int]] | Iterable[Mapping] | None = None,
    properties: Mapping[int, Mapping] | Iterable[Mapping] | None = None,
    provenance: Mapping[str, Any] | None = None,
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
        provenance: what made the labels (e.g. map, parameters, time), stored as the
            label group's ``ionmap`` attribute.

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
    label = group.create_group(name, overwrite=True, attributes={"ome": {
        "version": OME_VERSION,
        "image-label": image_label(colors, properties),
        "multiscales": multiscales(name, "yx", n_levels, pixel, method="subsample",
                                   centred=False),
    }, **({"ionmap": dict(provenance)} if provenance else {})})
    for level in range(n_levels):
        data = labels[:: 2**level, :: 2**level]
        create_array(label, str(level), data.shape, str(labels.dtype), layout, "yx")[...] = data
    if name not in existing:
        existing.append(name)
    group.update_attributes({"ome": {"version": OME_VERSION, "labels": existing}})
