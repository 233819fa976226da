"""Opening an imzML/ibd pair: find the .ibd, read the metadata (sidecar or XML), validate."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import _files
from ..errors import (
    ImzMLError,
    ImzMLFormatError,
    MissingIbdError,
    StorageError,
    TruncatedIbdError,
)
from . import _cache as sidecar
from . import _xml as xml
from ._blocks import advise_sequential
from ._file import ImzMLFile
from ._metadata import ARRAYS, ImzMLMetadata, arrays_from_xml, from_xml
from ._validate import check_uuid, validate

#: Per-spectrum arrays larger than this are used from the memory-mapped sidecar once it
#: is written (file-backed pages instead of anonymous memory).
SPILL_BYTES = 64 * 2**20


def open_imzml(path_or_url: str | os.PathLike, storage_options: Mapping[str, Any] | None = None,
               *, cache: bool = True) -> ImzMLFile:
    """Open an imzML file (local path or fsspec URL such as ``s3://bucket/run.imzML``).

    The binary ``.ibd`` is looked up beside it (extension case-insensitive). Metadata are
    validated: the .ibd UUID against the XML's, every array against the .ibd size, 2-D
    coordinates on the grid (1 .. ``MAX_GRID_SIDE``) without duplicates. Positions beyond
    the declared max count of pixels grow the grid. With ``cache`` the parsed metadata are
    written to a sidecar at open (see :mod:`ionmap.imzml._cache`) so a reopen skips the XML;
    values derived later from the data are kept by :meth:`ImzMLFile.save_metadata`.

    Raises ImzMLError subclasses (naming the file and the problem) for files that cannot
    be read correctly, StorageError when the location cannot be reached.
    """
    url = os.fspath(path_or_url)
    options = dict(storage_options or {})
    if url.lower().endswith(".ibd"):
        raise ImzMLError(url, "this is the binary part; open the .imzML file beside it")
    st = _files.stat(url, options)
    if st is None:
        local = _files.local_path(url)
        if local is not None and os.path.isdir(local):
            raise ImzMLError(url, "is a folder, not an imzML file")
        raise ImzMLError(url, "no such file")
    _check_looks_like_xml(url, options, st.size)
    ibd_url, ibd_st = _find_ibd(url, options)
    reader = _files.RangeReader(ibd_url, options)
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
        meta, arrays = read_metadata(url, options)
        check_uuid(meta.uuid, head, url, ibd_url)
        _validate(url, ibd_url, ibd_st.size, meta, arrays)
        if key is not None and sidecar.save(url, key, meta.to_json(), arrays) is not None:
            mapped = (_cache_load(url, key)
                      if sum(a.nbytes for a in arrays.values()) > SPILL_BYTES else None)
            if mapped is not None:
                arrays = mapped[1]
    else:
        meta, arrays = found
        _validate(url, ibd_url, ibd_st.size, meta, arrays)
    return ImzMLFile(url, options, ibd_url, ibd_st.size, meta, arrays, key)


def _check_looks_like_xml(url: str, options: Mapping[str, Any], size: int) -> None:
    """Refuse what is plainly no XML (empty, a text or binary file) before looking for a
    .ibd, so the message says what is wrong with the file itself."""
    if size == 0:
        raise ImzMLFormatError(url, "not an imzML file (it is empty)")
    reader = _files.RangeReader(url, options)
    try:
        head = reader.read(0, min(size, 256))
    finally:
        reader.close()
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if not text.startswith(b"<"):
        raise ImzMLFormatError(url, "not an imzML file (it does not start with XML)")


def _validate(url: str, ibd_url: str, ibd_size: int, meta: ImzMLMetadata,
              arrays: dict[str, np.ndarray]) -> None:
    validate(url, ibd_url, ibd_size, meta.max_count,
             {"mz": np.dtype(meta.mz_dtype), "intensity": np.dtype(meta.intensity_dtype)},
             arrays)


def _cache_load(url: str, key: dict) -> tuple[ImzMLMetadata, dict] | None:
    found = sidecar.load(url, key)
    if found is None:
        return None
    fields, arrays = found
    if set(arrays) != set(ARRAYS):
        return None
    try:
        return ImzMLMetadata.from_json(fields), arrays
    except (KeyError, TypeError):
        return None


def _find_ibd(url: str, options: dict) -> tuple[str, _files.FileStat]:
    name = _files.basename(url)
    stem = name.rsplit(".", 1)[0] if "." in name else name
    directory = _files.parent(url)
    for ext in (".ibd", ".IBD"):
        candidate = _files.join(directory, stem + ext)
        st = _files.stat(candidate, options)
        if st is not None:
            return candidate, st
    wanted = (stem + ".ibd").lower()
    for entry in _files.listdir(directory, options):
        if entry.lower() == wanted:
            candidate = _files.join(directory, entry)
            st = _files.stat(candidate, options)
            if st is not None:
                return candidate, st
    raise MissingIbdError(url, f"no binary file {stem}.ibd beside it (looked up ignoring case)")


def read_metadata(url: str, options: dict, *, fast: bool = True
                  ) -> tuple[ImzMLMetadata, dict[str, np.ndarray]]:
    """Metadata and per-spectrum arrays from the XML (offsets already unwrapped), read as a
    stream in bounded blocks (local files mapped one span at a time, other sources
    read into one buffer)."""
    path = _files.local_path(url)
    if path is not None:
        try:
            fh = open(path, "rb", buffering=0)
        except OSError as exc:
            raise StorageError(url, f"cannot read: {exc.strerror or exc}") from None
        with fh:
            advise_sequential(fh)
            meta = xml.parse(fh, url, fast=fast)
    else:
        with _files.open_input(url, options) as stream:
            meta = xml.parse(stream, url, fast=fast)
    return from_xml(meta, url), arrays_from_xml(meta)
