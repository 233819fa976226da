"""The result store layer: a Zarr v3 hierarchy with OME-NGFF 0.5 metadata.

The engine writes through it, regions and the report read through it; it imports nothing
above it (only errors and :mod:`ionmap.storage`). Public zarr API only.

- :mod:`~ionmap.store.layout`: paths, format version, chunk/shard :class:`Layout`,
  pyramid level shapes;
- :mod:`~ionmap.store.ngff`: OME-NGFF metadata builders;
- :mod:`~ionmap.store.backend`: opening local or fsspec stores, storage errors, preparing
  an output location;
- :mod:`~ionmap.store.write`: creating arrays, band writes, normalisation, pyramid;
- :mod:`~ionmap.store.checkpoint`: progress and the completion marker;
- :mod:`~ionmap.store.labels`: OME-NGFF label images;
- :mod:`~ionmap.store.result`: reading (:func:`open_result`, :class:`Result`).
"""
from .backend import open_store, prepare_output, read_root_attrs, update_root_attrs, worker_store
from .checkpoint import Checkpoint
from .labels import write_labels
from .layout import FEATURES, FORMAT, ION, LABELS, MASK, MASS_ERROR, TIC, WORK, Layout, level_shapes
from .result import Result, open_result
from .write import (
                     create_result,
                     delete_scratch,
                     display_ranges,
                     downsample_mean,
                     normalize_band,
                     pyramid_band,
                     read_mass_error,
                     read_norm,
                     write_band,
                     write_display_ranges,
)

__all__ = [
    "FEATURES", "FORMAT", "ION", "LABELS", "MASK", "MASS_ERROR", "TIC", "WORK", "Layout", "level_shapes",
    "open_store", "prepare_output", "read_root_attrs", "update_root_attrs", "worker_store",
    "create_result", "write_band", "read_mass_error", "read_norm", "normalize_band", "delete_scratch",
    "downsample_mean", "pyramid_band", "display_ranges", "write_display_ranges",
    "Checkpoint", "write_labels", "Result", "open_result",
]
