"""Metadata sidecar: the parsed imzML metadata saved so that a reopen skips the XML.

One file named ``<file>.ionmap-meta``, written beside a local .imzML when its directory is
writable, else in the user cache directory (``$XDG_CACHE_HOME/ionmap`` or
``~/.cache/ionmap``) under a name derived from the URL. Layout: a 16-byte magic, the
length of a JSON header (uint64, little-endian), the header (key, metadata fields, and
dtype, shape and byte offset of every array), then the raw arrays, each 64-byte aligned,
so that a reopen *memory-maps* them (read-only; file-backed pages, loaded as touched,
never copied into the process's anonymous memory). Never pickle.

A sidecar is used only when its key (format, URL, size and mtime of the .imzML, UUID)
matches; writes go to a temporary file renamed into place, so readers never see half a
file (and a mapping of the old file stays valid). Failing to write is never an error.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from .. import _files
from ..errors import StorageError

SUFFIX = ".ionmap-meta"
FORMAT = 2
_MAGIC = b"\x93IONMAP-META-2\n\x00"
_ALIGN = 64
assert len(_MAGIC) == 16


def user_cache_dir() -> str:
    """``$XDG_CACHE_HOME/ionmap``, else ``~/.cache/ionmap``."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "ionmap")


def _canonical(url: str) -> str:
    path = _files.local_path(url)
    return os.path.abspath(path) if path is not None else url


def locations(url: str) -> list[str]:
    """Candidate sidecar paths for ``url``, preferred first."""
    canonical = _canonical(url)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:32]
    in_cache = os.path.join(user_cache_dir(), f"{digest}{SUFFIX}")
    if _files.local_path(url) is not None:
        return [canonical + SUFFIX, in_cache]
    return [in_cache]


def _read(path: str, want: dict) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    with open(path, "rb") as fh:
        if fh.read(16) != _MAGIC:
            return None
        (size,) = struct.unpack("<Q", fh.read(8))
        if size > 2**24:
            return None
        info = json.loads(fh.read(size))
        if info.get("key") != want:
            return None
        total = os.fstat(fh.fileno()).st_size
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if total else None
    arrays: dict[str, np.ndarray] = {}
    for name, spec in info["arrays"].items():
        if "same_as" in spec:
            continue
        dtype = np.dtype(spec["dtype"])
        shape = tuple(int(v) for v in spec["shape"])
        count = int(np.prod(shape))
        offset = int(spec["offset"])
        if offset < 0 or offset + count * dtype.itemsize > total or mapped is None:
            return None
        arrays[name] = np.frombuffer(mapped, dtype, count, offset).reshape(shape)
    for name, spec in info["arrays"].items():
        if "same_as" in spec:
            arrays[name] = arrays[spec["same_as"]]
    return info["fields"], arrays


def load(url: str, key: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """(fields, arrays) from the first sidecar whose key matches, else None. The arrays
    are read-only views of a memory map of the sidecar."""
    want = {"format": FORMAT, "url": _canonical(url), **key}
    for path in locations(url):
        try:
            found = _read(path, want)
        except (OSError, ValueError, KeyError, TypeError, struct.error):
            continue  # absent, unreadable or from another version: parse the XML instead
        if found is not None:
            return found
    return None


def _layout(arrays: dict[str, np.ndarray]) -> tuple[dict[str, dict], list[tuple[int, np.ndarray]]]:
    """Header entries and (offset from the data start, array) of what is written; arrays
    that are the same object as an earlier one are written once."""
    specs: dict[str, dict] = {}
    parts: list[tuple[int, np.ndarray]] = []
    written: dict[int, str] = {}
    at = 0
    for name, a in arrays.items():
        if id(a) in written:
            specs[name] = {"same_as": written[id(a)]}
            continue
        written[id(a)] = name
        a = np.ascontiguousarray(a)
        specs[name] = {"dtype": a.dtype.str, "shape": list(a.shape), "offset": at}
        parts.append((at, a))
        at += -(-a.nbytes // _ALIGN) * _ALIGN
    return specs, parts


def save(url: str, key: dict[str, Any], fields: dict[str, Any],
         arrays: dict[str, np.ndarray]) -> str | None:
    """Write the sidecar (atomically); returns its path, or None when nowhere was writable."""
    specs, parts = _layout(arrays)
    probe = json.dumps({"key": {"format": FORMAT, "url": _canonical(url), **key},
                        "fields": fields, "arrays": specs}).encode()
    start = -(-(24 + len(probe) + 32 * len(specs) + 64) // _ALIGN) * _ALIGN
    for spec in specs.values():
        if "offset" in spec:
            spec["offset"] += start
    header = json.dumps({"key": {"format": FORMAT, "url": _canonical(url), **key},
                         "fields": fields, "arrays": specs}).encode()
    assert 24 + len(header) <= start

    def write(tmp: Path) -> None:
        with open(tmp, "r+b") as fh:
            fh.write(_MAGIC + struct.pack("<Q", len(header)) + header)
            for offset, a in parts:
                fh.seek(start + offset)
                fh.write(memoryview(a).cast("B"))
            fh.truncate(max([start] + [start + o + a.nbytes for o, a in parts]))

    for path in locations(url):
        try:
            return str(_files.write_atomic(path, write))
        except StorageError:  # not writable here: try the next location
            continue
    return None
