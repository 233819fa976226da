"""Names and geometry of a result store: paths, format version, shards and pyramid levels.

Layout (paths relative to the store root)::

    zarr.json            attrs["ionmap"]: version, source, parameters, targets, layout,
                         progress, complete (written false first, true last)
    ion_images/          OME-NGFF image, axes (c, y, x), one channel per target
        0, 1, ...        float32 levels; level l is 2**l times coarser (mean of 2x2 blocks)
        labels/NAME/     OME-NGFF labels (y, x) written by :func:`ionmap.store.write_labels`
    tic/0, tic/1, ...    OME-NGFF image (y, x): total ion count of each pixel's spectrum
    mask                 bool (y, x): the pixel has a spectrum
    features/            only with features: ``mz`` (F,) float64 axis in Th and
        0                float32 (F, y, x) feature cube (an OME-NGFF image, one level)
    mass_error           unless recalibration is off: float32 (3, y, x), per pixel the
                         median error (ppm) of the reference ions on the recorded axis,
                         after the model, and the model offset a(x, y) (NaN: no reference
                         found, or no model)
    _work/               scratch space of an unfinished normalised run (deleted at the end)

Pixel (x, y) of the imzML file (1-based) is image[..., y - 1, x - 1]. Every banded array is
sharded one band tall and the full width wide, so a band task writes whole shard objects
and no two tasks write the same object.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

ION = "ion_images"
TIC = "tic"
MASK = "mask"
FEATURES = "features"
MASS_ERROR = "mass_error"
WORK = "_work"
LABELS = "labels"
#: Version of the ionmap layout inside the root ``ionmap`` attribute.
FORMAT = 1
#: Ion images per inner chunk: reading one channel decodes at most this many, and a band
#: of a few dozen targets is a handful of chunks per tile (Zarr pays per chunk).
ION_PLANES_PER_CHUNK = 4
#: Inner chunk width and maximum band height in pixels (viewers read 256 × 256 tiles).
TILE = 256
#: Target size of an inner chunk of the feature cube (bytes).
INNER_BYTES = 2**20


@dataclass(frozen=True)
class Layout:
    """Chunking of a result store (recorded as ``attrs["layout"]``).

    Attributes:
        shape: (ny, nx) image size in pixels.
        band_rows: rows per band = shard height of every banded array (pixels).
        tile: inner chunk width in pixels (and height limit); inner chunks are
            (1, band_rows, tile) for (c, y, x) arrays.
    """

    shape: tuple[int, int]
    band_rows: int
    tile: int = TILE

    @property
    def n_bands(self) -> int:
        return math.ceil(self.shape[0] / self.band_rows)

    def band_range(self, band: int) -> tuple[int, int]:
        """Rows [y0, y1) of band ``band`` at level 0."""
        y0 = band * self.band_rows
        return y0, min(y0 + self.band_rows, self.shape[0])

    def chunking(self, shape: tuple[int, ...], itemsize: int = 4, planes_per_chunk: int = 0
                 ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(inner chunks, shards) for an array whose last two axes are (y, x).

        A shard spans all planes of the leading axis, ``band_rows`` rows and the full
        (padded) width. Inner chunks are ``band_rows`` × ``tile`` pixels of
        ``planes_per_chunk`` planes, or with 0 as many planes as fit in ``INNER_BYTES``:
        Zarr spends about half a millisecond per chunk, so thousands of one-plane chunks
        per shard (a feature cube) would cost more than the data.
        """
        *lead, ny, nx = shape
        rows = max(1, min(self.band_rows, ny))
        cw = max(1, min(self.tile, nx))
        width = math.ceil(nx / cw) * cw
        if not lead:
            return (rows, cw), (rows, width)
        (n,) = lead
        per = planes_per_chunk or INNER_BYTES // (rows * cw * itemsize)
        per = max(1, min(per, n))
        return (per, rows, cw), (math.ceil(max(n, 1) / per) * per, rows, width)


def level_shapes(shape: tuple[int, int], *, smallest: int = TILE) -> list[tuple[int, int]]:
    """(ny, nx) of each pyramid level: halve (rounding up) until both sides fit ``smallest``."""
    shapes = [tuple(shape)]
    while max(shapes[-1]) > smallest:
        ny, nx = shapes[-1]
        shapes.append((math.ceil(ny / 2), math.ceil(nx / 2)))
    return shapes
