"""Hostile imzML inputs: every case is a correct read or a clear error, never a silent one.

Each case starts from a valid file written by pyimzML's ImzMLWriter (``conftest.make_imzml``)
and breaks it the way real files are broken. Every case is tried three ways, each on its
own files:

- the API: ``open_imzml`` and every spectrum, then ``ionmap.convert``;
- ``ionmap info --json`` and ``ionmap convert``, the console script's ``main`` in a child
  interpreter (one per command, running every case in turn).

Outcomes:

- *correct read*: the spectra equal what went into the writer (the valid original), and
  the ion images, TIC and mask of the conversion equal a brute-force NumPy reference
  computed from those spectra and coordinates; ``ionmap info`` reports the right numbers.
- *clear error*: an ``ImzMLError`` subclass (the case's) whose one-line message names the
  file and the problem; the CLI exits 2 with exactly that one line on stderr, and no
  store is marked complete. Problems only visible in the values (NaN, unsorted m/z) are
  found when spectra are read: ``ionmap info`` may then print the (correct) metadata.
- *silent failure*: anything reported as success with wrong values (must never happen);
  *unclear error*: any other exception, a traceback, or a message without the file.

``test_tally`` prints the table of all cases (visible without ``-s``) and asserts that no
case is a silent failure or an unclear error.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from pyimzml.compression import ZlibCompression
from pyimzml.ImzMLWriter import ImzMLWriter
from test_imzml_validation import edit_spectrum, set_param

import ionmap
from conftest import Written, make_imzml
from ionmap.chem import Target
from ionmap.errors import (
    ImzMLError,
    ImzMLFormatError,
    IonmapWarning,
    MissingIbdError,
    SpectrumDataError,
    TruncatedIbdError,
    UnsupportedImzMLError,
    UUIDMismatchError,
)

READ, CLEAR, SILENT, UNCLEAR = "correct read", "clear error", "silent failure", "unclear error"


@dataclass
class Hostile:
    """A broken file and what reading it must give.

    ``written``: the spectra that went into the writer (with coordinates). Without
    ``error`` the case must read exactly as ``written``; with it, it must be refused with
    that ImzMLError subclass and a message matching the regex ``problem``. ``at_read``: the
    problem shows only in the values, so opening (and ``ionmap info``) may succeed.
    ``targets`` sit on points of the valid original.
    """

    path: Path
    written: Written
    targets: list[Target]
    error: type[ImzMLError] | None = None
    problem: str = ""
    at_read: bool = False
    spectrum_type: str | None = None  # expected (detected) type when the file omits it


# ---- building the cases ---------------------------------------------------------------------
def _targets(w: Written) -> list[Target]:
    """Windows on real points: an exact point, a 3000 ppm window, one below every m/z."""
    mz = w.mzs[0]
    return [Target("point", float(mz[len(mz) // 2]), 5.0),
            Target("wide", float(np.median(np.concatenate(w.mzs))), 3000.0),
            Target("below", 50.0, 10.0)]


def _sub(path: Path, pattern: bytes, repl) -> None:
    data, n = re.subn(pattern, repl, path.read_bytes())
    assert n, f"pattern {pattern!r} not found"
    path.write_bytes(data)


def _ibd(w: Written) -> Path:
    return w.path.with_suffix(".ibd")


def _case(folder: Path, change: Callable[[Written], None] = lambda w: None, error=None,
          problem: str = "", **options) -> Hostile:
    """The seeded 3 x 4 pyimzML file (``options`` for make_imzml), changed by ``change``."""
    w = make_imzml(folder / "run.imzML", seed=3, **options)
    targets = _targets(w)
    change(w)
    return Hostile(w.path, w, targets, error, problem)


def _written(folder: Path, spectra: list[tuple], **writer) -> Written:
    """A file of explicit (x, y, mz, intensity) spectra, written by pyimzML."""
    path = folder / "run.imzML"
    out = Written(path, [])
    with ImzMLWriter(str(path), **writer) as iw:
        for x, y, mz, intensity in spectra:
            iw.addSpectrum(mz, intensity, (x, y))
            out.coords.append((x, y))
            out.mzs.append(np.asarray(mz, writer.get("mz_dtype", np.float64)))
            out.intensities.append(np.asarray(intensity, writer.get("intensity_dtype",
                                                                    np.float32)))
    return out


def truncated_ibd(folder):
    return _case(folder, lambda w: _ibd(w).write_bytes(_ibd(w).read_bytes()[:300]),
                 TruncatedIbdError, "beyond the end of the file")


def ibd_shorter_than_largest_offset(folder):
    def change(w):
        size = _ibd(w).stat().st_size
        edit_spectrum(w.path, len(w.mzs) - 1, set_param("IMS:1000102", size - 4, which=1))
    return _case(folder, change, TruncatedIbdError, "beyond the end of the file")


def ibd_shorter_than_its_uuid(folder):
    return _case(folder, lambda w: _ibd(w).write_bytes(b"0123456789"), TruncatedIbdError,
                 "16-byte UUID")


def uuid_mismatch(folder):
    def change(w):
        _ibd(w).write_bytes(uuid.uuid4().bytes + _ibd(w).read_bytes()[16:])
    return _case(folder, change, UUIDMismatchError, "do not belong together")


def missing_ibd(folder):
    return _case(folder, lambda w: _ibd(w).unlink(), MissingIbdError, r"no binary file run\.ibd")


def upper_case_ibd(folder):
    return _case(folder, lambda w: _ibd(w).rename(w.path.with_suffix(".IBD")))


def negative_offsets(folder):
    """Offsets written as signed 32-bit integers (as if the .ibd were > 2 GiB): every
    offset from the first on reads 2**32 too small, i.e. negative."""
    return _case(folder, lambda w: _sub(
        w.path, rb'(accession="IMS:1000102"[^>]*value=")(\d+)"',
        lambda m: m.group(1) + str(int(m.group(2)) - 2**32).encode() + b'"'))


def scientific_offsets(folder):
    return _case(folder, lambda w: _sub(
        w.path, rb'(accession="IMS:100010[23]"[^>]*value=")(\d+)"',
        lambda m: m.group(1) + f"{int(m.group(2)):.6E}".encode() + b'"'))


def crlf_unindented(folder):
    return _case(folder, lambda w: _sub(w.path, rb"\n[ \t]*", b"\r\n"), mode="continuous",
                 spectrum_type="profile")


def malformed_xml(folder):
    """A value's closing quote lost in spectrum 5."""
    return _case(folder, lambda w: edit_spectrum(
        w.path, 5, lambda t: re.sub(rb'(name="position y" value="\d+)"', rb"\1", t)),
        ImzMLFormatError, "malformed XML in the spectrum list")


def malformed_header(folder):
    return _case(folder, lambda w: _sub(w.path, rb"</fileContent>", b"</fileContnt>"),
                 ImzMLFormatError, "malformed XML")


def mismatched_end_tag(folder):
    """Not well-formed, yet every value is intact: a correct read is as good as an error
    (the fast scan reads the values; the XML parser would refuse the tag)."""
    return _case(folder, lambda w: edit_spectrum(
        w.path, 5, lambda t: t.replace(b"</scan>", b"</scna>")))


def truncated_xml(folder):
    return _case(folder, lambda w: w.path.write_bytes(
        w.path.read_bytes()[: w.path.stat().st_size * 2 // 3]), ImzMLFormatError, "truncated")


def no_spectrum_type(folder):
    case = _case(folder, lambda w: _sub(
        w.path, rb'<cvParam[^>]*accession="MS:100012[78]"[^>]*/>', b""),
        mode="processed", spectrum_type="profile")
    case.spectrum_type = "profile"
    return case


def duplicate_coordinates(folder):
    def change(w):
        edit_spectrum(w.path, 7, set_param("IMS:1000050", w.coords[1][0]))
        edit_spectrum(w.path, 7, set_param("IMS:1000051", w.coords[1][1]))
    return _case(folder, change, ImzMLFormatError, "spectra 1 and 7 share position")


def outside_declared_grid(folder):
    """Positions beyond the declared max count of pixels (Cardinal writes such files):
    the grid grows to hold them and every pixel lands where its coordinates say."""
    rng = np.random.default_rng(5)
    w = _written(folder, [(x, y, np.sort(rng.uniform(100, 900, 20)), rng.gamma(2.0, 100.0, 20))
                          for x, y in ((1, 1), (2, 1), (3, 1), (1, 2), (7, 5), (2, 6))],
                 mode="processed")
    _sub(w.path, rb'(max count of pixels x" value=")\d+', rb"\g<1>3")
    _sub(w.path, rb'(max count of pixels y" value=")\d+', rb"\g<1>2")
    return Hostile(w.path, w, _targets(w))


def position_zero(folder):
    return _case(folder, lambda w: edit_spectrum(w.path, 4, set_param("IMS:1000051", 0)),
                 ImzMLFormatError, "outside the pixel grid")


def position_far_outside(folder):
    """A position that would make an absurd grid (a billion pixels wide)."""
    return _case(folder, lambda w: edit_spectrum(w.path, 4, set_param("IMS:1000050", 10**9)),
                 ImzMLFormatError, "largest supported")


def _bad_values(folder, problem: str, mz_change=None, intensity_change=None,
                mode="processed") -> Hostile:
    """Six spectra (3 x 2 pixels); spectrum 3 (x=1, y=2) gets bad values, or in
    continuous mode the shared m/z array."""
    rng = np.random.default_rng(8)
    axis = np.linspace(100.0, 900.0, 24)
    spectra = []
    for k in range(6):
        mz = axis.copy() if mode == "continuous" else np.sort(rng.uniform(100, 900, 24))
        intensity = rng.gamma(2.0, 100.0, 24)
        if mz_change and (k == 3 or mode == "continuous"):
            mz_change(mz)
        if intensity_change and k == 3:
            intensity_change(intensity)
        spectra.append((k % 3 + 1, k // 3 + 1, mz, intensity))
    w = _written(folder, spectra, mode=mode)
    return Hostile(w.path, w, _targets(w), SpectrumDataError, problem, at_read=True)


def nan_intensities(folder):
    return _bad_values(folder, r"spectrum 3 \(x=1, y=2\): intensity array holds NaN",
                       intensity_change=lambda it: it.__setitem__(5, np.nan))


def inf_intensities(folder):
    return _bad_values(folder, r"spectrum 3 \(x=1, y=2\): intensity array holds NaN or inf",
                       intensity_change=lambda it: it.__setitem__(0, -np.inf))


def _swap(i):
    def change(mz):
        mz[[i, i + 1]] = mz[[i + 1, i]]
    return change


def unsorted_mz(folder):
    return _bad_values(folder, r"spectrum 3 \(x=1, y=2\): m/z values are not in ascending",
                       mz_change=_swap(4))


def unsorted_shared_mz(folder):
    return _bad_values(folder, "the shared m/z array: m/z values are not in ascending",
                       mz_change=_swap(10), mode="continuous")


def _empty(w: Written, spectra) -> None:
    for k in spectra:
        for which in (0, 1):
            edit_spectrum(w.path, k, set_param("IMS:1000103", 0, which))
        w.mzs[k] = w.mzs[k][:0]
        w.intensities[k] = w.intensities[k][:0]


def zero_length_spectra(folder):
    return _case(folder, lambda w: _empty(w, [0, 5, 11]))


def all_spectra_empty(folder):
    return _case(folder, lambda w: _empty(w, range(len(w.mzs))))


def zlib_compressed(folder):
    rng = np.random.default_rng(2)
    w = _written(folder, [(x, 1, np.sort(rng.uniform(100, 900, 10)), rng.gamma(2.0, 100.0, 10))
                          for x in range(1, 5)],
                 mode="processed", intensity_compression=ZlibCompression())
    return Hostile(w.path, w, _targets(w), UnsupportedImzMLError, "compressed")


def int64_intensities(folder):
    return _case(folder, intensity_dtype=np.int64, mode="continuous", spectrum_type="profile")


def three_d(folder):
    """Two planes, z = 1 and z = 2."""
    def change(w):
        add_z = lambda t: re.sub(  # noqa: E731
            rb'(<cvParam[^>]*name="position y"[^>]*/>)',
            rb'\1<cvParam accession="IMS:1000052" cvRef="IMS" name="position z" value="1"/>', t)
        for k in range(len(w.mzs)):
            edit_spectrum(w.path, k, add_z)
        for k in range(6, len(w.mzs)):
            edit_spectrum(w.path, k, set_param("IMS:1000052", 2))
    return _case(folder, change, UnsupportedImzMLError, "3-D")


CASES: dict[str, Callable[[Path], Hostile]] = {f.__name__: f for f in (
    truncated_ibd, ibd_shorter_than_largest_offset, ibd_shorter_than_its_uuid, uuid_mismatch,
    missing_ibd, upper_case_ibd, negative_offsets, scientific_offsets, crlf_unindented,
    malformed_xml, malformed_header, mismatched_end_tag, truncated_xml, no_spectrum_type,
    duplicate_coordinates, outside_declared_grid, position_zero, position_far_outside,
    nan_intensities, inf_intensities, unsorted_mz, unsorted_shared_mz, zero_length_spectra,
    all_spectra_empty, zlib_compressed, int64_intensities, three_d)}


# ---- references -----------------------------------------------------------------------------
def _shape(w: Written) -> tuple[int, int]:
    xy = np.array(w.coords)
    return int(xy[:, 1].max()), int(xy[:, 0].max())


def reference_images(w: Written, targets: list[Target]):
    """(images (K, ny, nx) float32, tic, mask): window sums of the written spectra, each a
    sequential float64 sum of the intensities with lo <= m/z <= hi, at [y - 1, x - 1]."""
    shape = _shape(w)
    images = np.zeros((len(targets), *shape), np.float32)
    tic = np.zeros(shape, np.float32)
    mask = np.zeros(shape, bool)

    def seqsum(values):
        return np.cumsum(values.astype(np.float64))[-1] if values.size else 0.0

    for (x, y, *_), mz, it in zip(w.coords, w.mzs, w.intensities):
        mask[y - 1, x - 1] = True
        tic[y - 1, x - 1] = seqsum(it)
        for k, t in enumerate(targets):
            lo, hi = t.mz * (1 - t.ppm * 1e-6), t.mz * (1 + t.ppm * 1e-6)
            m = mz.astype(np.float64)
            images[k, y - 1, x - 1] = seqsum(it[(m >= lo) & (m <= hi)])
    return images, tic, mask


def _same_result(res, w: Written, targets: list[Target]) -> bool:
    images, tic, mask = reference_images(w, targets)
    return (res.complete and res.shape == mask.shape
            and res.target_names == [t.name for t in targets]
            and np.array_equal(res.ion_images.compute(), images)
            and np.array_equal(res.tic, tic) and np.array_equal(res.mask, mask))


def _same_spectra(f, w: Written) -> bool:
    if f.n_spectra != len(w.coords) or f.shape != _shape(w):
        return False
    if not np.array_equal(f.coordinates[:, :2], np.array(w.coords)[:, :2]):
        return False
    batch = f.read_batch(np.arange(f.n_spectra))
    for i, (mz, it) in enumerate(zip(w.mzs, w.intensities)):
        got_mz, got_it = batch.spectrum(i)
        if not (np.array_equal(got_mz, mz) and np.array_equal(got_it, it)
                and got_it.dtype == it.dtype):
            return False
    return True


def _names_file(message: str, case: Hostile) -> bool:
    """The message names the .imzML or its .ibd."""
    return any(str(case.path.with_suffix(ext)) in message for ext in (".imzML", ".ibd", ".IBD"))


def _not_complete(store: Path) -> bool:
    try:
        ionmap.open_result(store)
    except ionmap.IonmapError:
        return True
    return False


# ---- the three ways in --------------------------------------------------------------------
@dataclass
class Tried:
    outcome: str
    detail: str = ""


@dataclass
class Row:
    case: Hostile
    api: Tried
    info: Tried
    convert: Tried
    outcome: str = field(init=False)

    def __post_init__(self):
        outcomes = {self.api.outcome, self.info.outcome, self.convert.outcome}
        self.outcome = next(o for o in (SILENT, UNCLEAR, CLEAR, READ) if o in outcomes)


def _classify_error(exc: BaseException, case: Hostile) -> Tried:
    message = str(exc)
    if (isinstance(exc, ImzMLError) and "\n" not in message and _names_file(message, case)):
        return Tried(CLEAR, f"{type(exc).__name__}: {message}")
    return Tried(UNCLEAR, f"{type(exc).__name__}: {message}")


def try_api(case: Hostile, out: Path) -> Tried:
    store = out / "api.zarr"
    try:
        f = ionmap.open_imzml(case.path, cache=False)
        w = case.written
        if case.error is not None:  # must fail when the spectra are read
            f.read_batch(np.arange(f.n_spectra))
            return Tried(SILENT, "all spectra read without an error")
        if not _same_spectra(f, w):
            return Tried(SILENT, "spectra differ from the original")
        if case.spectrum_type and (f.spectrum_type, f.spectrum_type_detected) != (
                case.spectrum_type, True):
            return Tried(SILENT, f"spectrum type {f.spectrum_type}")
        with warnings.catch_warnings():  # empty spectra, targets off range: warned, fine
            warnings.simplefilter("ignore", IonmapWarning)
            res = ionmap.convert(case.path, store, targets=case.targets, progress=False)
        if not _same_result(res, w, case.targets):
            return Tried(SILENT, "ion images differ from the reference")
        return Tried(READ)
    except Exception as exc:  # noqa: BLE001 - every exception is classified
        tried = _classify_error(exc, case)
        if store.exists() and not _not_complete(store):
            return Tried(SILENT, "failed, yet the store is marked complete")
        return tried


@dataclass
class Ran:
    """What one ``ionmap`` command gave: exit code, stdout, stderr."""

    returncode: int
    stdout: str
    stderr: str


# One interpreter runs the commands of every case in turn (an interpreter per command would
# cost most of this test's time): each call is the console script's ``main`` with its own
# stdout/stderr, and an exception escaping it is printed as the interpreter would.
_DRIVER = r"""
import contextlib, io, json, os, sys, traceback
from ionmap.cli import main
out = []
for args, home in json.load(sys.stdin):
    os.environ["XDG_CACHE_HOME"] = home
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
    out.append([code, stdout.getvalue(), stderr.getvalue()])
print(json.dumps(out))
"""


def _cli(calls: list[tuple[list[str], Path]]) -> list[Ran]:
    """Run ``ionmap ARGS`` for each (ARGS, cache home) in one child interpreter."""
    proc = subprocess.run([sys.executable, "-c", _DRIVER], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ),
                          input=json.dumps([[a, str(h)] for a, h in calls]))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [Ran(*r) for r in json.loads(proc.stdout.strip().splitlines()[-1])]


def _cli_error(proc: Ran, case: Hostile) -> Tried:
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if not line.startswith("ionmap: warning:")]
    if (proc.returncode == 2 and len(errors) == 1 and errors[0].startswith("ionmap: error: ")
            and _names_file(errors[0], case) and "Traceback" not in proc.stderr):
        return Tried(CLEAR, errors[0])
    return Tried(UNCLEAR, f"exit {proc.returncode}: {proc.stderr.strip()[-800:]}")


def info_args(case: Hostile) -> list[str]:
    return ["info", "--json", "--no-cache", str(case.path)]


def try_info(case: Hostile, proc: Ran) -> Tried:
    if proc.returncode != 0:
        return _cli_error(proc, case)
    if case.error is not None and not case.at_read:
        return Tried(SILENT, "info accepted the file")
    info = json.loads(proc.stdout)
    w = case.written
    want = {"n_spectra": len(w.coords), "shape": list(_shape(w)),
            "n_points": int(sum(len(m) for m in w.mzs))}
    got = {k: info[k] for k in want}
    if got != want:
        return Tried(SILENT, f"info {got} != {want}")
    return Tried(READ, "metadata only" if case.error else "")


def convert_args(case: Hostile) -> list[str]:
    out = case.path.parent
    csv = out / "targets.csv"
    csv.write_text("name,mz,ppm\n" + "".join(f"{t.name},{t.mz!r},{t.ppm}\n"
                                             for t in case.targets))
    return ["convert", str(case.path), str(out / "cli.zarr"), "--targets", str(csv), "--quiet"]


def try_convert(case: Hostile, proc: Ran) -> Tried:
    store = case.path.parent / "cli.zarr"
    if proc.returncode != 0:
        tried = _cli_error(proc, case)
        if store.exists() and not _not_complete(store):
            return Tried(SILENT, "failed, yet the store is marked complete")
        return tried
    if case.error is not None:
        return Tried(SILENT, "convert succeeded")
    res = ionmap.open_result(store)
    return Tried(READ) if _same_result(res, case.written, case.targets) else Tried(
        SILENT, "ion images differ from the reference")


def _build(name: str, root: Path, way: str) -> Hostile:
    folder = root / name / way
    folder.mkdir(parents=True)
    return CASES[name](folder)


@pytest.fixture(scope="module")
def tally(tmp_path_factory) -> dict[str, Row]:
    """Every case tried through the API (here) and the two commands (in a child each)."""
    root = tmp_path_factory.mktemp("hostile")
    ways = {"info": (info_args, try_info), "convert": (convert_args, try_convert)}
    cases = {way: {name: _build(name, root, way) for name in CASES} for way in ways}
    with ThreadPoolExecutor(max_workers=2) as pool:
        ran = {way: pool.submit(_cli, [(args(case), case.path.parent)
                                       for case in cases[way].values()])
               for way, (args, _) in ways.items()}
        api = {}
        for name in CASES:
            case = _build(name, root, "api")
            api[name] = (case, try_api(case, case.path.parent))
        tried = {way: dict(zip(CASES, (check(cases[way][n], r) for n, r in
                                       zip(CASES, ran[way].result()))))
                 for way, (_, check) in ways.items()}
    return {name: Row(case, a, tried["info"][name], tried["convert"][name])
            for name, (case, a) in api.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_case(tally, name):
    row = tally[name]
    case = row.case
    for way in ("api", "info", "convert"):
        tried = getattr(row, way)
        assert tried.outcome in (READ, CLEAR), f"{way}: {tried.outcome}: {tried.detail}"
    if case.error is None:
        assert row.outcome == READ, row
        return
    assert row.api.outcome == row.convert.outcome == CLEAR, row
    assert re.search(case.problem, row.api.detail), row.api.detail
    assert row.api.detail.startswith(case.error.__name__ + ":"), row.api.detail
    assert re.search(case.problem, row.convert.detail), row.convert.detail
    if not case.at_read:
        assert row.info.outcome == CLEAR and re.search(case.problem, row.info.detail), row.info


def test_tally(tally, capsys):
    """Print the table of outcomes; no case may be a silent failure or an unclear error."""
    width = max(map(len, tally))
    lines = [f"{'case':<{width}}  {'API':<13}  {'ionmap info':<13}  {'ionmap convert':<14}  "
             "outcome"]
    for name, row in tally.items():
        info = row.info.detail if row.info.detail == "metadata only" else row.info.outcome
        lines.append(f"{name:<{width}}  {row.api.outcome:<13}  {info:<13}  "
                     f"{row.convert.outcome:<14}  {row.outcome}")
    counts = {o: sum(r.outcome == o for r in tally.values()) for o in (READ, CLEAR, SILENT,
                                                                       UNCLEAR)}
    lines.append(f"cases tried: {len(tally)}; correct reads: {counts[READ]}; clear errors: "
                 f"{counts[CLEAR]}; silent failures: {counts[SILENT]}; unclear errors: "
                 f"{counts[UNCLEAR]}")
    with capsys.disabled():
        print("\n\nHostile imzML inputs\n" + "\n".join(lines))
    assert counts[SILENT] == 0 and counts[UNCLEAR] == 0
    assert counts[READ] + counts[CLEAR] == len(CASES)
