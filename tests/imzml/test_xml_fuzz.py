"""Untrusted imzML XML: no entity is resolved or expanded, and fuzzed XML only ever gives an
``ImzMLError``.

- XXE: an external entity naming a local file with a secret is refused, and the secret
  appears nowhere (messages, command output, sidecars), on the fast and the XML-parser
  (fallback) paths, from bytes, a memory map and a stream.
- Entity expansion bombs (billion laughs) fail at once with an ImzMLError, with bounded
  memory; so do the same declarations hidden in encodings that are not ASCII-based.
- Fuzzing (hypothesis): imzML documents generated from parts (parameters in any order,
  groups or direct parameters, missing and repeated parameters, odd numbers) and valid
  pyimzML files mutated (byte flips, truncations, deleted and duplicated tags, attribute
  garbage, huge numbers). The fast scan, the XML parser and ``open_imzml`` (on a real .ibd)
  may only raise ImzMLError; when the fast scan and the XML parser both read a document
  they agree, and the block size never changes a reading.

CI runs a short derandomised fuzz (600 examples per test, about 10 s in all). A
long run, e.g. before a release::

    IONMAP_FUZZ_EXAMPLES=100000 python -m pytest tests/imzml/test_xml_fuzz.py -q -p no:cacheprovider

(random seeds then, and hypothesis keeps any failing example in ``.hypothesis/``).
"""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tempfile
import tracemalloc
import uuid as uuidlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ionmap
from conftest import make_imzml
from ionmap.errors import ImzMLError, ImzMLFormatError
from ionmap.imzml import _scanner as scanner
from ionmap.imzml import _xml as xml

LONG = int(os.environ.get("IONMAP_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=LONG or 600, derandomize=not LONG, deadline=None,
                database=None if not LONG else settings.default.database,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _insert_doctype(data: bytes, decl: bytes) -> bytes:
    end = data.index(b"?>") + 2
    return data[:end] + b"\n" + decl + data[end:]


def _parse_all_ways(data: bytes, source: str = "doc.imzML") -> list[Exception]:
    """Errors of the fast scan and the XML parser, from bytes and from a stream."""
    errors = []
    for fast in (True, False):
        for given_as in (data, io.BytesIO(data)):
            try:
                xml.parse(given_as, source, fast=fast)
            except Exception as exc:  # noqa: BLE001 - the caller inspects every one
                errors.append(exc)
            else:
                errors.append(None)
    return errors


# ---- external entities ----------------------------------------------------------------------
SECRET = "ionmap-secret-" + uuidlib.uuid4().hex


@pytest.fixture
def secret_file(tmp_path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(SECRET)
    return path


def _xxe_variants(data: bytes, secret: Path) -> dict[str, bytes]:
    url = secret.as_uri().encode()
    doctype = b'<!DOCTYPE mzML [<!ENTITY xxe SYSTEM "' + url + b'">]>'
    in_uuid = re.sub(rb'(IMS:1000080"[^>]*value=")[^"]*', rb"\1&xxe;", data)
    in_spectrum = re.sub(rb'(name="position x" value=")\d+', rb"\1&xxe;", data, count=1)
    first = data.index(b"<spectrum ")
    return {
        "header": _insert_doctype(in_uuid, doctype),
        "spectrum list": _insert_doctype(in_spectrum, doctype),
        "parameter entity": _insert_doctype(
            data, b'<!DOCTYPE mzML [<!ENTITY % p SYSTEM "' + url + b'"> %p;]>'),
        "external dtd": _insert_doctype(data, b'<!DOCTYPE mzML SYSTEM "' + url + b'">'),
        "inside the spectrum list": data[:first] + doctype + in_spectrum[first:],
        "reference without declaration": in_spectrum,
    }


def test_external_entities_are_never_resolved(write_imzml, secret_file, tmp_path):
    w = write_imzml()
    original = w.path.read_bytes()
    for where, data in _xxe_variants(original, secret_file).items():
        for exc in _parse_all_ways(data):
            assert isinstance(exc, ImzMLFormatError), (where, exc)
            assert SECRET not in str(exc)
        w.path.write_bytes(data)
        with pytest.raises(ImzMLFormatError) as info:
            ionmap.open_imzml(w.path)  # memory map, and a sidecar would be written
        assert SECRET not in str(info.value), where
        proc = subprocess.run([sys.executable, "-m", "ionmap.cli", "info", str(w.path)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, where
        assert SECRET not in proc.stdout + proc.stderr
    # the secret is not in any file written while trying (sidecars, caches)
    for root in (tmp_path, Path(os.environ["XDG_CACHE_HOME"])):
        for path in root.rglob("*"):
            if path.is_file() and path != secret_file:
                assert SECRET.encode() not in path.read_bytes(), path


# ---- entity expansion bombs -----------------------------------------------------------------
def _billion_laughs() -> bytes:
    decl = [b'<!ENTITY lol0 "lol">']
    for k in range(1, 10):
        decl.append(b'<!ENTITY lol%d "%s">' % (k, (b"&lol%d;" % (k - 1)) * 10))
    return b"<!DOCTYPE mzML [" + b"".join(decl) + b"]>"


@pytest.mark.timeout(60)
def test_entity_bombs_fail_fast_with_bounded_memory(write_imzml):
    w = write_imzml()
    data = w.path.read_bytes()
    bomb = _billion_laughs()
    used = re.sub(rb'(IMS:1000080"[^>]*value=")[^"]*', rb"\1&lol9;", data)
    first = data.index(b"<spectrum ")
    doc = _insert_doctype(used, bomb)
    decl_end, list_at = doc.index(b"?>") + 2, doc.index(b"<spectrumList")
    head, rest = doc[decl_end:list_at].decode("latin-1"), doc[list_at:]
    variants = {
        "header": doc,
        "spectrum list": data[:first] + bomb + re.sub(
            rb'(name="position x" value=")\d+', rb"\1&lol9;", data[first:], count=1),
        # the declarations in encodings whose bytes hide them from a byte search, before
        # an ASCII spectrum list (so the file gets as far as the header parse)
        "utf-16 header": ('<?xml version="1.0" encoding="UTF-16"?>' + head).encode("utf-16")
        + rest,
        "declared utf-16": _insert_doctype(used.replace(b"ISO-8859-1", b"UTF-16"), bomb),
        "ebcdic header": b'<?xml version="1.0" encoding="cp500"?>' + head.encode("cp500")
        + rest,
    }
    for where, doc in variants.items():
        tracemalloc.start()
        try:
            errors = _parse_all_ways(doc)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        for exc in errors:
            assert isinstance(exc, ImzMLFormatError), (where, exc)
            assert re.search("DOCTYPE|UTF-16|encoding|spectrum list", str(exc)), (where, exc)
        assert peak < 16 * 2**20 + 4 * len(doc), (where, peak)  # nothing was expanded


@pytest.mark.parametrize("encoding", ["big5", "shift_jis", "utf-16-le", "cp500", "utf-32",
                                      "no-such-codec"])
def test_encodings_that_are_not_ascii_based_are_refused(write_imzml, encoding):
    data = write_imzml().path.read_bytes().replace(b"ISO-8859-1", encoding.encode(), 1)
    for exc in _parse_all_ways(data):
        assert isinstance(exc, ImzMLFormatError), exc
        assert "encoding" in str(exc)


@pytest.mark.parametrize("encoding", ["UTF-8", "us-ascii", "windows-1252", "ISO-8859-15"])
def test_ascii_based_encodings_are_read(write_imzml, encoding):
    w = write_imzml()
    w.path.write_bytes(w.path.read_bytes().replace(b"ISO-8859-1", encoding.encode(), 1))
    f = ionmap.open_imzml(w.path, cache=False)
    np.testing.assert_array_equal(f.spectrum(3)[1], w.intensities[3])


# ---- fuzzing ----------------------------------------------------------------------------------
def _param(accession: str, name: str, value: str | None) -> str:
    attr = "" if value is None else f' value="{value}"'
    return f'<cvParam cvRef="MS" accession="{accession}" name="{name}"{attr}/>'


NUMBERS = st.one_of(
    st.integers(0, 40).map(str),
    st.integers(-2**70, 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1.6E+4", "1e999", "-0", "", " 5", "0x10", "&amp;", "&#49;", "1.5",
                     "9223372036854775807", "9223372036854775808", "-9223372036854775809",
                     "4294967296", "-2147483648", "1" * 40, "nan", "NaN", "\u00e9"]),
    st.text(alphabet=st.characters(blacklist_characters='"<&', blacklist_categories=("Cs",)),
            max_size=6),
)
PRECISIONS = [("MS:1000521", "32-bit float"), ("MS:1000523", "64-bit float"),
              ("MS:1000519", "32-bit integer"), ("MS:1000522", "64-bit integer"),
              ("MS:1000520", "16-bit float"), ("MS:1000574", "zlib compression")]


@st.composite
def spectrum_params(draw, plausible: dict[str, int]) -> dict[str, str]:
    """The values of one spectrum's parameters: mostly plausible, sometimes odd."""
    return {key: str(value) if draw(st.integers(0, 9)) else draw(NUMBERS)
            for key, value in plausible.items()}


@st.composite
def documents(draw) -> tuple[bytes, int]:
    """(an imzML document, its number of spectra) built from parts."""
    n = draw(st.integers(1, 5))
    enc = draw(st.sampled_from(["ISO-8859-1", "UTF-8", "utf-8"]))
    content = [_param("MS:1000579", "MS1 spectrum", "")]
    content += draw(st.lists(st.sampled_from([
        _param("IMS:1000030", "continuous", ""), _param("IMS:1000031", "processed", ""),
        _param("MS:1000127", "centroid spectrum", ""), _param("MS:1000128", "profile spectrum", ""),
        _param("MS:1000129", "negative scan", ""), _param("MS:1000130", "positive scan", ""),
        _param("IMS:1000080", "universally unique identifier",
               "{" + str(uuidlib.UUID(int=7)).upper() + "}"),
        _param("IMS:1000080", "universally unique identifier", draw(NUMBERS))]), max_size=4))
    settings_ = [_param(acc, name, draw(NUMBERS)) for acc, name in (
        ("IMS:1000042", "max count of pixels x"), ("IMS:1000043", "max count of pixels y"),
        ("IMS:1000046", "pixel size x"), ("IMS:1000047", "pixel size y"))
        if draw(st.booleans())]
    groups_in_arrays = draw(st.booleans())
    mz_prec = draw(st.sampled_from(PRECISIONS[:2] + PRECISIONS[4:]))
    int_prec = draw(st.sampled_from(PRECISIONS))
    groups = {
        "mzArray": [_param("MS:1000514", "m/z array", None), _param(*mz_prec, "")],
        "intensityArray": [_param("MS:1000515", "intensity array", None),
                           _param(*int_prec, "")],
    }
    spectra = []
    offset = 16
    for i in range(n):
        length = draw(st.integers(0, 6))
        plausible = {"x": i % 3 + 1, "y": i // 3 + 1, "mz_offset": offset,
                     "length": length, "int_offset": offset + 8 * length}
        offset += 16 * length
        v = draw(spectrum_params(plausible))
        scan = [_param("IMS:1000050", "position x", v["x"]),
                _param("IMS:1000051", "position y", v["y"])]
        if draw(st.integers(0, 5)) == 0:
            scan.append(_param("IMS:1000052", "position z", draw(NUMBERS)))
        scan = draw(st.permutations(scan))
        arrays = []
        for kind, off_key in (("mzArray", "mz_offset"), ("intensityArray", "int_offset")):
            params = [_param("IMS:1000102", "external offset", v[off_key]),
                      _param("IMS:1000103", "external array length", v["length"]),
                      _param("IMS:1000104", "external encoded length", 8 * length)]
            ref = f'<referenceableParamGroupRef ref="{kind}"/>'
            if not groups_in_arrays:
                params += groups[kind]
                ref = ""
            params = draw(st.permutations(params))
            arrays.append(f'<binaryDataArray encodedLength="0">{ref}{"".join(params)}'
                          "<binary/></binaryDataArray>")
        if draw(st.integers(0, 7)) == 0:
            arrays = draw(st.permutations(arrays + draw(st.lists(st.sampled_from(arrays),
                                                                 max_size=1))))
        head = []
        if draw(st.booleans()):
            head = [_param("MS:1000528", "lowest observed m/z", draw(NUMBERS)),
                    _param("MS:1000527", "highest observed m/z", draw(NUMBERS))]
        spectra.append(
            f'<spectrum id="s={i}" index="{i}" defaultArrayLength="0">{"".join(head)}'
            f'<scanList count="1"><scan>{"".join(scan)}</scan></scanList>'
            f'<binaryDataArrayList count="{len(arrays)}">{"".join(arrays)}'
            "</binaryDataArrayList></spectrum>\n")
    group_xml = "".join(f'<referenceableParamGroup id="{gid}">{"".join(ps)}'
                        "</referenceableParamGroup>" for gid, ps in groups.items())
    count = draw(st.sampled_from([str(n), str(n + 1), "0", "99999999999999999999999"]))
    doc = (f'<?xml version="1.0" encoding="{enc}"?>\n'
           '<mzML xmlns="http://psi.hupo.org/ms/mzml" version="1.1">'
           f'<fileDescription><fileContent>{"".join(content)}</fileContent></fileDescription>'
           f'<referenceableParamGroupList count="2">{group_xml}</referenceableParamGroupList>'
           f'<scanSettingsList count="1"><scanSettings id="s1">{"".join(settings_)}'
           '</scanSettings></scanSettingsList>'
           f'<run id="r"><spectrumList count="{count}">\n{"".join(spectra)}'
           "</spectrumList></run></mzML>\n")
    return doc.encode(enc if enc != "ISO-8859-1" else "latin-1", "replace"), n


def _reading(meta) -> tuple[str, tuple | None]:
    """(everything a parse gives but the m/z range hint, as text; the m/z range hint)."""
    cols = tuple(meta.columns[k].tolist() for k in sorted(meta.columns))
    return repr((cols, meta.mz_dtype, meta.intensity_dtype, meta.header.file_content,
                 meta.header.groups, meta.header.scan_settings, meta.first)), meta.mz_bounds


def check_parse(data: bytes, block: int) -> None:
    """Only ImzMLError comes out, and no two ways of reading give different values: the
    fast scan and the XML parser, from bytes (a memory map) and from a stream (object
    storage), in blocks of ``block`` bytes; and the fast scan from a local file (mapped
    in windows of about two blocks; for two of the block sizes, to keep the test short).

    Known leniency of the fast scan (not an error): it reads values whose tag is damaged
    where no value is (``<`` lost, end tags mismatched), which the XML parser refuses; so a
    way may read what another refuses, and the optional lowest/highest observed m/z hints
    (used for the m/z range only, never for images) may be missing in one reading.
    """
    readings = {}
    old = xml.BLOCK_BYTES, scanner.PART_BYTES, scanner.SCAN_THREADS
    # blocks cut into parts scanned by three threads at once, wherever a block allows
    xml.BLOCK_BYTES, scanner.PART_BYTES, scanner.SCAN_THREADS = block, 32, 3
    try:
        with tempfile.NamedTemporaryFile(suffix=".imzML") as tmp:
            tmp.write(data)
            tmp.flush()
            ways = [(fast, kind, given_as) for fast in (True, False)
                    for kind, given_as in (("bytes", lambda: data),
                                           ("stream", lambda: io.BytesIO(data)))]
            if block in (333, 4096):  # windows smaller and larger than a spectrum
                ways.append((True, "file", lambda: open(tmp.name, "rb", buffering=0)))
            for fast, kind, given_as in ways:
                source = given_as()
                try:
                    readings[fast, kind] = _reading(xml.parse(source, "doc.imzML", fast=fast))
                except ImzMLError as exc:
                    assert str(exc).startswith("doc.imzML: ") and "\n" not in str(exc)
                    readings[fast, kind] = None
                finally:
                    if kind == "file":
                        source.close()
    finally:
        xml.BLOCK_BYTES, scanner.PART_BYTES, scanner.SCAN_THREADS = old
    read = [reading for reading in readings.values() if reading is not None]
    assert len({core for core, _ in read}) <= 1, readings
    assert len({bounds for _, bounds in read if bounds is not None}) <= 1, readings
    if readings[False, "bytes"] is not None:  # what the XML parser reads, the fast scan reads
        assert readings[True, "bytes"] is not None


@pytest.mark.parametrize("declined", [None, 29])
def test_blocks_scanned_in_parts_read_as_the_xml_parser_does(tmp_path, monkeypatch, declined):
    """Blocks cut into up to four parts scanned at once give the XML parser's reading, rows
    in file order; a spectrum the template does not fit (a comment inside it) in a later
    part hands its whole block to the XML parser."""
    w = make_imzml(tmp_path / "a.imzML", shape=(6, 7), points=5, seed=3, mode="processed",
                   spectrum_type="centroid")
    data = w.path.read_bytes()
    if declined is not None:
        at = data.index(b">", [m.start() for m in re.finditer(rb"<spectrum ", data)][declined])
        data = data[: at + 1] + b"<!-- x -->" + data[at + 1 :]
    w.path.write_bytes(data)
    monkeypatch.setattr(xml, "BLOCK_BYTES", len(data) // 3)
    monkeypatch.setattr(scanner, "PART_BYTES", 200)
    monkeypatch.setattr(scanner, "SCAN_THREADS", 4)
    parts = []
    scan = scanner.Template.scan
    monkeypatch.setattr(scanner.Template, "scan",
                        lambda self, block, *a: parts.append(len(block)) or scan(self, block, *a))
    reference = xml.parse(data, "a.imzML", fast=False)
    for given_as in (data, io.BytesIO(data), open(w.path, "rb", buffering=0)):
        parts.clear()
        meta = xml.parse(given_as, "a.imzML")
        assert _reading(meta) == _reading(reference)
        assert len(parts) >= 8  # three blocks, most of them in four parts
        assert meta.n_fast == 42 if declined is None else 0 < meta.n_fast < 42
    given_as.close()


BLOCKS = st.sampled_from([64, 333, 4096, 8 * 2**20])


@FUZZ
@given(doc=documents(), block=BLOCKS)
def test_fuzz_generated_documents(doc, block):
    check_parse(doc[0], block)


def _mutate(data: bytes, ops: list[tuple]) -> bytes:
    """Apply mutation operations drawn by ``mutations`` (positions taken modulo sizes)."""
    for op, a, b in ops:
        tags = [m.span() for m in re.finditer(rb"<[^<>]*>", data)]
        numbers = [m.span() for m in re.finditer(rb"\d+", data)]
        if op == "flip" and data:
            p = a % len(data)
            data = data[:p] + bytes([b % 256]) + data[p + 1 :]
        elif op == "truncate" and data:
            data = data[: a % len(data)]
        elif op == "delete tag" and tags:
            s, e = tags[a % len(tags)]
            data = data[:s] + data[e:]
        elif op == "duplicate tag" and tags:
            s, e = tags[a % len(tags)]
            data = data[:e] + data[s:e] + data[e:]
        elif op == "attribute garbage" and tags:
            s, e = tags[a % len(tags)]
            garbage = [b' value="9"', b' x="&amp;"', b'"', b"<", b" accession=\"IMS:1000050\"",
                       b' value="-1e400"', b" =", b"&", b"\x00", b"\xff\xfe", b"]]>", b"<!--"]
            at = s + 1 + (b % max(1, e - s - 1))
            data = data[:at] + garbage[b % len(garbage)] + data[at:]
        elif op == "huge number" and numbers:
            s, e = numbers[a % len(numbers)]
            huge = [b"99999999999999999999", b"9223372036854775807", b"4294967296",
                    b"18446744073709551616", b"1" + b"0" * 30, b"0", b"2147483648"]
            data = data[:s] + huge[b % len(huge)] + data[e:]
        elif op == "insert":
            p = a % (len(data) + 1)
            snippets = [b"<!-- -->", b"<?pi x?>", b"<![CDATA[<cvParam/>]]>", b"</spectrum>",
                        b"<spectrum>", b"<spectrumList>", b"</spectrumList>", b"&lt;",
                        b'<cvParam accession="IMS:1000102" value="5"/>', b"\r\n", b"\t"]
            data = data[:p] + snippets[b % len(snippets)] + data[p:]
    return data


MUTATIONS = st.lists(st.tuples(
    st.sampled_from(["flip", "truncate", "delete tag", "duplicate tag", "attribute garbage",
                     "huge number", "insert"]),
    st.integers(0, 2**31), st.integers(0, 2**16)), min_size=1, max_size=4)


class Originals(list):
    """(path, XML bytes) of the files to mutate (a short repr for failure reports)."""

    def __repr__(self) -> str:
        return f"Originals({[p.name for p, _ in self]})"


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> Originals:
    """Valid pyimzML files (processed centroid, continuous profile) to mutate."""
    folder = tmp_path_factory.mktemp("fuzz-originals")
    out = Originals()
    for name, options in (("processed", dict(mode="processed", spectrum_type="centroid")),
                          ("continuous", dict(mode="continuous", spectrum_type="profile",
                                              intensity_dtype=np.int64))):
        w = make_imzml(folder / f"{name}.imzML", shape=(2, 3), points=12, seed=1, **options)
        # the same bytes wherever the test runs (pyimzML writes the path into the run id)
        data = re.sub(rb'(<run [^>]*id=")[^"]*', rb"\1run", w.path.read_bytes())
        out.append((w.path, data))
    return out


@FUZZ
@given(which=st.integers(0, 1), ops=MUTATIONS, block=BLOCKS)
def test_fuzz_mutated_files_parse(originals, which, ops, block):
    check_parse(_mutate(originals[which][1], ops), block)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, originals) -> Path:
    """A folder holding copies of the originals' .ibd files, for open_imzml."""
    folder = tmp_path_factory.mktemp("fuzz-open")
    for path, _ in originals:
        (folder / path.with_suffix(".ibd").name).write_bytes(path.with_suffix(".ibd").read_bytes())
    return folder


@FUZZ
@given(which=st.integers(0, 1), ops=MUTATIONS)
def test_fuzz_open_and_read(originals, scratch, which, ops):
    """open_imzml on the mutated XML beside its real .ibd, then its metadata and every
    spectrum: only ImzMLError may come out."""
    original, data = originals[which]
    path = scratch / original.name
    path.write_bytes(_mutate(data, ops))
    try:
        with ionmap.open_imzml(path, cache=False) as f:
            f.summary()
            f.read_batch(np.arange(f.n_spectra))
    except ImzMLError as exc:
        assert str(exc).startswith(str(scratch)) and "\n" not in str(exc), exc
