"""Fast, streaming parse of imzML metadata.

The small header (fileDescription, referenceableParamGroupList, scanSettingsList, ...) is
parsed with a real XML parser. The large ``<spectrumList>`` is read in blocks of whole
spectra; each block is scanned in one pass by a compiled scanner (``ionmap._xmlscan``)
whose hits are turned into columns with vectorised NumPy, checked against a *template*
learned from the first spectrum. The template is itself verified against an XML-parser
reading of that spectrum, and every later spectrum must show exactly the template's
sequence of relevant parameters (and array group references). Any block where that cannot
be confirmed (comments, CDATA, other attribute orders, extra or missing parameters,
per-spectrum overrides, ...) is parsed spectrum by spectrum with ElementTree instead; both
paths give identical results.

No DOCTYPE or ENTITY declaration is accepted, so no entity is ever expanded or resolved;
only ASCII-based encodings (UTF-8, ISO-8859-x, ...) are read, so no declaration can hide
from the byte-level check in another encoding.
"""
from __future__ import annotations

import codecs
import mmap
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

import numpy as np

from .. import _xmlscan
from ..errors import ImzMLFormatError, UnsupportedImzMLError

BLOCK_BYTES = 8 * 2**20  # XML scanned per step: bounds memory, whatever the file size

# Canonical terms of the cvParams the reader uses: accession -> term, and name -> term for
# writers whose accessions are wrong (pyimzML matches the precision by name).
_TERM_BY_ACCESSION = {
    "IMS:1000050": "x", "IMS:1000051": "y", "IMS:1000052": "z",
    "IMS:1000102": "offset", "IMS:1000103": "length", "IMS:1000104": "encoded_length",
    "MS:1000514": "mz_array", "MS:1000515": "intensity_array",
    "MS:1000521": "f4", "MS:1000523": "f8", "MS:1000519": "i4", "MS:1000522": "i8",
    "IMS:1000141": "i4", "IMS:1000142": "i8", "MS:1000520": "f2",
    "MS:1000576": "no_compression", "MS:1000574": "zlib",
    "MS:1002312": "numpress", "MS:1002313": "numpress", "MS:1002314": "numpress",
    "MS:1002746": "numpress", "MS:1002747": "numpress", "MS:1002748": "numpress",
    "MS:1003089": "numpress", "MS:1003090": "numpress", "MS:1003091": "numpress",
    "MS:1000127": "centroid", "MS:1000128": "profile",
    "MS:1000129": "negative", "MS:1000130": "positive",
    "MS:1000528": "lowest_mz", "MS:1000527": "highest_mz",
    "IMS:1000030": "continuous", "IMS:1000031": "processed",
    "IMS:1000080": "uuid",
    "IMS:1000042": "max_count_x", "IMS:1000043": "max_count_y",
    "IMS:1000046": "pixel_size_x", "IMS:1000047": "pixel_size_y",
}
_TERM_BY_NAME = {
    "32-bit float": "f4", "64-bit float": "f8", "32-bit integer": "i4", "64-bit integer": "i8",
    "m/z array": "mz_array", "intensity array": "intensity_array",
    "profile spectrum": "profile", "centroid spectrum": "centroid",
    "positive scan": "positive", "negative scan": "negative",
    "zlib compression": "zlib", "no compression": "no_compression",
}
DTYPES = {"f4": np.dtype("<f4"), "f8": np.dtype("<f8"), "i4": np.dtype("<i4"),
          "i8": np.dtype("<i8")}
_PRECISIONS = ("f2", "f4", "f8", "i4", "i8")
_COMPRESSIONS = ("no_compression", "zlib", "numpress")

# The accessions that the fast scan extracts, or whose presence it must see to know a
# spectrum differs from the template (array type, precision, compression, spectrum type).
_SCANNED = sorted(a for a, t in _TERM_BY_ACCESSION.items()
                  if t not in ("continuous", "processed", "uuid", "encoded_length")
                  and not t.startswith(("max_count", "pixel_size")))
_SCANNED_SET = {a.encode() for a in _SCANNED}
# The scanner takes one token per relevant cvParam: the rest of its tag from the accession
# on. Values are found in the tokens with NumPy at the offset the template shows. It also
# lists the group references in document order, where ``<!`` (comment, CDATA) counts as an
# empty reference, so a block holding one never agrees with the template (the XML parser
# reads it).
_SCANNED_BYTES = tuple(sorted(_SCANNED_SET))
_VALUE_ATTR = re.compile(rb'\svalue="')
_FORBIDDEN = re.compile(rb"<!(?:DOCTYPE|ENTITY)")
_ENCODING = re.compile(rb'^(?:\xef\xbb\xbf)?\s*<\?xml[^>]*encoding=["\']([A-Za-z0-9._-]+)["\']')
_SPECTRUM_END = re.compile(rb"</spectrum>")
_COUNT = re.compile(rb'\scount="(\d+)"')

_RECORD_FIELDS = ("x", "y", "z", "mz_offset", "mz_length", "intensity_offset",
                  "intensity_length", "lowest_mz", "highest_mz")
_COLUMNS = _RECORD_FIELDS[:7]  # per-spectrum integer columns; the m/z hints are reduced


def _ascii_based(encoding: str) -> bool:
    """True when every ASCII byte means its ASCII character in ``encoding`` (so byte-level
    scans read the markup right) and the XML parser can decode it: UTF-8 or a single-byte
    code page (the parser's rule: 256 bytes decode to 256 characters)."""
    try:
        name = codecs.lookup(encoding).name
        if name.startswith("utf-8"):
            return True
        return (bytes(range(128)).decode(name) == bytes(range(128)).decode("ascii")
                and len(bytes(range(256)).decode(name, "replace")) == 256)
    except (LookupError, UnicodeError):
        return False


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _params(elem: ET.Element) -> list[tuple[str, str | None]]:
    """(term, value) of the element's own cvParams that the reader knows."""
    out = []
    for child in elem:
        if _local(child.tag) != "cvParam":
            continue
        term = _TERM_BY_ACCESSION.get(child.get("accession", "")) or _TERM_BY_NAME.get(
            child.get("name", ""))
        if term:
            out.append((term, child.get("value")))
    return out


@dataclass
class Header:
    """Everything before ``<spectrumList>`` that the reader uses."""

    encoding: str
    namespaces: list[tuple[str, str]]
    file_content: dict[str, str | None]
    groups: dict[str, list[tuple[str, str | None]]]
    scan_settings: dict[str, str | None]
    spectrum_count: int | None = None


@dataclass
class Record:
    """One spectrum's metadata as read by the XML parser."""

    x: int | None = None
    y: int | None = None
    z: int | None = None
    arrays: list[dict] = field(default_factory=list)  # kind, dtype, compression, offset, length
    lowest_mz: float | None = None
    highest_mz: float | None = None
    terms: set = field(default_factory=set)  # spectrum-level terms (profile, positive, ...)


@dataclass
class XmlMetadata:
    """Result of :func:`parse`: the header, per-spectrum int64 columns (x, y, z, offsets
    and lengths), and the m/z range from the lowest/highest observed m/z of the non-empty
    spectra (None unless every one of them declares both)."""

    header: Header
    first: Record
    columns: dict[str, np.ndarray]
    mz_bounds: tuple[float, float] | None
    mz_dtype: str
    intensity_dtype: str
    n_fast: int  # spectra read by the fast scan (the rest by the XML parser)


class _Parser:
    def __init__(self, source: str, fast: bool):
        self.source = source
        self.fast = fast

    def error(self, problem: str) -> ImzMLFormatError:
        return ImzMLFormatError(self.source, problem)

    # ---- header -------------------------------------------------------------------------
    def header(self, data: bytes) -> Header:
        m = _ENCODING.match(data)
        encoding = m.group(1).decode("ascii") if m else "utf-8"
        if data[:2] in (b"\xfe\xff", b"\xff\xfe") or b"\x00" in data[:4]:
            raise self.error("the XML is UTF-16 or UTF-32; only ASCII-based encodings "
                             "(UTF-8, ISO-8859-1, ...) are supported")
        if not _ascii_based(encoding):
            raise self.error(f"XML encoding {encoding!r} is not supported (only ASCII-based "
                             "encodings: UTF-8, ISO-8859-1, ...)")
        if _FORBIDDEN.search(data):
            raise self.error("DOCTYPE/ENTITY declarations are not allowed in imzML")
        parser = ET.XMLPullParser(events=("start", "start-ns"))
        namespaces: list[tuple[str, str]] = []
        root = None
        try:
            parser.feed(data)
            for event, item in parser.read_events():
                if event == "start-ns":
                    if root is None:
                        namespaces.append(item)
                elif root is None:
                    root = item
        except ET.ParseError as exc:
            raise self.error(f"malformed XML: {exc}") from None
        if root is None:
            raise self.error("not an XML document")
        file_content: dict[str, str | None] = {}
        groups: dict[str, list] = {}
        scan_settings: dict[str, str | None] = {}
        for elem in root.iter():
            name = _local(elem.tag)
            if name == "fileContent":
                file_content.update(_params(elem))
            elif name == "referenceableParamGroup":
                groups[elem.get("id", "")] = _params(elem)
            elif name == "scanSettings":
                for term, value in _params(elem):
                    scan_settings.setdefault(term, value)
        return Header(encoding, namespaces, file_content, groups, scan_settings)

    # ---- one spectrum with the XML parser (reference semantics) -------------------------
    def record(self, spectrum: ET.Element, index: int) -> Record:
        groups = self.head.groups
        rec = Record()

        def with_refs(elem: ET.Element) -> list[tuple[str, str | None]]:
            params: list[tuple[str, str | None]] = []
            for child in elem:
                if _local(child.tag) == "referenceableParamGroupRef":
                    ref = child.get("ref", "")
                    if ref not in groups:
                        raise self.error(f"spectrum {index}: unknown referenceableParamGroup {ref!r}")
                    params.extend(groups[ref])
            return params + _params(elem)  # direct parameters override the groups'

        for term, value in with_refs(spectrum):
            if term in ("lowest_mz", "highest_mz"):
                # optional hints only: unreadable ones are ignored, the data tell the range
                try:
                    setattr(rec, term, float(value))  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    pass
            else:
                rec.terms.add(term)
        for child in spectrum:
            name = _local(child.tag)
            if name == "scanList":
                scans = [s for s in child if _local(s.tag) == "scan"]
                if scans:
                    for term, value in with_refs(scans[0]):
                        if term in ("x", "y", "z"):
                            setattr(rec, term, self.integer(value, f"position {term}", index))
                        elif term in ("positive", "negative", "profile", "centroid"):
                            rec.terms.add(term)
            elif name == "binaryDataArrayList":
                for arr in child:
                    if _local(arr.tag) != "binaryDataArray":
                        continue
                    info = {"kind": None, "dtype": None, "compression": "no_compression",
                            "offset": None, "length": None}
                    for term, value in with_refs(arr):
                        if term in ("mz_array", "intensity_array"):
                            info["kind"] = term
                        elif term in _PRECISIONS:
                            info["dtype"] = term
                        elif term in _COMPRESSIONS:
                            info["compression"] = term
                        elif term in ("offset", "length"):
                            info[term] = self.integer(value, f"external {term}", index)
                    rec.arrays.append(info)
        return rec

    def integer(self, value: str | None, what: str, index: int) -> int:
        """An int64 attribute; scientific notation (``1.6E+4``) is accepted when exact
        (below 2**53, where a double holds every integer)."""
        try:
            number = int(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            try:
                parsed = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                parsed = float("nan")
            if not (np.isfinite(parsed) and parsed == int(parsed) and abs(parsed) < 2**53):
                raise self.error(f"spectrum {index}: {what} {value!r} is not an integer"
                                 ) from None
            number = int(parsed)
        if not -(2**63) <= number < 2**63:
            raise self.error(f"spectrum {index}: {what} {value!r} is out of range")
        return number

    def row(self, rec: Record, index: int) -> tuple:
        """The record as the values of the columns, checking what every spectrum needs."""
        if rec.x is None or rec.y is None:
            raise self.error(f"spectrum {index}: no position x/y in its scan")
        arrays = {}
        for kind in ("mz_array", "intensity_array"):
            found = [a for a in rec.arrays if a["kind"] == kind]
            label = "m/z" if kind == "mz_array" else "intensity"
            if len(found) != 1:
                raise self.error(f"spectrum {index}: {len(found)} {label} arrays (expected 1)")
            a = found[0]
            if a["offset"] is None or a["length"] is None:
                raise self.error(f"spectrum {index}: {label} array without external offset/length")
            if a["dtype"] is None:
                raise self.error(f"spectrum {index}: no precision (32/64-bit float/integer) "
                                 f"for the {label} array")
            arrays[kind] = a
        mz, it = arrays["mz_array"], arrays["intensity_array"]
        nan = float("nan")
        return ((rec.x, rec.y, 1 if rec.z is None else rec.z, mz["offset"], mz["length"],
                 it["offset"], it["length"],
                 nan if rec.lowest_mz is None else rec.lowest_mz,
                 nan if rec.highest_mz is None else rec.highest_mz),
                (mz["dtype"], mz["compression"], it["dtype"], it["compression"]))

    # ---- XML-parser path for a block of spectra -----------------------------------------
    def wrap(self, chunk: bytes) -> bytes:
        ns = b"".join(
            b' xmlns%s="%s"' % ((b":" + p.encode()) if p else b"", u.encode())
            for p, u in self.head.namespaces)
        return (b'<?xml version="1.0" encoding="%s"?><ionmapWrap%s>'
                % (self.head.encoding.encode(), ns) + chunk + b"</ionmapWrap>")

    def spectra(self, chunk: bytes) -> Iterator[ET.Element]:
        """The ``<spectrum>`` elements of a block, each cleared once the caller is done."""
        parser = ET.XMLPullParser(events=("end",))
        data = self.wrap(chunk)
        try:
            for start in range(0, len(data), 2**20):
                parser.feed(data[start : start + 2**20])
                for _, elem in parser.read_events():
                    if _local(elem.tag) == "spectrum":
                        yield elem
                        elem.clear()
            parser.close()
        except ET.ParseError as exc:
            raise self.error(f"malformed XML in the spectrum list: {exc}") from None

    # ---- fast path ----------------------------------------------------------------------
    def template(self, text: bytes, first: ET.Element, rec: Record) -> dict | None:
        """Token layout of the first spectrum (``text``), or None when the fast scan cannot
        reproduce the XML parser's reading of it exactly."""
        expected: list[tuple[str, object]] = []  # (accession, context) in document order
        refs: list[bytes] = []
        arrays = 0

        def walk(elem: ET.Element, context: object) -> None:
            nonlocal arrays
            for child in elem:
                name = _local(child.tag)
                if name == "cvParam":
                    if child.get("accession", "").encode() in _SCANNED_SET:
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
        found = _xmlscan.scan(text, _SCANNED_BYTES, tuple(refs), 0)
        if found is None:
            return None
        tokens = [bytes(row[:size]) for row, size in zip(*found[:2])]
        if (not tokens or len(tokens) != len(expected) or found[2] != len(refs)
                or any(t.partition(b'"')[0].decode() != acc
                       for t, (acc, _) in zip(tokens, expected))):
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
        cols: dict[str, int] = {}
        for j, (acc, context) in enumerate(expected):
            name = where.get((_TERM_BY_ACCESSION[acc], context))
            if name is not None:
                if name in cols:
                    return None  # given twice: let the XML parser decide
                cols[name] = j
        # every later token must repeat the template's text up to its value (or all of it)
        starts = []
        for t in tokens:
            hits = [m.end() for m in _VALUE_ATTR.finditer(t)]
            if len(hits) > 1:
                return None
            starts.append(hits[0] if hits else None)
        width = max(len(t) if s is None else s for t, s in zip(tokens, starts))
        prefix = np.zeros((len(tokens), width), np.uint8)
        mask = np.zeros((len(tokens), width), bool)
        for j, (t, s) in enumerate(zip(tokens, starts)):
            fixed = t if s is None else t[:s]
            prefix[j, : len(fixed)] = np.frombuffer(fixed, np.uint8)
            mask[j, : len(fixed) if s is not None else width] = True
        tpl = {"k": len(tokens), "cols": cols, "refs": tuple(refs), "prefix": prefix,
               "mask": mask, "value_at": starts}
        row, kind = self.row(rec, 0)
        got = self.fast_block(text, tpl)
        want = {name: np.array([value]) for name, value in zip(_RECORD_FIELDS, row)}
        _reduce_bounds(want)
        if got is None or not all(np.array_equal(got[name], want[name], equal_nan=True)
                                  for name in _RECORD_FIELDS):
            return None
        tpl["kind"] = kind
        return tpl

    def fast_block(self, chunk: bytes, tpl: dict) -> dict[str, np.ndarray] | None:
        """Columns of a block of whole spectra, or None when it differs from the template."""
        prefix, mask = tpl["prefix"], tpl["mask"]
        found = _xmlscan.scan(chunk, _SCANNED_BYTES, tpl["refs"], prefix.shape[1])
        if found is None:
            return None  # a group reference differs from the template's
        tokens, _, n_refs = found
        k = tpl["k"]
        n, extra = divmod(len(tokens), k)
        if extra or n == 0:
            return None
        raw = tokens.reshape(n, k, tokens.shape[1])
        if not ((raw[:, :, : prefix.shape[1]] == prefix) | ~mask).all():
            return None
        if n_refs != len(tpl["refs"]) * n:
            return None
        out: dict[str, np.ndarray] = {}
        try:
            for name in _COLUMNS:
                j = tpl["cols"].get(name)
                if j is not None:
                    out[name] = _integers(_value_text(raw[:, j, :], tpl["value_at"][j]))
                elif name == "z":
                    out[name] = np.ones(n, np.int64)
                else:
                    return None
            live = out["intensity_length"] > 0
            for name, smallest in (("lowest_mz", True), ("highest_mz", False)):
                j = tpl["cols"].get(name)
                if not live.any():
                    out[name] = np.array([np.inf if smallest else -np.inf])
                elif j is None:
                    out[name] = np.array([np.nan])
                else:
                    out[name] = np.array(
                        [_extreme(_value_text(raw[live, j, :], tpl["value_at"][j]), smallest)])
        except ValueError:
            return None  # a value the vectorised conversion cannot read
        return out

    # ---- driver -------------------------------------------------------------------------
    def stream_blocks(self, stream: IO[bytes]) -> tuple[bytes, Iterator[bytes]]:
        """(header, blocks of whole spectra) from a stream read BLOCK_BYTES at a time."""
        data = b""
        while True:
            block = stream.read(BLOCK_BYTES)
            data += block
            at = data.find(b"<spectrumList")
            if at >= 0 and data.find(b">", at) >= 0:
                break
            if not block:
                self.no_spectrum_list(data)

        def blocks(rest: bytes) -> Iterator[bytes]:
            end_tag = b"</spectrumList"
            scanned = 0  # rest[:scanned] is known to hold no end tag
            while True:
                stop = rest.find(end_tag, max(0, scanned - len(end_tag)))
                if stop >= 0:
                    yield rest[:stop]
                    return
                scanned = len(rest)
                if len(rest) >= BLOCK_BYTES:
                    cut = rest.rfind(b"</spectrum>")
                    if cut >= 0:
                        cut += len(b"</spectrum>")
                        yield rest[:cut]
                        rest = rest[cut:]
                        scanned = len(rest)
                        continue
                block = stream.read(BLOCK_BYTES)
                if not block:
                    raise self.error("the XML ends inside the spectrum list (truncated file?)")
                rest += block

        self.list_tag = data[at : data.find(b">", at) + 1]
        return data[:at], blocks(data[at + len(self.list_tag) :])

    def mapped_blocks(self, data: bytes | mmap.mmap) -> tuple[bytes, Iterator[memoryview]]:
        """(header, blocks of whole spectra) as zero-copy views of an in-memory/mapped file."""
        at = data.find(b"<spectrumList")
        tag_end = data.find(b">", at) if at >= 0 else -1
        if tag_end < 0:
            self.no_spectrum_list(data[: 2**20])
        self.list_tag = data[at : tag_end + 1]
        stop = data.rfind(b"</spectrumList")
        if stop < tag_end and not self.list_tag.endswith(b"/>"):
            raise self.error("the XML ends inside the spectrum list (truncated file?)")

        def blocks() -> Iterator[memoryview]:
            view = memoryview(data)
            pos = tag_end + 1
            while pos < stop:
                end = pos + BLOCK_BYTES
                if end >= stop:
                    end = stop
                else:
                    cut = data.rfind(b"</spectrum>", pos, end)
                    if cut < 0:
                        cut = data.find(b"</spectrum>", end, stop)
                    end = stop if cut < 0 else cut + len(b"</spectrum>")
                yield view[pos:end]
                pos = end

        return data[:at], blocks()

    def no_spectrum_list(self, data: bytes) -> None:
        if _FORBIDDEN.search(data):
            raise self.error("DOCTYPE/ENTITY declarations are not allowed in imzML")
        raise self.error("no <spectrumList> found (not an imzML file, or truncated)")

    def run(self, source: bytes | mmap.mmap | IO[bytes]) -> XmlMetadata:
        if isinstance(source, (bytes, mmap.mmap)):
            header, chunks = self.mapped_blocks(source)
        else:
            header, chunks = self.stream_blocks(source)
        self.head = self.header(header)
        if self.list_tag.endswith(b"/>"):
            raise self.error("the spectrum list is empty")
        count = _COUNT.search(self.list_tag)
        self.head.spectrum_count = int(count.group(1)) if count else None

        parts: list[dict[str, np.ndarray]] = []
        kinds: set = set()
        n = n_fast = 0
        first: Record | None = None
        tpl = chunk = None
        for chunk in chunks:
            if first is None:
                end = _SPECTRUM_END.search(chunk)
                if end is None:
                    continue  # nothing but whitespace before the first spectrum ends
                text = bytes(chunk[: end.end()])
                elem = next(self.spectra(text))
                first = self.record(elem, 0)
                if self.fast:
                    tpl = self.template(text, elem, first)
            cols = self.fast_block(chunk, tpl) if tpl is not None else None
            if cols is not None:
                kinds.add(tpl["kind"])  # type: ignore[index]
                n_fast += len(cols["x"])
            else:
                rows = []
                for elem in self.spectra(bytes(chunk)):
                    row, kind = self.row(self.record(elem, n + len(rows)), n + len(rows))
                    rows.append(row)
                    kinds.add(kind)
                if not rows:
                    continue
                cols = {name: np.array(values, np.float64 if name.endswith("_mz") else np.int64)
                        for name, values in zip(_RECORD_FIELDS, zip(*rows))}
                _reduce_bounds(cols)
            parts.append(cols)
            n += len(cols["x"])
        del chunk  # no view of a memory map may outlive the parse
        if first is None or n == 0:
            raise self.error("the spectrum list is empty")
        if n_fast and self.head.spectrum_count is not None and self.head.spectrum_count != n:
            raise _Recount()
        columns = {name: np.concatenate([p[name] for p in parts]) for name in _COLUMNS}
        lo = float(np.min([p["lowest_mz"][0] for p in parts]))
        hi = float(np.max([p["highest_mz"][0] for p in parts]))
        bounds = (lo, hi) if np.isfinite(lo) and np.isfinite(hi) else None
        mz_dtype, intensity_dtype = self.dtypes(kinds)
        return XmlMetadata(self.head, first, columns, bounds, mz_dtype, intensity_dtype, n_fast)

    def dtypes(self, kinds: set) -> tuple[str, str]:
        """The m/z and intensity precisions shared by all spectra."""
        chosen = []
        for pos, label in ((0, "m/z"), (2, "intensity")):
            precisions = sorted({kd[pos] for kd in kinds})
            if len(precisions) > 1:
                raise UnsupportedImzMLError(
                    self.source, f"spectra store {label} arrays with different precisions "
                    f"({', '.join(precisions)})")
            if precisions[0] not in DTYPES:
                raise UnsupportedImzMLError(
                    self.source, f"{label} arrays as 16-bit floats are not supported")
            compressions = sorted({kd[pos + 1] for kd in kinds} - {"no_compression"})
            if compressions:
                raise UnsupportedImzMLError(
                    self.source, f"{label} arrays are compressed ({', '.join(compressions)}); "
                    "only uncompressed imzML is supported (rewrite it without compression)")
            chosen.append(precisions[0])
        return chosen[0], chosen[1]


class _Recount(Exception):
    """The fast scan found a different number of spectra than the file declares."""



def _reduce_bounds(cols: dict[str, np.ndarray]) -> None:
    """Replace per-spectrum lowest/highest m/z by the block's extremes over non-empty
    spectra: NaN when one lacks a value, +-inf (neutral) when the block has none."""
    live = cols["intensity_length"] > 0
    for name, smallest in (("lowest_mz", True), ("highest_mz", False)):
        values = cols[name][live]
        if not len(values):
            cols[name] = np.array([np.inf if smallest else -np.inf])
        elif np.isnan(values).any():
            cols[name] = np.array([np.nan])
        else:
            cols[name] = np.array([values.min() if smallest else values.max()])


def _value_text(raw: np.ndarray, at: int | None) -> np.ndarray:
    """The value bytes of tokens whose value starts at byte ``at`` (after ``value="``) and
    ends at the next quote, as left-aligned NUL-padded rows. ValueError when there is no
    value, or for entity references (which only an XML parser reads right)."""
    if at is None:
        raise ValueError("no value attribute")
    tail = raw[:, at:]
    quote = tail == ord('"')
    if not quote.any(axis=1).all():
        raise ValueError("unterminated value")
    end = np.argmax(quote, axis=1)
    width = int(end.max())
    if width == 0 or not end.all():
        raise ValueError("empty value")
    text = np.where(np.arange(width) < end[:, None], tail[:, :width], 0).astype(np.uint8)
    if (text == ord("&")).any():
        raise ValueError("entity reference in a value")
    return text


def _strings(text: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(text).view(f"S{text.shape[1]}").ravel()


def _integers(text: np.ndarray) -> np.ndarray:
    """int64 values of value texts; scientific notation (``1.6E+4``) accepted when exact."""
    values = _plain_integers(text)
    if values is not None:
        return values
    numbers = _strings(text).astype(np.float64)  # exact below 2**53
    if not (np.isfinite(numbers).all() and (numbers == np.round(numbers)).all()
            and (np.abs(numbers) < 2**53).all()):
        raise ValueError("not an exact integer")
    return numbers.astype(np.int64)


def _extreme(text: np.ndarray, smallest: bool) -> float:
    """min (or max) of decimal value texts, parsing only the rows that can hold it.

    Plain decimals are ranked exactly by a fixed-point prefix (integer part and six
    decimals): the extreme lies among the rows sharing the extreme prefix, since float
    rounding never reverses an order, and only those are parsed. Anything else (signs,
    exponents) is parsed in full.
    """
    prefix = _decimal_prefix(text)
    if prefix is not None:
        text = text[prefix == (prefix.min() if smallest else prefix.max())]
    values = _strings(text).astype(np.float64)
    return float(values.min() if smallest else values.max())


def _decimal_prefix(text: np.ndarray, decimals: int = 6) -> np.ndarray | None:
    """``int(value * 10**decimals)`` (truncated) of plain decimals ``DIGITS[.DIGITS]``
    (NUL-padded rows), else None."""
    n, width = text.shape
    digit = (text >= ord("0")) & (text <= ord("9"))
    cut = np.where(digit.all(axis=1), width, np.argmin(digit, axis=1))  # first non-digit
    if (cut == 0).any() or cut.max() > 18 - decimals:
        return None
    rows = np.arange(n)
    stop = text[rows, np.minimum(cut, width - 1)]
    if not ((cut == width) | (stop == 0) | (stop == ord("."))).all():
        return None
    after = np.arange(width)[None, :] > cut[:, None]
    if not (~after | digit | (text == 0)).all():
        return None
    value = np.zeros(n, np.int64)
    for j in range(int(cut.max())):
        value = np.where(j < cut, value * 10 + (text[:, j].astype(np.int64) - ord("0")), value)
    padded = np.concatenate([text, np.zeros((n, decimals + 1), np.uint8)], axis=1)
    for k in range(decimals):
        d = padded[rows, cut + 1 + k].astype(np.int64) - ord("0")
        value = value * 10 + np.where((d >= 0) & (d <= 9), d, 0)
    return value


def _plain_integers(text: np.ndarray) -> np.ndarray | None:
    """Decimal integers (optional leading '-') from left-aligned NUL-padded digit rows, or
    None when some row is anything else. Vectorised Horner scheme over the columns."""
    n, width = text.shape
    if width > 18:
        return None
    neg = text[:, 0] == ord("-")
    digits = text.astype(np.int64) - ord("0")
    is_digit = (digits >= 0) & (digits <= 9)
    is_digit[:, 0] |= neg
    if not (np.logical_and.accumulate(is_digit, axis=1) == is_digit).all():
        return None  # a non-digit before the end: not a plain integer
    if not ((text == 0) | is_digit).all():
        return None
    if neg.any() and (width < 2 or not is_digit[neg, 1].all()):
        return None  # a lone '-'
    digits[:, 0][neg] = 0
    value = np.zeros(n, np.int64)
    for j in range(width):
        value = np.where(is_digit[:, j], value * 10 + digits[:, j], value)
    return np.where(neg, -value, value)


def parse(data: bytes | mmap.mmap | IO[bytes], source: str, *, fast: bool = True) -> XmlMetadata:
    """Parse imzML XML given whole (bytes or a memory map, scanned without copies) or as a
    binary stream read in blocks; errors name ``source``.

    ``fast=False`` reads every spectrum with the XML parser (the reference the fast scan is
    tested against). When the fast scan finds a different number of spectra than the
    spectrum list declares, the whole file is parsed again with the XML parser.
    """
    try:
        return _Parser(source, fast).run(data)
    except _Recount:
        if not isinstance(data, (bytes, mmap.mmap)):
            data.seek(0)
        return _Parser(source, False).run(data)
