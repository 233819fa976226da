"""The fast scan of the spectrum list: a template learned from the first spectrum, then
each block of spectra checked against it and parsed in one compiled pass
(``ionmap._xmlscan.scan_block``: integers and the m/z hint extremes parsed in place, typed
columns written directly, no per-spectrum Python); :class:`BlockScanner` runs it on the
parts of a block on all cores at once.

The template is verified against the XML parser's reading of the first spectrum; every
later spectrum must show exactly the template's sequence of relevant parameters (and
group references). A block where that cannot be confirmed (comments, CDATA, other
attribute orders, extra or missing parameters, per-spectrum overrides, values the
compiled parser does not read exactly as the XML-parser path, ...) is declined, and the
caller reads it with :class:`.reference.ReferenceParser`; both give identical results.
"""
from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .. import _xmlscan
from ._cv import SCANNED_BYTES, SCANNED_SET, TERM_BY_ACCESSION, local
from ._reference import Record, Row

_VALUE_ATTR = re.compile(rb'\svalue="')
#: Column codes of ``scan_block``: the integer columns, then the m/z hints.
COLUMN_CODES = {"x": 0, "y": 1, "z": 2, "mz_offset": 3, "mz_length": 4,
                "intensity_offset": 5, "intensity_length": 6, "lowest_mz": 7, "highest_mz": 8}
_REQUIRED = ("x", "y", "mz_offset", "mz_length", "intensity_offset", "intensity_length")
#: Each spectrum of a block has at least ``k`` tokens, each of at least this many bytes.
TOKEN_BYTES = len(b'accession="')
#: A block is cut into parts of at least this many bytes, scanned by threads at once.
PART_BYTES = 2 * 2**20
#: Threads that scan the parts of one block.
SCAN_THREADS = os.cpu_count() or 1
_SPECTRUM_END = b"</spectrum>"


@dataclass(frozen=True)
class Template:
    """The token layout of one spectrum (see ``ionmap._xmlscan.scan_block``)."""

    refs: tuple[bytes, ...]
    fixed: tuple[bytes, ...]
    has_value: np.ndarray  # uint8 (k,)
    cols: np.ndarray  # int32 (k,)
    kind: tuple[str, str, str, str]  # precisions and compressions of the arrays

    def rows_bound(self, nbytes: int) -> int:
        """Most spectra a block of ``nbytes`` can hold."""
        return nbytes // (TOKEN_BYTES * len(self.fixed)) + 1

    def scan(self, block, columns, row0: int) -> tuple[int, float, float] | None:
        """Scan ``block`` into rows ``row0 ..`` of ``columns`` (room for
        :meth:`rows_bound` rows): (spectra, lowest, highest m/z hint), or None when the
        block differs from the template."""
        return _xmlscan.scan_block(
            block, SCANNED_BYTES, self.refs, self.fixed, self.has_value, self.cols,
            columns.coords, columns.mz_offset, columns.mz_length, columns.intensity_offset,
            columns.intensity_length, row0)


def learn(text: bytes, first: ET.Element, rec: Record, row: Row, columns_type) -> Template | None:
    """The template of the first spectrum (``text``, parsed as ``first``/``rec``/``row`` by
    the XML parser), or None when the fast scan cannot reproduce that reading exactly.
    ``columns_type(capacity)`` makes scratch columns for the check."""
    expected: list[tuple[str, object]] = []  # (accession, context) in document order
    refs: list[bytes] = []
    arrays = 0

    def walk(elem: ET.Element, context: object) -> None:
        nonlocal arrays
        for child in elem:
            name = local(child.tag)
            if name == "cvParam":
                if child.get("accession", "").encode() in SCANNED_SET:
                    expected.append((child.get("accession"), context))
            elif name == "referenceableParamGroupRef":
                refs.append(child.get("ref", "").encode())
            elif name == "scan" and context == "spectrum":
                walk(child, "scan")
            elif name == "binaryDataArray":
                arrays += 1
                walk(child, arrays - 1)
            else:
                walk(child, context)

    walk(first, "spectrum")
    found = _xmlscan.scan(text, SCANNED_BYTES, tuple(refs), 0)
    if found is None:
        return None
    tokens = [bytes(t[:size]) for t, size in zip(*found[:2])]
    if (not tokens or len(tokens) != len(expected) or found[2] != len(refs)
            or any(t.partition(b'"')[0].decode() != acc for t, (acc, _) in zip(tokens, expected))):
        return None
    kinds = [a["kind"] for a in rec.arrays]
    if kinds.count("mz_array") != 1 or kinds.count("intensity_array") != 1:
        return None
    where = {("x", "scan"): "x", ("y", "scan"): "y", ("z", "scan"): "z",
             ("lowest_mz", "spectrum"): "lowest_mz", ("highest_mz", "spectrum"): "highest_mz",
             ("offset", kinds.index("mz_array")): "mz_offset",
             ("length", kinds.index("mz_array")): "mz_length",
             ("offset", kinds.index("intensity_array")): "intensity_offset",
             ("length", kinds.index("intensity_array")): "intensity_length"}
    cols = np.full(len(tokens), -1, np.int32)
    fixed, has_value = [], np.zeros(len(tokens), np.uint8)
    seen: set[str] = set()
    for j, ((acc, context), token) in enumerate(zip(expected, tokens)):
        hits = [m.end() for m in _VALUE_ATTR.finditer(token)]
        if len(hits) > 1:
            return None
        has_value[j] = bool(hits)
        fixed.append(token[: hits[0]] if hits else token)
        name = where.get((TERM_BY_ACCESSION[acc], context))
        if name is not None:
            if name in seen or not hits:
                return None  # given twice, or without a value: let the XML parser decide
            seen.add(name)
            cols[j] = COLUMN_CODES[name]
    if not seen.issuperset(_REQUIRED):
        return None
    values, kind = row
    tpl = Template(tuple(refs), tuple(fixed), has_value, cols, kind)
    check = columns_type(tpl.rows_bound(len(text)))
    got = tpl.scan(text, check, 0)
    live = values[6] > 0
    want = (1, values[7] if live else np.inf, values[8] if live else -np.inf)
    if (got is None or not np.array_equal(got, want, equal_nan=True)
            or check.row(0) != tuple(values[:7])):
        return None
    return tpl


class BlockScanner:
    """:meth:`Template.scan` of a block cut at spectrum ends into up to ``threads``
    parts (default :data:`SCAN_THREADS`) of at least :data:`PART_BYTES`, scanned at once
    (the compiled scan runs without the GIL). The first part is scanned into the caller's
    columns in place, the others into scratch columns of this scanner (kept for the next
    block) and then copied after it, so the rows are those of one serial scan. A block
    that any part declines is declined whole. ``close`` ends the threads."""

    def __init__(self, tpl: Template, columns_type, threads: int | None = None):
        self.tpl = tpl
        self._columns_type = columns_type
        self._threads = max(1, threads or SCAN_THREADS)
        self._pool: ThreadPoolExecutor | None = None
        self._scratch: list = []

    def scan(self, block, columns, row0: int) -> tuple[int, float, float] | None:
        """As :meth:`Template.scan` (``columns`` has room for ``rows_bound(len(block))``
        rows from ``row0``)."""
        cuts = self._cuts(block)
        if len(cuts) < 3:
            return self.tpl.scan(block, columns, row0)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads - 1,
                                            thread_name_prefix="ionmap-xml-scan")
        while len(self._scratch) < len(cuts) - 2:
            self._scratch.append(self._columns_type(1))
        views = [block[a:b] for a, b in zip(cuts, cuts[1:])]
        try:
            running = []
            for view, scratch in zip(views[1:], self._scratch):
                scratch.n = 0
                scratch.reserve(self.tpl.rows_bound(len(view)))
                running.append(self._pool.submit(self.tpl.scan, view, scratch, 0))
            got = [self.tpl.scan(views[0], columns, row0)]
            got += [r.result() for r in running]  # every part is done before the block goes
        finally:  # a mapped block can be unmapped once no view of it is left
            for view in views:
                view.release()
        if any(g is None for g in got):
            return None
        row = row0 + got[0][0]
        for (n, _, _), scratch in zip(got[1:], self._scratch):
            columns.put(scratch, n, row)
            row += n
        lows, highs = [g[1] for g in got], [g[2] for g in got]
        return row - row0, float(np.min(lows)), float(np.max(highs))  # NaN propagates

    def _cuts(self, block) -> list[int]:
        """0, the ends of spectra nearest after each part's nominal start, len(block)."""
        size = len(block)
        n = min(self._threads, size // PART_BYTES)
        cuts = [0]
        for i in range(1, n):
            at = _xmlscan.find(block, _SPECTRUM_END, max(cuts[-1], i * size // n), size)
            if at < 0:
                break
            cut = at + len(_SPECTRUM_END)
            if cut < size:
                cuts.append(cut)
        return cuts + [size]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
