"""The reference reading of imzML XML with a real XML parser (ElementTree).

It reads the header (everything before ``<spectrumList>``) and, spectrum by spectrum, any
block the fast scan (:mod:`._scanner`) declines. Its semantics are the reader's definition:
the fast scan must agree with it exactly.

No DOCTYPE or ENTITY declaration is accepted, so no entity is ever expanded or resolved;
only ASCII-based encodings (UTF-8, ISO-8859-x, ...) are read, so no declaration can hide
from the byte-level check in another encoding.
"""
from __future__ import annotations

import codecs
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..errors import ImzMLFormatError
from . import _numbers as numbers
from ._cv import COMPRESSIONS, PRECISIONS, local, params

FORBIDDEN = re.compile(rb"<!(?:DOCTYPE|ENTITY)")
_ENCODING = re.compile(rb'^(?:\xef\xbb\xbf)?\s*<\?xml[^>]*encoding=["\']([A-Za-z0-9._-]+)["\']')

#: One spectrum's values in column order (see :data:`ionmap.imzml._xml.RECORD_FIELDS`), and
#: the (m/z precision, m/z compression, intensity precision, intensity compression) it uses.
Row = tuple[tuple, tuple[str, str, str, str]]


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


def read_header(data: bytes, error: Callable[[str], Exception]) -> Header:
    """The header from the bytes before ``<spectrumList``; ``error(problem)`` makes the
    exception raised for a file the reader refuses."""
    m = _ENCODING.match(data)
    encoding = m.group(1).decode("ascii") if m else "utf-8"
    if data[:2] in (b"\xfe\xff", b"\xff\xfe") or b"\x00" in data[:4]:
        raise error("the XML is UTF-16 or UTF-32; only ASCII-based encodings "
                    "(UTF-8, ISO-8859-1, ...) are supported")
    if not _ascii_based(encoding):
        raise error(f"XML encoding {encoding!r} is not supported (only ASCII-based "
                    "encodings: UTF-8, ISO-8859-1, ...)")
    if FORBIDDEN.search(data):
        raise error("DOCTYPE/ENTITY declarations are not allowed in imzML")
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
        raise error(f"malformed XML: {exc}") from None
    if root is None:
        raise error("not an XML document")
    file_content: dict[str, str | None] = {}
    groups: dict[str, list] = {}
    scan_settings: dict[str, str | None] = {}
    for elem in root.iter():
        name = local(elem.tag)
        if name == "fileContent":
            file_content.update(params(elem))
        elif name == "referenceableParamGroup":
            groups[elem.get("id", "")] = params(elem)
        elif name == "scanSettings":
            for term, value in params(elem):
                scan_settings.setdefault(term, value)
    return Header(encoding, namespaces, file_content, groups, scan_settings)


class ReferenceParser:
    """Spectra of the spectrum list read with the XML parser; errors name ``source``."""

    def __init__(self, source: str, head: Header):
        self.source = source
        self.head = head

    def error(self, problem: str) -> ImzMLFormatError:
        return ImzMLFormatError(self.source, problem)

    def spectra(self, chunk: bytes) -> Iterator[ET.Element]:
        """The ``<spectrum>`` elements of a block, each cleared once the caller is done."""
        ns = b"".join(
            b' xmlns%s="%s"' % ((b":" + p.encode()) if p else b"", u.encode())
            for p, u in self.head.namespaces)
        data = (b'<?xml version="1.0" encoding="%s"?><ionmapWrap%s>'
                % (self.head.encoding.encode(), ns) + chunk + b"</ionmapWrap>")
        parser = ET.XMLPullParser(events=("end",))
        try:
            for start in range(0, len(data), 2**20):
                parser.feed(data[start : start + 2**20])
                for _, elem in parser.read_events():
                    if local(elem.tag) == "spectrum":
                        yield elem
                        elem.clear()
            parser.close()
        except ET.ParseError as exc:
            raise self.error(f"malformed XML in the spectrum list: {exc}") from None

    def record(self, spectrum: ET.Element, index: int) -> Record:
        """Spectrum ``index``'s metadata (group references resolved, direct parameters
        overriding the groups')."""
        groups = self.head.groups
        rec = Record()

        def with_refs(elem: ET.Element) -> list[tuple[str, str | None]]:
            found: list[tuple[str, str | None]] = []
            for child in elem:
                if local(child.tag) == "referenceableParamGroupRef":
                    ref = child.get("ref", "")
                    if ref not in groups:
                        raise self.error(f"spectrum {index}: unknown referenceableParamGroup {ref!r}")
                    found.extend(groups[ref])
            return found + params(elem)

        for term, value in with_refs(spectrum):
            if term in ("lowest_mz", "highest_mz"):
                # optional hints only: unreadable ones are ignored, the data tell the range
                got = numbers.hint(value)
                if got is not None:
                    setattr(rec, term, got)
            else:
                rec.terms.add(term)
        for child in spectrum:
            name = local(child.tag)
            if name == "scanList":
                scans = [s for s in child if local(s.tag) == "scan"]
                if scans:
                    for term, value in with_refs(scans[0]):
                        if term in ("x", "y", "z"):
                            setattr(rec, term, self.integer(value, f"position {term}", index))
                        elif term in ("positive", "negative", "profile", "centroid"):
                            rec.terms.add(term)
            elif name == "binaryDataArrayList":
                for arr in child:
                    if local(arr.tag) != "binaryDataArray":
                        continue
                    info = {"kind": None, "dtype": None, "compression": "no_compression",
                            "offset": None, "length": None}
                    for term, value in with_refs(arr):
                        if term in ("mz_array", "intensity_array"):
                            info["kind"] = term
                        elif term in PRECISIONS:
                            info["dtype"] = term
                        elif term in COMPRESSIONS:
                            info["compression"] = term
                        elif term in ("offset", "length"):
                            info[term] = self.integer(value, f"external {term}", index)
                    rec.arrays.append(info)
        return rec

    def integer(self, value: str | None, what: str, index: int) -> int:
        try:
            return numbers.exact_integer(value)
        except ValueError as exc:
            raise self.error(f"spectrum {index}: {what} {value!r} {exc}") from None

    def row(self, rec: Record, index: int) -> Row:
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
