"""``ImzMLFile``: the metadata of an imzML/ibd pair and batched reads of its spectra."""
from __future__ import annotations

import mmap
import os
import threading
import uuid as uuidlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .. import storage
from ..batch import SpectrumBatch
from ..errors import (ImzMLError, ImzMLFormatError, MissingIbdError, SpectrumDataError,
                      StorageError, TruncatedIbdError, UnsupportedImzMLError,
                      UUIDMismatchError)
from . import binary, xml
from . import cache as sidecar

#: Payload read per batch by :meth:`ImzMLFile.iter_batches` unless told otherwise.
DEFAULT_BATCH_BYTES = 64 * 2**20
# Spectrum-type detection (files that declare neither profile nor centroid): a sample of
# spectra is profile when most consecutive m/z steps differ by < 10 % from the previous one
# (a regular sampling grid, as profile data are recorded); centroid peak lists are sparse
# and irregular.
_DETECT_SPECTRA = 64
_DETECT_MIN_POINTS = 8
_REGULAR_STEP = 0.1
_REGULAR_FRACTION = 0.5

#: Largest pixel grid side accepted (1 m at 1 µm pixels): a position or declared size
#: beyond it is corrupt metadata, and would make a grid no image can be allocated for.
MAX_GRID_SIDE = 2**20

_ARRAYS = ("coordinates", "mz_offsets", "mz_lengths", "intensity_offsets", "intensity_lengths")
_FIELDS = ("uuid", "declared_mode", "declared_spectrum_type", "spectrum_type", "polarity",
           "pixel_size_um", "max_count", "mz_dtype", "intensity_dtype", "mz_range")


class ImzMLFile:
    """An opened imzML/ibd pair (see :func:`open_imzml`).

    Coordinates are the file's pixel positions, 1-based, x along a row and y down the
    columns; ``shape`` is ``(ny, nx)`` so pixel (x, y) is image element ``[y - 1, x - 1]``.
    m/z in Th; ``pixel_size_um`` in µm.

    Attributes:
        url: the .imzML path or URL as given; ``ibd_url``: the .ibd beside it;
            ``ibd_size``: its size in bytes; ``storage_options``: as given.
        n_spectra: number of spectra.
        coordinates: int64 (n, 3) x, y, z exactly as in the file (z = 1 when absent).
        shape: (ny, nx) from "max count of pixels y/x", enlarged to the largest
            coordinates where a writer understated it (Cardinal's combined files do).
        mode: 'continuous' when all spectra share one m/z array, else 'processed' (the
            layout found in the file; ``declared_mode`` is what the file says).
        spectrum_type: 'profile' | 'centroid', as declared or else detected from a sample
            of spectra (``spectrum_type_detected`` tells which).
        mz_dtype, intensity_dtype: NumPy dtypes of the stored arrays.
        polarity: 'positive' | 'negative' | 'mixed' | None.
        pixel_size_um: (x, y) in µm, or None.
        uuid: the UUID the XML declares (canonical lowercase form), or None.
        mz_range: (min, max) m/z over all spectra, or None when every spectrum is empty:
            from the XML's lowest/highest observed m/z when every non-empty spectrum has
            them, else from the data (continuous: the shared axis; processed: first and
            last m/z of each spectrum, one coalesced read), then kept in the sidecar.
        mz_offsets, mz_lengths, intensity_offsets, intensity_lengths: int64 (n,) byte
            offsets in the .ibd and lengths in points.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None, ibd_url: str,
                 ibd_size: int, fields: dict[str, Any], arrays: dict[str, np.ndarray],
                 cache_key: dict[str, Any] | None = None):
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.ibd_url = ibd_url
        self.ibd_size = ibd_size
        self._fields = fields
        self._cache_key = cache_key
        self.coordinates = arrays["coordinates"]
        self.mz_offsets = arrays["mz_offsets"]
        self.mz_lengths = arrays["mz_lengths"]
        self.intensity_offsets = arrays["intensity_offsets"]
        self.intensity_lengths = arrays["intensity_lengths"]
        for a in arrays.values():
            a.setflags(write=False)
        self.n_spectra = len(self.coordinates)
        self.mz_dtype = np.dtype(fields["mz_dtype"])
        self.intensity_dtype = np.dtype(fields["intensity_dtype"])
        self.declared_mode = fields["declared_mode"]
        live = self.mz_offsets[self.intensity_lengths > 0]
        if len(live) == 0:
            self.mode = self.declared_mode or "processed"
        else:
            self.mode = "continuous" if (live == live[0]).all() else "processed"
        self.polarity = fields["polarity"]
        self.uuid = fields["uuid"]
        self.pixel_size_um = (None if fields["pixel_size_um"] is None
                              else tuple(fields["pixel_size_um"]))
        self.shape = _grid(fields, self.coordinates)[::-1]
        self._init_state()

    def _init_state(self) -> None:
        self._reader = storage.RangeReader(self.ibd_url, self.storage_options)
        self._lock = threading.Lock()
        self._shared_mz: np.ndarray | None = None

    # ---- pickling: metadata travels, handles are reopened lazily -------------------------
    def __getstate__(self) -> dict:
        return {"url": self.url, "storage_options": self.storage_options,
                "ibd_url": self.ibd_url, "ibd_size": self.ibd_size, "fields": self._fields,
                "arrays": {name: getattr(self, name) for name in _ARRAYS}}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["url"], state["storage_options"], state["ibd_url"],
                      state["ibd_size"], state["fields"], state["arrays"])

    def close(self) -> None:
        """Release the .ibd handle (a later read opens it again)."""
        self._reader.close()

    def __enter__(self) -> ImzMLFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<ImzMLFile {self.url!r}: {self.n_spectra} spectra, {self.mode}, "
                f"shape {self.shape}>")

    # ---- metadata computed on demand (and then cached) ----------------------------------
    @property
    def spectrum_type(self) -> str:
        if self._fields["spectrum_type"] is None:
            self._remember("spectrum_type", self._detect_spectrum_type())
        return self._fields["spectrum_type"]

    @property
    def spectrum_type_detected(self) -> bool:
        """True when the file does not declare profile/centroid and the type was detected."""
        return self._fields["declared_spectrum_type"] is None

    @property
    def mz_range(self) -> tuple[float, float] | None:
        if self._fields["mz_range"] is None and self.intensity_lengths.any():
            self._remember("mz_range", self._data_mz_range())
        value = self._fields["mz_range"]
        return None if value is None else (float(value[0]), float(value[1]))

    def _remember(self, name: str, value: Any) -> None:
        self._fields[name] = value
        if self._cache_key is not None:
            sidecar.save(self.url, self._cache_key, self._fields,
                       {name: getattr(self, name) for name in _ARRAYS})

    def _data_mz_range(self) -> list[float]:
        live = np.flatnonzero(self.intensity_lengths > 0)
        if self.mode == "continuous":
            axis = self.shared_mz()
            return [float(axis[0]), float(axis[int(self.mz_lengths[live].max()) - 1])]
        size = self.mz_dtype.itemsize
        first = self.mz_offsets[live]
        last = first + (self.mz_lengths[live] - 1) * size
        starts = np.concatenate([first, last])
        buf, pos = binary.read_ranges(self._reader, starts, np.full(len(starts), size))
        values = binary.gather(buf, pos, np.ones(len(starts), np.int64), self.mz_dtype)
        return [float(values[: len(live)].min()), float(values[len(live) :].max())]

    def _detect_spectrum_type(self) -> str:
        if self.mode == "continuous":
            mz = self.shared_mz()
            ends = np.array([len(mz)])
        else:
            candidates = np.flatnonzero(self.intensity_lengths >= _DETECT_MIN_POINTS)
            if len(candidates) == 0:
                return "centroid"
            pick = candidates[np.linspace(0, len(candidates) - 1,
                                          min(_DETECT_SPECTRA, len(candidates))).astype(int)]
            batch = self.read_batch(np.unique(pick))
            mz, ends = batch.mz, batch.offsets[1:]
        step = np.diff(mz.astype(np.float64))
        ratio_ok = np.abs(step[1:] / np.where(step[:-1] == 0, np.nan, step[:-1]) - 1) < _REGULAR_STEP
        # pairs of steps inside one spectrum: step i spans points i..i+1, pair i uses i..i+2
        inside = np.ones(len(ratio_ok), bool)
        for edge in (ends[:-1] - 2, ends[:-1] - 1):
            edge = edge[(edge >= 0) & (edge < len(inside))]
            inside[edge] = False
        pairs = inside.sum()
        if pairs == 0:
            return "centroid"
        return "profile" if ratio_ok[inside].sum() >= _REGULAR_FRACTION * pairs else "centroid"

    def summary(self) -> dict[str, Any]:
        """The metadata as plain JSON-ready values (what ``ionmap info`` prints)."""
        mz_range = self.mz_range
        return {
            "file": self.url,
            "ibd": self.ibd_url,
            "ibd_size": self.ibd_size,
            "n_spectra": self.n_spectra,
            "n_points": int(self.intensity_lengths.sum()),
            "shape": list(self.shape),
            "mode": self.mode,
            "declared_mode": self.declared_mode,
            "spectrum_type": self.spectrum_type,
            "spectrum_type_detected": self.spectrum_type_detected,
            "mz_dtype": self.mz_dtype.name,
            "intensity_dtype": self.intensity_dtype.name,
            "polarity": self.polarity,
            "pixel_size_um": None if self.pixel_size_um is None else list(self.pixel_size_um),
            "uuid": self.uuid,
            "mz_range": None if mz_range is None else list(mz_range),
        }

    # ---- reading ------------------------------------------------------------------------
    def shared_mz(self) -> np.ndarray:
        """Continuous mode: the one m/z array all spectra share (decoded once, read-only)."""
        if self.mode != "continuous":
            raise ValueError(f"{self.url}: processed mode has no shared m/z array")
        if self._shared_mz is None:
            with self._lock:
                if self._shared_mz is None:
                    live = self.intensity_lengths > 0
                    length = int(self.mz_lengths[live].max()) if live.any() else 0
                    start = self.mz_offsets[live][:1] if live.any() else self.mz_offsets[:1]
                    buf, pos = binary.read_ranges(self._reader, start,
                                                  np.array([length * self.mz_dtype.itemsize]))
                    mz = binary.gather(buf, pos, np.array([length]), self.mz_dtype).copy()
                    bounds = np.array([0, length])
                    self._raise_first(binary.check(mz, bounds, None), mz, bounds, None)
                    mz.setflags(write=False)
                    self._shared_mz = mz
        return self._shared_mz

    def read_batch(self, indices: Any) -> SpectrumBatch:
        """Spectra ``indices`` (0-based, any order, repeats allowed) as one flat batch.

        Byte ranges are coalesced and read with positional reads; safe to call from many
        threads at once. In continuous mode ``mz`` is the shared, read-only m/z array
        (kernels take it as a ``const`` memoryview). Raises SpectrumDataError for NaN/inf
        intensities or m/z values, or m/z not ascending within a spectrum.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.n_spectra):
            raise IndexError(f"{self.url}: spectrum index out of range 0..{self.n_spectra - 1}")
        lengths = self.intensity_lengths[idx]
        offsets = np.zeros(len(idx) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        int_bytes = lengths * self.intensity_dtype.itemsize
        if self.mode == "continuous":
            mz = self.shared_mz()
            mz_starts = np.zeros(len(idx), np.int64)
            buf, pos = binary.read_ranges(self._reader, self.intensity_offsets[idx], int_bytes)
            intensity = binary.gather(buf, pos, lengths, self.intensity_dtype)
            found = binary.check(None, offsets, intensity)
        else:
            intensity = np.empty(offsets[-1], self.intensity_dtype)
            mz = np.empty(offsets[-1], self.mz_dtype)
            found = np.full(4, -1, np.int64)
            for a, b in self._stages(idx, int_bytes + lengths * self.mz_dtype.itemsize):
                part = idx[a:b]
                starts = np.concatenate([self.intensity_offsets[part], self.mz_offsets[part]])
                nbytes = np.concatenate([int_bytes[a:b], lengths[a:b] * self.mz_dtype.itemsize])
                # the read buffer is the thread's reusable one: values are copied out at once
                buf, pos = binary.read_ranges(self._reader, starts, nbytes, scratch=True)
                lo, hi = offsets[a], offsets[b]
                binary.gather(buf, pos[: b - a], lengths[a:b], self.intensity_dtype,
                              out=intensity[lo:hi])
                binary.gather(buf, pos[b - a :], lengths[a:b], self.mz_dtype, out=mz[lo:hi])
                # check each stage while it is in cache; keep every check's first failure
                got = binary.check(mz[lo:hi], offsets[a : b + 1] - lo, intensity[lo:hi])
                found = np.where((found < 0) & (got >= 0), got + lo, found)
            mz_starts = offsets[:-1].copy()
        self._raise_first(found, mz, offsets, idx)
        return SpectrumBatch(idx.copy(), offsets, mz, mz_starts, intensity)

    def _stages(self, idx: np.ndarray, payload: np.ndarray) -> list[tuple[int, int]]:
        """Processed mode: cut the batch into runs of spectra read through a buffer of about
        STAGE_BYTES each (small buffers are reused by the allocator instead of being mapped
        and faulted in afresh; a copy into the batch arrays is needed anyway). Only for
        spectra in file order, whose runs fill consecutive slices of the batch arrays."""
        n = len(idx)
        first = np.minimum(self.intensity_offsets[idx], self.mz_offsets[idx])
        if n < 2 or payload.sum() <= binary.STAGE_BYTES or (np.diff(first) <= 0).any():
            return [(0, n)]
        before = np.cumsum(payload) - payload
        cuts = np.flatnonzero(np.diff(before // binary.STAGE_BYTES)) + 1
        bounds = [0, *cuts.tolist(), n]
        return list(zip(bounds[:-1], bounds[1:]))

    def _raise_first(self, found: np.ndarray, mz: np.ndarray, offsets: np.ndarray,
                     idx: np.ndarray | None) -> None:
        """SpectrumDataError for the first failed check in ``found`` (see
        :func:`binary.check`: m/z order, m/z finite at spectrum ends, intensities finite), or
        nothing (``idx`` None: the shared m/z array of continuous mode).

        A point not >= its predecessor is out of order or NaN; ascending spectra with finite
        ends are finite throughout.
        """
        descent, first, last, value = found.tolist()
        if descent >= 0:
            finite = np.isfinite(mz[descent - 1 : descent + 1]).all()
            raise self._data_error(idx, offsets, descent, "m/z values are not in ascending order"
                                   if finite else "m/z array holds NaN or infinite values")
        for k in (first, last):
            if k >= 0:
                raise self._data_error(idx, offsets, k, "m/z array holds NaN or infinite values")
        if value >= 0:
            raise self._data_error(idx, offsets, value,
                                   "intensity array holds NaN or infinite values")

    def _data_error(self, idx: np.ndarray | None, offsets: np.ndarray, point: int,
                    problem: str) -> SpectrumDataError:
        if idx is None:
            return SpectrumDataError(self.url, f"the shared m/z array: {problem}")
        i = int(idx[np.searchsorted(offsets, point, side="right") - 1])
        x, y = (int(v) for v in self.coordinates[i, :2])
        return SpectrumDataError(self.url, f"spectrum {i} (x={x}, y={y}): {problem}")

    def iter_batches(self, indices: Any = None,
                     max_bytes: int = DEFAULT_BATCH_BYTES) -> Iterator[SpectrumBatch]:
        """Consecutive batches covering ``indices`` (default: all, in file order), each of
        about ``max_bytes`` of payload (one spectrum when a spectrum alone is larger), so
        memory is bounded by ``max_bytes`` whatever the file size."""
        idx = (np.arange(self.n_spectra) if indices is None
               else np.asarray(indices, dtype=np.int64).reshape(-1))
        if len(idx) == 0:
            return
        payload = self.intensity_lengths[idx] * self.intensity_dtype.itemsize
        if self.mode == "processed":
            payload = payload + self.mz_lengths[idx] * self.mz_dtype.itemsize
        before = np.cumsum(payload) - payload
        cuts = np.flatnonzero(np.diff(before // max(1, int(max_bytes)))) + 1
        for part in np.split(idx, cuts):
            yield self.read_batch(part)

    def spectrum(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(mz, intensity) of spectrum ``i``: the values and dtypes pyimzML's
        ``ImzMLParser.getspectrum(i)`` returns."""
        return self.read_batch([i]).spectrum(0)


# ---- opening ---------------------------------------------------------------------------
def open_imzml(path_or_url: str | os.PathLike, storage_options: Mapping[str, Any] | None = None,
               *, cache: bool = True) -> ImzMLFile:
    """Open an imzML file (local path or fsspec URL such as ``s3://bucket/run.imzML``).

    The binary ``.ibd`` is looked up beside it (extension case-insensitive). Metadata are
    validated: the .ibd UUID against the XML's, every array against the .ibd size, 2-D
    coordinates on the grid (1 .. ``MAX_GRID_SIDE``) without duplicates. Positions beyond
    the declared max count of pixels grow the grid. With ``cache`` the parsed metadata are
    kept in a sidecar (see :mod:`ionmap.imzml.cache`) so a reopen skips the XML.

    Raises ImzMLError subclasses (naming the file and the problem) for files that cannot
    be read correctly, StorageError when the location cannot be reached.
    """
    url = os.fspath(path_or_url)
    options = dict(storage_options or {})
    if url.lower().endswith(".ibd"):
        raise ImzMLError(url, "this is the binary part; open the .imzML file beside it")
    st = storage.stat(url, options)
    if st is None:
        local = storage.local_path(url)
        if local is not None and os.path.isdir(local):
            raise ImzMLError(url, "is a folder, not an imzML file")
        raise ImzMLError(url, "no such file")
    _check_looks_like_xml(url, options, st.size)
    ibd_url, ibd_st = _find_ibd(url, options)
    reader = storage.RangeReader(ibd_url, options)
    try:
        head = reader.read(0, 16)
    finally:
        reader.close()
    if len(head) < 16:
        raise TruncatedIbdError(ibd_url, f"only {len(head)} bytes, shorter than the 16-byte "
                                         "UUID that starts every .ibd")
    key = {"size": st.size, "mtime_ns": st.mtime_ns, "ibd_uuid": head.hex()} if cache else None
    found = _cache_load(url, key) if key is not None else None
    if found is None:
        fields, arrays = _parse(url, options)
        _check_uuid(fields["uuid"], head, url, ibd_url)
        _validate(url, ibd_url, ibd_st.size, fields, arrays)
        if key is not None:
            sidecar.save(url, key, fields, arrays)
    else:
        fields, arrays = found
        _validate(url, ibd_url, ibd_st.size, fields, arrays)
    return ImzMLFile(url, options, ibd_url, ibd_st.size, fields, arrays, key)


def _check_looks_like_xml(url: str, options: Mapping[str, Any], size: int) -> None:
    """Refuse what is plainly no XML (empty, a text or binary file) before looking for a
    .ibd, so the message says what is wrong with the file itself."""
    if size == 0:
        raise ImzMLFormatError(url, "not an imzML file (it is empty)")
    reader = storage.RangeReader(url, options)
    try:
        head = reader.read(0, min(size, 256))
    finally:
        reader.close()
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if not text.startswith(b"<"):
        raise ImzMLFormatError(url, "not an imzML file (it does not start with XML)")


def _cache_load(url: str, key: dict) -> tuple[dict, dict] | None:
    found = sidecar.load(url, key)
    if found is None:
        return None
    fields, arrays = found
    if set(arrays) != set(_ARRAYS) or set(fields) != set(_FIELDS):
        return None
    return fields, {name: np.ascontiguousarray(a, np.int64) for name, a in arrays.items()}


def _find_ibd(url: str, options: dict) -> tuple[str, storage.FileStat]:
    name = storage.basename(url)
    stem = name.rsplit(".", 1)[0] if "." in name else name
    directory = storage.parent(url)
    for ext in (".ibd", ".IBD"):
        candidate = storage.join(directory, stem + ext)
        st = storage.stat(candidate, options)
        if st is not None:
            return candidate, st
    wanted = (stem + ".ibd").lower()
    for entry in storage.listdir(directory, options):
        if entry.lower() == wanted:
            candidate = storage.join(directory, entry)
            st = storage.stat(candidate, options)
            if st is not None:
                return candidate, st
    raise MissingIbdError(url, f"no binary file {stem}.ibd beside it (looked up ignoring case)")


def _parse(url: str, options: dict, *, fast: bool = True) -> tuple[dict, dict]:
    """Metadata fields and arrays from the XML (offsets already unwrapped)."""
    path = storage.local_path(url)
    if path is not None:
        try:
            with open(path, "rb") as fh:
                try:
                    data: Any = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
                    if hasattr(mmap, "MADV_SEQUENTIAL"):  # read once, front to back
                        data.madvise(mmap.MADV_SEQUENTIAL)
                except ValueError:  # empty file
                    data = b""
        except OSError as exc:
            raise StorageError(url, f"cannot read: {exc.strerror or exc}") from None
        try:
            meta = xml.parse(data, url, fast=fast)
        finally:
            if isinstance(data, mmap.mmap):
                try:
                    data.close()
                except BufferError:  # a view still alive (error path): the GC closes it
                    pass
    else:
        with storage.open_input(url, options) as stream:
            meta = xml.parse(stream, url, fast=fast)
    return _fields(meta, url), _arrays(meta)


def _fields(meta: xml.XmlMetadata, url: str) -> dict[str, Any]:
    head = meta.header
    content = head.file_content
    group_terms = {t for params in head.groups.values() for t, _ in params}
    first_terms = meta.first.terms
    modes = {"continuous", "processed"} & set(content)
    declared_type = None
    for terms in (set(content), first_terms, group_terms):  # most specific declaration first
        types = {"profile", "centroid"} & terms
        if len(types) == 1:
            declared_type = types.pop()
            break
    signs = {"positive", "negative"} & (set(content) | group_terms | first_terms)
    polarity = "mixed" if len(signs) == 2 else (signs.pop() if signs else None)
    settings = head.scan_settings

    def number(term: str) -> float | None:
        try:
            value = float(settings[term])  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            return None
        return value if np.isfinite(value) and value > 0 else None

    px, py = number("pixel_size_x"), number("pixel_size_y")
    nx, ny = number("max_count_x"), number("max_count_y")
    mz_range = None if meta.mz_bounds is None else list(meta.mz_bounds)
    return {
        "uuid": _canonical_uuid(content.get("uuid"), url),
        "declared_mode": modes.pop() if len(modes) == 1 else None,
        "declared_spectrum_type": declared_type,
        "spectrum_type": declared_type,
        "polarity": polarity,
        "pixel_size_um": None if px is None else [px, py if py is not None else px],
        "max_count": None if nx is None or ny is None else [int(nx), int(ny)],
        "mz_dtype": xml.DTYPES[meta.mz_dtype].str,
        "intensity_dtype": xml.DTYPES[meta.intensity_dtype].str,
        "mz_range": mz_range,
    }


def _canonical_uuid(value: str | None, url: str) -> str | None:
    if not value:
        return None
    try:
        return str(uuidlib.UUID(value.strip().strip("{}")))
    except ValueError:
        raise ImzMLFormatError(url, f"universally unique identifier {value!r} is not a UUID") from None


def _unwrap(offsets: np.ndarray) -> np.ndarray:
    """Undo offsets written as signed 32-bit: each step from a non-negative to a negative
    value adds 2**32 to it and to all later offsets (as pyimzML does; unlike pyimzML, a
    negative first offset is wrapped too)."""
    negative = offsets < 0
    if not negative.any():
        return offsets
    wraps = negative & ~np.concatenate([[False], negative[:-1]])
    return offsets + np.cumsum(wraps) * 2**32


def _arrays(meta: xml.XmlMetadata) -> dict[str, np.ndarray]:
    cols = meta.columns
    return {
        "coordinates": np.stack([cols["x"], cols["y"], cols["z"]], axis=1),
        "mz_offsets": _unwrap(cols["mz_offset"]),
        "mz_lengths": cols["mz_length"],
        "intensity_offsets": _unwrap(cols["intensity_offset"]),
        "intensity_lengths": cols["intensity_length"],
    }


def _check_uuid(declared: str | None, head: bytes, url: str, ibd_url: str) -> None:
    if declared is not None and uuidlib.UUID(declared).bytes != head:
        raise UUIDMismatchError(
            ibd_url, f"its UUID {uuidlib.UUID(bytes=head)} differs from {declared} in {url}: "
                     "the two files do not belong together")


def _grid(fields: dict, coordinates: np.ndarray) -> tuple[int, int]:
    """(nx, ny): the declared max count of pixels, grown to cover every position."""
    nx, ny = (int(v) for v in coordinates[:, :2].max(axis=0))
    if fields["max_count"] is not None:
        nx, ny = max(nx, fields["max_count"][0]), max(ny, fields["max_count"][1])
    return nx, ny


def _validate(url: str, ibd_url: str, ibd_size: int, fields: dict, arrays: dict) -> None:
    """Vectorised checks that every spectrum can be placed and read correctly."""
    xyz = arrays["coordinates"]
    z = xyz[:, 2]
    if (z > 1).any() or (z != z[0]).any():
        i = int(np.flatnonzero((z > 1) | (z != z[0]))[0])
        raise UnsupportedImzMLError(url, f"3-D data (spectrum {i} has position z = {z[i]}) "
                                         "is not supported")
    x, y = xyz[:, 0], xyz[:, 1]
    outside = (x < 1) | (y < 1)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ImzMLFormatError(url, f"spectrum {i} at position x={x[i]}, y={y[i]} lies outside "
                                    "the pixel grid (positions are 1-based)")
    huge = (x > MAX_GRID_SIDE) | (y > MAX_GRID_SIDE)
    if huge.any():
        i = int(np.flatnonzero(huge)[0])
        raise ImzMLFormatError(url, f"spectrum {i} at position x={x[i]}, y={y[i]} lies beyond "
                                    f"the largest supported grid ({MAX_GRID_SIDE} pixels a side)")
    if fields["max_count"] is not None and max(fields["max_count"]) > MAX_GRID_SIDE:
        nx, ny = fields["max_count"]
        raise ImzMLFormatError(url, f"declared grid of {nx} x {ny} pixels (x, y) exceeds the "
                                    f"largest supported grid ({MAX_GRID_SIDE} pixels a side)")
    nx, _ = _grid(fields, xyz)
    linear = (y - 1) * nx + (x - 1)
    order = np.argsort(linear, kind="stable")
    same = np.flatnonzero(linear[order][1:] == linear[order][:-1])
    if len(same):
        a, b = sorted(order[[same[0], same[0] + 1]].tolist())
        raise ImzMLFormatError(url, f"spectra {a} and {b} share position x={x[a]}, y={y[a]}")
    for kind in ("mz", "intensity"):
        lengths, offsets = arrays[f"{kind}_lengths"], arrays[f"{kind}_offsets"]
        label = "m/z" if kind == "mz" else "intensity"
        if (lengths < 0).any():
            i = int(np.flatnonzero(lengths < 0)[0])
            raise ImzMLFormatError(url, f"spectrum {i}: negative {label} array length")
        size = np.dtype(fields[f"{kind}_dtype"]).itemsize
        # offset + length * size > ibd_size, written so that no int64 product can overflow
        beyond = (lengths > 0) & ((offsets < 0) | (offsets > ibd_size)
                                  | (lengths > (ibd_size - np.clip(offsets, 0, ibd_size)) // size))
        if beyond.any():
            i = int(np.flatnonzero(beyond)[0])
            end = int(offsets[i]) + int(lengths[i]) * size
            raise TruncatedIbdError(
                ibd_url, f"spectrum {i}'s {label} array (bytes {offsets[i]}..{end}) reaches "
                         f"beyond the end of the file ({ibd_size} bytes): truncated .ibd?")
    differ = arrays["mz_lengths"] != arrays["intensity_lengths"]
    if differ.any():
        i = int(np.flatnonzero(differ)[0])
        raise ImzMLFormatError(url, f"spectrum {i}: {arrays['mz_lengths'][i]} m/z values but "
                                    f"{arrays['intensity_lengths'][i]} intensities")
