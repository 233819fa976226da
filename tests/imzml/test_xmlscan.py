"""The compiled spectrum-list scanner (``ionmap._xmlscan``) against Python ``re`` as the
independent reference: the same tokens and group references as ``findall`` of

- ``accession="(ACC"[^>]*)`` with ACC one of the given accessions, and
- ``<(?:referenceableParamGroupRef\\s+ref="([^"]*)"|!)``,

on seeded random byte soups made of the fragments that matter (partial, overlapping and
unterminated matches, whitespace, ``>`` inside values, NUL bytes).
"""
from __future__ import annotations

import random
import re

import pytest

from ionmap._xmlscan import find, scan
from ionmap.imzml._cv import SCANNED_BYTES as _SCANNED_BYTES

TOKEN = re.compile(rb'accession="((?:' + b"|".join(
    re.escape(a) for a in sorted(_SCANNED_BYTES, key=len, reverse=True)) + rb')"[^>]*)')
REF = re.compile(rb'<(?:referenceableParamGroupRef\s+ref="([^"]*)"|!)')
FRAGMENTS = [b'accession="', b"MS:1000521", b"IMS:1000050", b"MS:100052", b"MS:10005211",
             b"IMS:1000102", b'"', b">", b"<", b"<!", b"<!--", b"referenceableParamGroupRef",
             b" ", b"\n", b"\t", b"\x0b", b'ref="', b"mzArray", b"x", b'value="12"', b"\x00",
             b'accession="MS:1000521"', b'accession="IMS:1000050"', b'accession="MS:1000504"',
             b'<referenceableParamGroupRef ref="mzArray"']


def _tokens(found) -> list[bytes]:
    rows, sizes, _ = found
    return [bytes(row[:size]) for row, size in zip(rows, sizes)]


@pytest.mark.parametrize("seed", range(4))
def test_scan_matches_re(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(5000):
        buf = b"".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 40)))
        refs = REF.findall(buf)
        period = rng.randint(0, 3)
        expected = tuple(refs[:period]) if rng.random() < 0.7 else (b"mzArray",) * period
        cyclic = all(expected and r == expected[i % len(expected)] for i, r in enumerate(refs))
        width = rng.randint(0, 6)
        found = scan(buf, _SCANNED_BYTES, expected, width)
        if not cyclic:
            assert found is None, (buf, expected)
            continue
        assert found is not None, (buf, expected)
        assert _tokens(found) == TOKEN.findall(buf), buf
        assert found[2] == len(refs), buf
        assert found[0].shape[1] >= width


def test_scan_reads_a_memoryview_without_copy() -> None:
    spectrum = (b'<spectrum><referenceableParamGroupRef ref="s"/>'
                b'<cvParam accession="IMS:1000050" value="3"/>'
                b'<cvParam accession="MS:1000504" value="9"/></spectrum>')
    rows, sizes, n_refs = scan(memoryview(spectrum * 3), _SCANNED_BYTES, (b"s",), 0)
    assert _tokens((rows, sizes, n_refs)) == [b'IMS:1000050" value="3"/'] * 3
    assert n_refs == 3
    assert scan(spectrum + b"<!-- -->", _SCANNED_BYTES, (b"s",), 0) is None


def test_find_matches_bytes_find() -> None:
    """The compiled substring search (SIMD over 16 positions, then a plain tail) finds
    what ``bytes.find`` finds, for matches on either side of 16-byte steps and needles
    whose first, second and last bytes recur in the haystack."""
    rng = random.Random(7)
    for _ in range(3000):
        needle = bytes(rng.choice(b"<a/s>") for _ in range(rng.randint(2, 14)))
        hay = bytes(rng.choice(b"<a/s>t") for _ in range(rng.randint(0, 80)))
        if rng.random() < 0.5:
            at = rng.randint(0, len(hay))
            hay = hay[:at] + needle + hay[at:]
        start = rng.randint(0, len(hay))
        stop = rng.randint(start, len(hay))
        assert find(hay, needle, start, stop) == hay.find(needle, start, stop), (hay, needle)
    with pytest.raises(ValueError):
        find(b"abc", b"a", 0, 3)
