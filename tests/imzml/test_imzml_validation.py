"""Bad and unusual imzML: every validation error, and non-conforming files read right."""
from __future__ import annotations

import re
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
from pyimzml.compression import ZlibCompression
from pyimzml.ImzMLParser import ImzMLParser
from pyimzml.ImzMLWriter import ImzMLWriter

import ionmap
from ionmap import cli
from ionmap.errors import (
    ImzMLError,
    ImzMLFormatError,
    MissingIbdError,
    SpectrumDataError,
    TruncatedIbdError,
    UnsupportedImzMLError,
    UUIDMismatchError,
)
from ionmap.imzml import _numbers as numbers
from ionmap.imzml import _xml as xml
from ionmap.imzml._opener import read_metadata as _parse


def spectra_spans(data: bytes) -> list[tuple[int, int]]:
    starts = [m.start() for m in re.finditer(rb"<spectrum[\s>]", data)]
    return [(s, data.index(b"</spectrum>", s) + len(b"</spectrum>")) for s in starts]


def edit_spectrum(path: Path, k: int, change) -> None:
    """Apply ``change(bytes) -> bytes`` to the XML of spectrum ``k``."""
    data = path.read_bytes()
    a, b = spectra_spans(data)[k]
    path.write_bytes(data[:a] + change(data[a:b]) + data[b:])


def set_param(accession: str, value: object, which: int = 0):
    """A ``change`` setting the value of the ``which``-th cvParam ``accession``."""
    def change(text: bytes) -> bytes:
        hits = list(re.finditer(rb'(accession="' + accession.encode() + rb'"[^>]*value=")([^"]*)',
                                text))
        m = hits[which]
        return text[: m.start(2)] + str(value).encode() + text[m.end(2) :]
    return change


def read_all(f) -> list:
    return [f.spectrum(i) for i in range(f.n_spectra)]


def assert_data(f, w) -> None:
    assert f.n_spectra == len(w.mzs)
    for i, (mz, it) in enumerate(zip(w.mzs, w.intensities)):
        got_mz, got_it = f.spectrum(i)
        np.testing.assert_array_equal(got_mz, mz)
        np.testing.assert_array_equal(got_it, it)


def n_fast(path: Path) -> int:
    return xml.parse(path.read_bytes(), str(path)).n_fast


def assert_fast_equals_slow(path: Path) -> None:
    a_fields, a_arrays = _parse(str(path), {}, fast=True)
    b_fields, b_arrays = _parse(str(path), {}, fast=False)
    assert a_fields == b_fields
    for name in a_arrays:
        np.testing.assert_array_equal(a_arrays[name], b_arrays[name])


def pyimzml(path: Path) -> ImzMLParser:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ImzMLParser(str(path))


# ---- the binary file ----------------------------------------------------------------------
def test_missing_ibd(write_imzml):
    w = write_imzml()
    w.path.with_suffix(".ibd").unlink()
    with pytest.raises(MissingIbdError, match=r"run\.imzML: no binary file run\.ibd"):
        ionmap.open_imzml(w.path)


@pytest.mark.parametrize("ext", [".IBD", ".Ibd"])
def test_ibd_extension_case_insensitive(write_imzml, ext):
    w = write_imzml()
    w.path.with_suffix(".ibd").rename(w.path.with_suffix(ext))
    f = ionmap.open_imzml(w.path, cache=False)
    assert f.ibd_url.endswith(ext)
    assert_data(f, w)


def test_uuid_mismatch(write_imzml):
    w = write_imzml()
    ibd = w.path.with_suffix(".ibd")
    data = bytearray(ibd.read_bytes())
    data[:16] = uuid.uuid4().bytes
    ibd.write_bytes(bytes(data))
    with pytest.raises(UUIDMismatchError, match="do not belong together"):
        ionmap.open_imzml(w.path, cache=False)


def test_uuid_without_braces_or_dashes(write_imzml):
    w = write_imzml()
    data = w.path.read_bytes()
    m = re.search(rb'IMS:1000080"[^>]*value="\{([0-9A-F-]+)\}"', data)
    plain = m.group(1).replace(b"-", b"").lower()
    w.path.write_bytes(data.replace(b"{" + m.group(1) + b"}", plain))
    f = ionmap.open_imzml(w.path, cache=False)
    assert f.uuid == str(uuid.UUID(plain.decode()))


def test_truncated_ibd(write_imzml):
    w = write_imzml()
    ibd = w.path.with_suffix(".ibd")
    ibd.write_bytes(ibd.read_bytes()[:-3])
    with pytest.raises(TruncatedIbdError, match="beyond the end of the file"):
        ionmap.open_imzml(w.path, cache=False)


def test_ibd_shorter_than_its_uuid(write_imzml):
    w = write_imzml()
    w.path.with_suffix(".ibd").write_bytes(b"short")
    with pytest.raises(TruncatedIbdError, match="16-byte UUID"):
        ionmap.open_imzml(w.path, cache=False)


@pytest.mark.parametrize("first", [3, 0])
def test_negative_offsets_are_wrapped(write_imzml, first):
    """Offsets written as signed 32-bit: from spectrum ``first`` on they read negative."""
    w = write_imzml(seed=4)
    signed = lambda t: re.sub(
        rb'(accession="IMS:1000102"[^>]*value=")(\d+)"',
        lambda m: m.group(1) + str(int(m.group(2)) - 2**32).encode() + b'"', t)
    for k in range(first, len(w.mzs)):
        edit_spectrum(w.path, k, signed)
    assert w.path.read_bytes().count(b'value="-42949') == 2 * (len(w.mzs) - first)
    f = ionmap.open_imzml(w.path, cache=False)
    assert_data(f, w)
    assert n_fast(w.path) == f.n_spectra
    assert_fast_equals_slow(w.path)
    if first > 0:  # pyimzML unwraps too, except a negative first offset
        ref = pyimzml(w.path)
        for i in range(f.n_spectra):
            np.testing.assert_array_equal(ref.getspectrum(i)[1], f.spectrum(i)[1])


def test_scientific_notation_crlf_unindented(write_imzml):
    w = write_imzml(seed=6)
    data = re.sub(rb'(accession="IMS:1000102"[^>]*value=")(\d+)"',
                  lambda m: m.group(1) + f"{int(m.group(2)):.6E}".encode() + b'"',
                  w.path.read_bytes())
    data = re.sub(rb"\n[ \t]*", b"\r\n", data)
    assert b'value="1.600000E+01"' in data
    w.path.write_bytes(data)
    f = ionmap.open_imzml(w.path, cache=False)
    assert_data(f, w)
    assert n_fast(w.path) == f.n_spectra  # still the fast scan
    assert_fast_equals_slow(w.path)


# ---- XML the fast scan must hand to the XML parser ------------------------------------------
def value_first(text: bytes) -> bytes:
    return re.sub(rb'<cvParam accession="(IMS:100005[01])" cvRef="IMS" name="([^"]*)" '
                  rb'value="([^"]*)"/>',
                  rb'<cvParam value="\3" cvRef="IMS" name="\2" accession="\1"/>', text)


def comment(text: bytes) -> bytes:
    return text.replace(b"<scanList", b"<!-- <cvParam accession=\"IMS:1000050\" value=\"9\"/> -->"
                                      b"<scanList", 1)


def direct_param(text: bytes) -> bytes:
    return text.replace(b'<referenceableParamGroupRef ref="intensityArray"/>',
                        b'<referenceableParamGroupRef ref="intensityArray"/>'
                        b'<cvParam cvRef="MS" accession="MS:1000576" name="no compression"/>')


def swapped_arrays(text: bytes) -> bytes:
    arrays = re.findall(rb"<binaryDataArray .*?</binaryDataArray>", text, re.S)
    return text.replace(arrays[0], b"@@").replace(arrays[1], arrays[0]).replace(b"@@", arrays[1])


@pytest.mark.parametrize("change", [value_first, comment, direct_param, swapped_arrays])
def test_irregular_spectra_read_by_the_xml_parser(write_imzml, change):
    w = write_imzml(seed=9)
    edit_spectrum(w.path, 4, change)
    f = ionmap.open_imzml(w.path, cache=False)
    assert_data(f, w)
    assert n_fast(w.path) < f.n_spectra  # the fast scan declined, no silent misreading
    assert_fast_equals_slow(w.path)


def test_group_free_arrays_and_first_spectrum_irregular(write_imzml):
    """Precision and array type given in every array instead of a group; spectrum 0 odd."""
    w = write_imzml(seed=2, mode="continuous", spectrum_type="profile")
    data = w.path.read_bytes()
    data = data.replace(b'<referenceableParamGroupRef ref="mzArray"/>',
                        b'<cvParam cvRef="MS" accession="MS:1000514" name="m/z array"/>'
                        b'<cvParam cvRef="MS" accession="MS:1000523" name="64-bit float"/>')
    data = data.replace(b'<referenceableParamGroupRef ref="intensityArray"/>',
                        b'<cvParam cvRef="MS" accession="MS:1000515" name="intensity array"/>'
                        b'<cvParam cvRef="MS" accession="MS:1000521" name="32-bit float"/>')
    w.path.write_bytes(data)
    f = ionmap.open_imzml(w.path, cache=False)
    assert_data(f, w)
    assert n_fast(w.path) == f.n_spectra
    edit_spectrum(w.path, 0, value_first)
    assert_fast_equals_slow(w.path)
    assert n_fast(w.path) == 0


# ---- rejected XML -------------------------------------------------------------------------
@pytest.mark.parametrize("decl", [
    b'<!DOCTYPE mzML [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>',
    b'<!DOCTYPE mzML SYSTEM "http://127.0.0.1:9/evil.dtd">',
])
def test_doctype_and_entities_rejected(write_imzml, decl):
    w = write_imzml()
    data = w.path.read_bytes()
    end = data.index(b"?>") + 2
    w.path.write_bytes(data[:end] + b"\n" + decl + data[end:])
    with pytest.raises(ImzMLFormatError, match="DOCTYPE/ENTITY"):
        ionmap.open_imzml(w.path, cache=False)


@pytest.mark.parametrize("damage,problem", [
    (lambda d: d.replace(b"</fileContent>", b"</fileContnt>", 1), "malformed XML"),
    (lambda d: d.replace(b"</scan>", b"", 1), "malformed XML in the spectrum list"),
    (lambda d: d[: len(d) * 2 // 3], "truncated"),
    (lambda d: b"not xml at all", "not an imzML file"),
    (lambda d: re.sub(rb"<spectrum .*</spectrum>", b"", d, flags=re.S), "empty"),
    (lambda d: re.sub(rb"<spectrumList (.*?)>.*</spectrumList>", rb"<spectrumList \1/>", d,
                      flags=re.S), "empty"),
    (lambda d: re.sub(rb"(<spectrumList .*?>).*(</spectrumList>)", rb"\1\2", d, flags=re.S),
     "empty"),
])
def test_malformed_xml(write_imzml, damage, problem):
    w = write_imzml()
    w.path.write_bytes(damage(w.path.read_bytes()))
    with pytest.raises(ImzMLFormatError, match=problem):
        ionmap.open_imzml(w.path, cache=False)


def test_3d_data_rejected(write_imzml):
    w = write_imzml()
    add_z = lambda z: lambda t: re.sub(
        rb'(<cvParam[^>]*name="position y"[^>]*/>)',
        rb'\1<cvParam accession="IMS:1000052" cvRef="IMS" name="position z" value="%d"/>' % z, t)
    for k in range(len(w.mzs)):
        edit_spectrum(w.path, k, add_z(1))
    f = ionmap.open_imzml(w.path, cache=False)
    assert (f.coordinates[:, 2] == 1).all()
    edit_spectrum(w.path, 5, set_param("IMS:1000052", 2))
    with pytest.raises(UnsupportedImzMLError, match="3-D"):
        ionmap.open_imzml(w.path, cache=False)


def test_duplicate_and_nonpositive_coordinates(write_imzml):
    w = write_imzml()
    edit_spectrum(w.path, 6, set_param("IMS:1000050", w.coords[2][0]))
    edit_spectrum(w.path, 6, set_param("IMS:1000051", w.coords[2][1]))
    with pytest.raises(ImzMLFormatError, match="spectra 2 and 6 share position"):
        ionmap.open_imzml(w.path, cache=False)
    w = write_imzml("zero")
    edit_spectrum(w.path, 3, set_param("IMS:1000050", 0))
    with pytest.raises(ImzMLFormatError, match="outside the pixel grid"):
        ionmap.open_imzml(w.path, cache=False)


def test_array_length_mismatch(write_imzml):
    w = write_imzml()
    edit_spectrum(w.path, 2, set_param("IMS:1000103", len(w.mzs[2]) - 1, which=0))
    with pytest.raises(ImzMLFormatError, match="spectrum 2: .* m/z values but"):
        ionmap.open_imzml(w.path, cache=False)


def test_mixed_precision_rejected(write_imzml):
    w = write_imzml()
    edit_spectrum(w.path, 3, lambda t: t.replace(
        b'<referenceableParamGroupRef ref="mzArray"/>',
        b'<referenceableParamGroupRef ref="mzArray"/>'
        b'<cvParam cvRef="MS" accession="MS:1000521" name="32-bit float"/>'))
    with pytest.raises(UnsupportedImzMLError, match="different precisions"):
        ionmap.open_imzml(w.path, cache=False)


def test_compressed_arrays_rejected(tmp_path):
    path = tmp_path / "zlib.imzML"
    with ImzMLWriter(str(path), mode="processed", intensity_compression=ZlibCompression()) as w:
        for x in range(1, 4):
            w.addSpectrum(np.array([100.0, 200.0]), np.array([1.0, 2.0]), (x, 1))
    with pytest.raises(UnsupportedImzMLError, match="compressed"):
        ionmap.open_imzml(path, cache=False)


# ---- odd but valid ------------------------------------------------------------------------
def test_zero_length_spectrum(write_imzml):
    w = write_imzml(seed=12)
    for which in (0, 1):
        edit_spectrum(w.path, 2, set_param("IMS:1000103", 0, which))
    f = ionmap.open_imzml(w.path, cache=False)
    mz, it = f.spectrum(2)
    assert len(mz) == len(it) == 0
    ref = pyimzml(w.path)
    for i in range(f.n_spectra):
        np.testing.assert_array_equal(f.spectrum(i)[1], ref.getspectrum(i)[1])
    batch = f.read_batch([1, 2, 3])
    assert list(batch.lengths) == [len(w.mzs[1]), 0, len(w.mzs[3])]


def test_declared_continuous_but_stored_processed(write_imzml):
    w = write_imzml(seed=13)
    data = w.path.read_bytes()
    w.path.write_bytes(data.replace(b'accession="IMS:1000031" name="processed"',
                                    b'accession="IMS:1000030" name="continuous"'))
    f = ionmap.open_imzml(w.path, cache=False)
    assert f.declared_mode == "continuous" and f.mode == "processed"
    assert_data(f, w)


def test_int64_intensities_beyond_32_bits(tmp_path):
    path = tmp_path / "counts.imzML"
    counts = [np.array([2**40 + 7, -(2**35), 3], np.int64), np.array([1, 2**62, 5], np.int64)]
    with ImzMLWriter(str(path), mode="continuous", intensity_dtype=np.int64) as w:
        for x, c in enumerate(counts, start=1):
            w.addSpectrum(np.array([100.0, 200.0, 300.0]), c, (x, 1))
    f = ionmap.open_imzml(path, cache=False)
    assert f.intensity_dtype == np.dtype("<i8")
    ref = pyimzml(path)
    for i, c in enumerate(counts):
        np.testing.assert_array_equal(f.spectrum(i)[1], c)
        assert f.spectrum(i)[1].dtype == ref.getspectrum(i)[1].dtype


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_intensities_raise_on_read(tmp_path, bad):
    path = tmp_path / "nan.imzML"
    with ImzMLWriter(str(path), mode="processed") as w:
        for x in range(1, 5):
            w.addSpectrum(np.array([100.0, 200.0, 300.0]),
                          np.array([1.0, bad if x == 3 else 2.0, 3.0]), (x, 1))
    f = ionmap.open_imzml(path, cache=False)
    f.read_batch([0, 1, 3])
    with pytest.raises(SpectrumDataError, match=r"spectrum 2 \(x=3, y=1\): intensity"):
        f.read_batch([0, 2])
    with pytest.raises(SpectrumDataError, match=r"spectrum 2 \(x=3, y=1\): intensity"):
        f.spectrum(2)  # the one-spectrum path checks alike
    with pytest.raises(IndexError, match="out of range"):
        f.spectrum(4)


@pytest.mark.parametrize("mode", ["processed", "continuous"])
def test_unsorted_mz_raise_on_read(tmp_path, mode):
    path = tmp_path / "unsorted.imzML"
    with ImzMLWriter(str(path), mode=mode) as w:
        for x in range(1, 5):
            mz = [100.0, 300.0, 200.0] if x == 2 or mode == "continuous" else [100.0, 200.0, 300.0]
            w.addSpectrum(np.array(mz), np.array([1.0, 2.0, 3.0]), (x, 1))
    f = ionmap.open_imzml(path, cache=False)
    match = "shared m/z array" if mode == "continuous" else r"spectrum 1 \(x=2, y=1\)"
    with pytest.raises(SpectrumDataError, match=match + ".*ascending"):
        f.read_batch([0, 1])
    with pytest.raises(SpectrumDataError, match=match + ".*ascending"):
        f.spectrum(np.int64(1))
    if mode == "processed":
        f.read_batch([0, 2, 3])  # a later spectrum may start lower than one ends


def test_fast_value_parsers():
    """The compiled value parsers of the fast scan against Python's int()/float(): what they
    read they read exactly; what they cannot read goes to the XML-parser path (None)."""
    from ionmap._xmlscan import extreme_of, parse_integer_text

    for text, want in ((b"7", 7), (b"-12", -12), (b"1234567", 1234567), (b"1.6E+4", 16000),
                       (b"+5", 5), (b"007", 7), (b"-0", 0)):
        assert parse_integer_text(text) == want == numbers.exact_integer(text.decode())
    for bad in (b"1.5", b"-", b"12a", b"&#49;", b"", b"1e999", b" 5", b"1_0",
                b"9007199254740993.0", b"12345678901234567890"):
        assert parse_integer_text(bad) is None
    rng = np.random.default_rng(0)
    values = [repr(float(v)).encode() for v in rng.uniform(0, 2000, 500)]
    values += [b"99.99999999999999999", b"100", b"1999.999999999999999999", b"1500.", b".5"]
    floats = [float(v) for v in values]
    assert extreme_of(values, True) == min(floats)
    assert extreme_of(values, False) == max(floats) == 2000.0
    assert extreme_of([b"3e2", b"-1.5", b"7"], True) == -1.5  # parsed in full
    near = [b"100.0000001", b"100.00000009", b"100.0000000999", b"100.00000011"]
    assert extreme_of(near, True) == min(map(float, near))
    assert extreme_of(near, False) == max(map(float, near))
    for bad in ([b"nan"], [b"1,5"], [b"inf"], [b"1e"]):
        assert extreme_of(bad, True) is None


def test_cli_reports_one_line_and_exit_2(write_imzml, capsys):
    w = write_imzml()
    w.path.with_suffix(".ibd").unlink()
    assert cli.main(["info", str(w.path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no binary file run.ibd" in err and str(w.path) in err
    assert cli.main(["info", str(w.path.with_suffix(".ibd"))]) == 2
    assert "open the .imzML" in capsys.readouterr().err
    assert issubclass(MissingIbdError, ImzMLError)


@pytest.mark.parametrize("bad,where", [(np.nan, 0), (np.nan, 1), (np.inf, 2), (-np.inf, 0)])
def test_non_finite_mz_raise_on_read(tmp_path, bad, where):
    path = tmp_path / "mz.imzML"
    with ImzMLWriter(str(path), mode="processed") as w:
        for x in range(1, 4):
            mz = np.array([100.0, 200.0, 300.0])
            if x == 2:
                mz[where] = bad
            w.addSpectrum(mz, np.array([1.0, 2.0, 3.0]), (x, 1))
    f = ionmap.open_imzml(path, cache=False)
    f.read_batch([0, 2])
    with pytest.raises(SpectrumDataError, match=r"spectrum 1 \(x=2, y=1\): m/z array holds NaN"):
        f.read_batch([0, 1, 2])
    with pytest.raises(SpectrumDataError, match=r"spectrum 1 \(x=2, y=1\): m/z array holds NaN"):
        f.spectrum(1)
