"""The result store layer: a Zarr v3 hierarchy with OME-NGFF 0.5 metadata.

The engine writes through it, regions and the report read through it; it imports nothing
above it (only errors and :mod:`ionmap._files`). Public zarr API only.

- :mod:`~ionmap.store._layout`: paths, format version, chunk/shard :class:`Layout`,
  pyramid level shapes;
- :mod:`~ionmap.store._ngff`: OME-NGFF metadata builders;
- :mod:`~ionmap.store._backend`: opening local or fsspec stores, storage errors, preparing
  an output location;
- :mod:`~ionmap.store._write`: creating arrays, band writes, normalisation, pyramid;
- :mod:`~ionmap.store._checkpoint`: progress and the completion marker;
- :mod:`~ionmap.store._spill`: the picked peaks a one-pass feature run keeps between its
  passes (raw files under ``_work/spill``, memory-mapped);
- :mod:`~ionmap.store._labels`: OME-NGFF label images;
- :mod:`~ionmap.store._result`: reading (:func:`open_result`, :class:`Result`).
"""
from ._analysis import now, remove_stale_labels, write_hotspots, write_maps, write_mean_spectrum
from ._backend import open_store, prepare_output, read_root_attrs, update_root_attrs, worker_store
from ._checkpoint import Checkpoint
from ._labels import write_labels
from ._layout import (
                     FEATURES,
                     FORMAT,
                     ION,
                     LABELS,
                     MASK,
                     MASS_ERROR,
                     TIC,
                     TILE,
                     WORK,
                     Layout,
                     level_shapes,
)
from ._result import Result, open_result
from ._spill import Spill, SpillWriter, delete_spill, read_spill, spill_root
from ._write import (
                     create_result,
                     create_root,
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
    "FEATURES", "FORMAT", "ION", "LABELS", "MASK", "MASS_ERROR", "TILE", "TIC", "WORK", "Layout", "level_shapes",
    "open_store", "prepare_output", "read_root_attrs", "update_root_attrs", "worker_store",
    "create_result", "create_root", "write_band", "read_mass_error", "read_norm", "normalize_band", "delete_scratch",
    "downsample_mean", "pyramid_band", "display_ranges", "write_display_ranges",
    "Checkpoint", "Spill", "SpillWriter", "delete_spill", "read_spill", "spill_root",
    "write_labels", "Result", "open_result",
    "write_mean_spectrum", "write_maps", "write_hotspots", "remove_stale_labels", "now",
]
