"""Streaming parse of imzML metadata: the header with a real XML parser, the spectrum list
block by block.

Blocks of whole spectra come from :class:`._blocks.SpectrumBlocks` (a local file mapped one
span of about ``2 * BLOCK_BYTES`` at a time, other sources through one reusable buffer
of that size: memory bounded whatever the file size).
Each block is read by the fast scan (:mod:`._scanner`, cut into parts scanned by all cores
at once) when it repeats the template of the first spectrum, else spectrum by spectrum by
the XML parser (:mod:`._reference`); both paths write the same compact typed columns
(:class:`Columns`) and give identical results.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from ..errors import ImzMLFormatError, UnsupportedImzMLError
from . import _scanner as scanner
from ._blocks import BufferReader, SpectrumBlocks, _NoSpectrumList
from ._cv import DTYPES
from ._reference import FORBIDDEN, Header, Record, ReferenceParser, read_header
from ._validate import MAX_GRID_SIDE

BLOCK_BYTES = 8 * 2**20  # XML scanned per step: bounds memory, whatever the file size

#: The values of one spectrum, in order: the integer columns, then the m/z hints.
RECORD_FIELDS = ("x", "y", "z", "mz_offset", "mz_length", "intensity_offset",
                 "intensity_length", "lowest_mz", "highest_mz")
_COUNT = re.compile(rb'\scount="(\d+)"')
_INT32 = (-(2**31), 2**31)
# Rows allocated at once for a declared spectrum count: untouched pages of a larger
# allocation cost no memory, and a hostile count cannot ask for more than this.
_MAX_RESERVE = 2**26


class Columns:
    """Per-spectrum metadata as compact typed arrays, grown as spectra are added.

    ``coords`` int32 (n, 3) x, y, z; ``mz_offset``/``intensity_offset`` int64 byte offsets
    in the .ibd (as written: not yet unwrapped); ``mz_length``/``intensity_length`` int32
    lengths in points. Values that do not fit these types are errors (no position or
    length that large can be read).
    """

    def __init__(self, capacity: int):
        capacity = max(1, int(capacity))
        self.n = 0
        self.coords = np.empty((capacity, 3), np.int32)
        self.mz_offset = np.empty(capacity, np.int64)
        self.mz_length = np.empty(capacity, np.int32)
        self.intensity_offset = np.empty(capacity, np.int64)
        self.intensity_length = np.empty(capacity, np.int32)

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self.coords, self.mz_offset, self.mz_length, self.intensity_offset,
                self.intensity_length)

    def _resize(self, capacity: int) -> None:
        for a in self._arrays():  # in place (realloc): these arrays are never shared
            a.resize((capacity, *a.shape[1:]), refcheck=False)

    def reserve(self, extra: int) -> None:
        """Room for ``extra`` more rows."""
        need = self.n + extra
        if need > len(self.coords):
            self._resize(max(need, len(self.coords) * 3 // 2))

    def row(self, i: int) -> tuple[int, ...]:
        """Row ``i``'s seven integers in :data:`RECORD_FIELDS` order."""
        return (*(int(v) for v in self.coords[i]), int(self.mz_offset[i]),
                int(self.mz_length[i]), int(self.intensity_offset[i]),
                int(self.intensity_length[i]))

    def add(self, rows: list[tuple], source: str) -> None:
        """Append rows of the XML-parser path (Python ints), checking they fit."""
        first = self.n
        values = np.array([r[:7] for r in rows], dtype=object)
        for col in (0, 1, 2, 4, 6):
            column = values[:, col]
            bad = np.flatnonzero((column < _INT32[0]) | (column >= _INT32[1]))
            if len(bad):
                raise _too_large(source, first + int(bad[0]), rows[bad[0]], col)
        self.reserve(len(rows))
        stop = first + len(rows)
        ints = values.astype(np.int64)
        self.coords[first:stop] = ints[:, :3]
        self.mz_offset[first:stop] = ints[:, 3]
        self.mz_length[first:stop] = ints[:, 4]
        self.intensity_offset[first:stop] = ints[:, 5]
        self.intensity_length[first:stop] = ints[:, 6]
        self.n = stop

    def put(self, other: Columns, n: int, at: int) -> None:
        """Rows [at, at + n) from the first ``n`` rows of ``other`` (room reserved)."""
        for mine, theirs in zip(self._arrays(), other._arrays()):
            mine[at : at + n] = theirs[:n]

    def trim(self) -> None:
        """Release the rows beyond ``n``."""
        self._resize(self.n)

    def as_dict(self) -> dict[str, np.ndarray]:
        """The columns by name (x, y, z are views of ``coords``)."""
        c = self.coords[: self.n]
        return {"x": c[:, 0], "y": c[:, 1], "z": c[:, 2],
                "mz_offset": self.mz_offset[: self.n], "mz_length": self.mz_length[: self.n],
                "intensity_offset": self.intensity_offset[: self.n],
                "intensity_length": self.intensity_length[: self.n]}


def _too_large(source: str, i: int, row: tuple, col: int) -> Exception:
    """The error for a value of spectrum ``i`` outside the column's type."""
    x, y, z = row[:3]
    if col == 2:
        return UnsupportedImzMLError(source, f"3-D data (spectrum {i} has position z = {z}) "
                                             "is not supported")
    if col < 2:
        if x < 1 or y < 1:
            return ImzMLFormatError(source, f"spectrum {i} at position x={x}, y={y} lies "
                                            "outside the pixel grid (positions are 1-based)")
        return ImzMLFormatError(source, f"spectrum {i} at position x={x}, y={y} lies beyond "
                                        f"the largest supported grid ({MAX_GRID_SIDE} pixels a side)")
    label = "m/z" if col == 4 else "intensity"
    if row[col] < 0:
        return ImzMLFormatError(source, f"spectrum {i}: negative {label} array length")
    return ImzMLFormatError(source, f"spectrum {i}: {label} array length {row[col]} exceeds "
                                    f"the supported {_INT32[1] - 1} points")


@dataclass
class XmlMetadata:
    """Result of :func:`parse`: the header, the first spectrum's record, the per-spectrum
    columns (:class:`Columns`, trimmed), and the m/z range from the lowest/highest observed
    m/z of the non-empty spectra (None unless every one of them declares both)."""

    header: Header
    first: Record
    table: Columns
    mz_bounds: tuple[float, float] | None
    mz_dtype: str
    intensity_dtype: str
    n_fast: int  # spectra read by the fast scan (the rest by the XML parser)

    @property
    def columns(self) -> dict[str, np.ndarray]:
        return self.table.as_dict()


def _block_bounds(rows: list[tuple]) -> tuple[float, float]:
    """The block's m/z hint extremes over non-empty spectra: NaN when one lacks a value,
    +-inf (neutral) when the block has none."""
    live = [r for r in rows if r[6] > 0]
    if not live:
        return np.inf, -np.inf
    lo = [r[7] for r in live]
    hi = [r[8] for r in live]
    return (np.nan if np.isnan(lo).any() else min(lo),
            np.nan if np.isnan(hi).any() else max(hi))


class _Recount(Exception):
    """The fast scan found a different number of spectra than the file declares."""


def _run(stream: Any, source: str, fast: bool) -> XmlMetadata:
    def error(problem: str) -> ImzMLFormatError:
        return ImzMLFormatError(source, problem)

    try:
        blocks = SpectrumBlocks(stream, BLOCK_BYTES, error)
    except _NoSpectrumList as exc:
        if FORBIDDEN.search(exc.args[0]):
            raise error("DOCTYPE/ENTITY declarations are not allowed in imzML") from None
        raise error("no <spectrumList> found (not an imzML file, or truncated)") from None
    head = read_header(blocks.header, error)
    if blocks.list_tag.endswith(b"/>"):
        raise error("the spectrum list is empty")
    count = _COUNT.search(blocks.list_tag)
    head.spectrum_count = int(count.group(1)) if count else None
    ref = ReferenceParser(source, head)
    declared = head.spectrum_count or 0
    table = Columns(declared if 0 < declared <= _MAX_RESERVE else 2**16)
    lows: list[float] = []
    highs: list[float] = []
    kinds: set = set()
    n_fast = 0
    first: Record | None = None
    scan: scanner.BlockScanner | None = None
    try:
        for chunk in blocks:
            if first is None:
                data = bytes(chunk)
                end = data.find(b"</spectrum>")
                if end < 0:
                    continue  # nothing but whitespace before the first spectrum ends
                text = data[: end + len(b"</spectrum>")]
                del data
                elem = next(ref.spectra(text))
                first = ref.record(elem, 0)
                if fast:
                    learned = scanner.learn(text, elem, first, ref.row(first, 0), Columns)
                    scan = None if learned is None else scanner.BlockScanner(learned, Columns)
            got = None
            if scan is not None:
                table.reserve(scan.tpl.rows_bound(len(chunk)))
                got = scan.scan(chunk, table, table.n)
            if got is not None:
                n, lo, hi = got
                table.n += n
                n_fast += n
                kinds.add(scan.tpl.kind)  # type: ignore[union-attr]
            else:
                rows = []
                for elem in ref.spectra(bytes(chunk)):
                    row, kind = ref.row(ref.record(elem, table.n + len(rows)),
                                        table.n + len(rows))
                    rows.append(row)
                    kinds.add(kind)
                if not rows:
                    continue
                lo, hi = _block_bounds(rows)
                table.add(rows, source)
            lows.append(lo)
            highs.append(hi)
    finally:
        if scan is not None:
            scan.close()
    if first is None or table.n == 0:
        raise error("the spectrum list is empty")
    if n_fast and head.spectrum_count is not None and head.spectrum_count != table.n:
        raise _Recount()
    table.trim()
    lo, hi = float(np.min(lows)), float(np.max(highs))  # NaN propagates
    bounds = (lo, hi) if np.isfinite(lo) and np.isfinite(hi) else None
    mz_dtype, intensity_dtype = _dtypes(kinds, source)
    return XmlMetadata(head, first, table, bounds, mz_dtype, intensity_dtype, n_fast)


def _dtypes(kinds: set, source: str) -> tuple[str, str]:
    """The m/z and intensity precisions shared by all spectra."""
    chosen = []
    for pos, label in ((0, "m/z"), (2, "intensity")):
        precisions = sorted({kd[pos] for kd in kinds})
        if len(precisions) > 1:
            raise UnsupportedImzMLError(
                source, f"spectra store {label} arrays with different precisions "
                f"({', '.join(precisions)})")
        if precisions[0] not in DTYPES:
            raise UnsupportedImzMLError(
                source, f"{label} arrays as 16-bit floats are not supported")
        compressions = sorted({kd[pos + 1] for kd in kinds} - {"no_compression"})
        if compressions:
            raise UnsupportedImzMLError(
                source, f"{label} arrays are compressed ({', '.join(compressions)}); "
                "only uncompressed imzML is supported (rewrite it without compression)")
        chosen.append(precisions[0])
    return chosen[0], chosen[1]


def parse(data: bytes | IO[bytes] | Any, source: str, *, fast: bool = True) -> XmlMetadata:
    """Parse imzML XML given whole (any bytes-like object) or as a binary stream with
    ``readinto`` (a local file, an fsspec file); errors name ``source``.

    ``fast=False`` reads every spectrum with the XML parser (the reference the fast scan is
    tested against). When the fast scan finds a different number of spectra than the
    spectrum list declares, the whole file is parsed again with the XML parser (a stream
    must then be seekable).
    """
    stream = data if hasattr(data, "readinto") else BufferReader(data)
    try:
        return _run(stream, source, fast)
    except _Recount:
        stream.seek(0)
        return _run(stream, source, False)
