"""The PSI-MS / imzML controlled-vocabulary terms the reader uses.

Terms are canonical short names: accession -> term, and name -> term for writers whose
accessions are wrong (pyimzML matches the precision by name).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

TERM_BY_ACCESSION = {
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
TERM_BY_NAME = {
    "32-bit float": "f4", "64-bit float": "f8", "32-bit integer": "i4", "64-bit integer": "i8",
    "m/z array": "mz_array", "intensity array": "intensity_array",
    "profile spectrum": "profile", "centroid spectrum": "centroid",
    "positive scan": "positive", "negative scan": "negative",
    "zlib compression": "zlib", "no compression": "no_compression",
}
#: NumPy dtypes of the precisions the reader supports (little-endian, as imzML stores them).
DTYPES = {"f4": np.dtype("<f4"), "f8": np.dtype("<f8"), "i4": np.dtype("<i4"),
          "i8": np.dtype("<i8")}
PRECISIONS = ("f2", "f4", "f8", "i4", "i8")
COMPRESSIONS = ("no_compression", "zlib", "numpress")

#: The accessions the fast scan extracts, or whose presence it must see to know a spectrum
#: differs from the template (array type, precision, compression, spectrum type).
SCANNED_BYTES = tuple(sorted(
    a.encode() for a, t in TERM_BY_ACCESSION.items()
    if t not in ("continuous", "processed", "uuid", "encoded_length")
    and not t.startswith(("max_count", "pixel_size"))))
SCANNED_SET = frozenset(SCANNED_BYTES)


def local(tag: str) -> str:
    """An element's tag without its namespace."""
    return tag.rsplit("}", 1)[-1]


def params(elem: ET.Element) -> list[tuple[str, str | None]]:
    """(term, value) of the element's own cvParams that the reader knows."""
    out = []
    for child in elem:
        if local(child.tag) != "cvParam":
            continue
        term = TERM_BY_ACCESSION.get(child.get("accession", "")) or TERM_BY_NAME.get(
            child.get("name", ""))
        if term:
            out.append((term, child.get("value")))
    return out
