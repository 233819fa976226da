"""One place for locations: local paths and fsspec URLs (``s3://bucket/key``, ``gcs://``, ...).

Local paths (and ``file://`` URLs) use plain ``os`` calls, the fast path; everything else
goes through an fsspec filesystem built from the URL and ``storage_options``. For S3,
credentials come from the standard AWS variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, profiles, ...) unless given as ``key``/``secret`` in
``storage_options``; a non-AWS server is reached with
``storage_options={"endpoint_url": "http://127.0.0.1:PORT"}``.

Failures to reach or read a location raise :class:`~ionmap.errors.StorageError` naming it.
"""
from __future__ import annotations

import json
import os
import posixpath
import re
import stat as stat_module
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import StorageError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+)://")


def is_url(location: str | os.PathLike) -> bool:
    """True when ``location`` is a URL of a non-local filesystem (``s3://...``).

    ``file://`` URLs and plain paths (including Windows drive letters) are local.
    """
    m = _SCHEME.match(os.fspath(location)) if isinstance(location, (str, os.PathLike)) else None
    return bool(m) and m.group(1).lower() != "file"


def local_path(location: str | os.PathLike) -> str | None:
    """The OS path of a local location (plain path or ``file://`` URL), else None."""
    s = os.fspath(location)
    if is_url(s):
        return None
    if s.lower().startswith("file://"):
        s = s[len("file://") :]
    return s


def parent(location: str) -> str:
    """The directory (or key prefix) holding ``location``."""
    path = local_path(location)
    if path is not None:
        return os.path.dirname(os.path.abspath(path))
    return location.rstrip("/").rsplit("/", 1)[0]


def basename(location: str) -> str:
    """The last component of a path or URL."""
    path = local_path(location)
    if path is not None:
        return os.path.basename(path)
    return posixpath.basename(location.rstrip("/"))


def join(directory: str, name: str) -> str:
    """``name`` inside ``directory`` (path or URL)."""
    if local_path(directory) is not None:
        return os.path.join(local_path(directory), name)
    return directory.rstrip("/") + "/" + name


def make_dir(path: str | os.PathLike) -> Path:
    """Create a local folder (and its parents) if missing; failure is a StorageError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(path, f"cannot create output folder: {exc.strerror or exc}") from None
    return path


def write_atomic(path: str | os.PathLike, data: str | bytes | Callable[[Path], object]) -> Path:
    """Write a local file whole or not at all: a temporary file of a unique name beside it
    (its folder created if missing), then a rename, so a reader (or a resumed run, or a
    second writer of the same file) never sees half of it. ``data``: the content (text as
    UTF-8), or a function that writes the file at the temporary path it is given (for
    writers that want a path, e.g. AnnData's). The file is readable by all (0644).
    Failure is a StorageError naming ``path``; no temporary file is left."""
    path = Path(path)
    make_dir(path.parent)
    tmp = None
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide it from colleagues sharing a folder
        with os.fdopen(fd, "wb") as fh:
            if not callable(data):
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        if callable(data):
            data(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise StorageError(path, f"cannot write: {exc.strerror or exc}") from None
    return path


def parse_storage_options(items: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (command line) to a storage_options dict.

    A value is read as JSON when it parses (``anon=true``, ``max_concurrency=16``,
    ``client_kwargs={"region_name": "eu-west-1"}``), else kept as a string.
    """
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise StorageError(None, f"storage option {item!r} is not KEY=VALUE")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for a URL; instances are cached by fsspec."""
    import fsspec.core

    try:
        return fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    except (ImportError, ValueError, TypeError) as exc:
        raise StorageError(url, f"cannot open filesystem: {exc}") from None


def _fs_error(location: str, exc: BaseException) -> StorageError:
    return StorageError(location, f"cannot read: {type(exc).__name__}: {exc}")


def _no_ranges(location: str) -> StorageError:
    """A server that answered a byte-range request with more than the range."""
    return StorageError(location, "the server does not support byte-range requests (it sent "
                        "more than the range asked for); ionmap reads files in ranges: copy "
                        "the file locally or serve it with range support")


@dataclass(frozen=True)
class FileStat:
    """Size in bytes and modification time in ns since the epoch (None if unknown)."""

    size: int
    mtime_ns: int | None


def _mtime_ns(info: Mapping[str, Any]) -> int | None:
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, datetime):
            return int(value.timestamp() * 1e9)
        if isinstance(value, (int, float)):
            return int(value * 1e9)
        if isinstance(value, str):
            try:
                return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1e9)
            except ValueError:
                continue
    return None


def stat(location: str, storage_options: Mapping[str, Any] | None = None) -> FileStat | None:
    """Size and mtime of a file, or None when it does not exist."""
    path = local_path(location)
    if path is not None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _fs_error(location, exc) from None
        if stat_module.S_ISDIR(st.st_mode):
            return None
        return FileStat(st.st_size, st.st_mtime_ns)
    fs, p = filesystem(location, storage_options)
    try:
        info = fs.info(p)
    except FileNotFoundError:
        return None
    except Exception as exc:  # fsspec backends raise many kinds
        raise _fs_error(location, exc) from None
    if info.get("type") == "directory":
        return None
    return FileStat(int(info["size"]), _mtime_ns(info))


def listdir(directory: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Names (not full paths) of the entries of a directory or key prefix."""
    path = local_path(directory)
    try:
        if path is not None:
            return os.listdir(path)
        fs, p = filesystem(directory, storage_options)
        return [posixpath.basename(e.rstrip("/")) for e in fs.ls(p, detail=False)]
    except FileNotFoundError:
        return []
    except Exception as exc:
        raise _fs_error(directory, exc) from None


def open_input(location: str, storage_options: Mapping[str, Any] | None = None) -> IO[bytes]:
    """A binary stream reading the file from its start (for sequential parsing)."""
    path = local_path(location)
    try:
        if path is not None:
            return open(path, "rb")
        fs, p = filesystem(location, storage_options)
        return fs.open(p, "rb", block_size=8 * 2**20, cache_type="readahead")
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise _fs_error(location, exc) from None


class RangeReader:
    """Positional reads of byte ranges from one file; safe to share between threads.

    Local files use ``os.preadv`` on one descriptor (no shared seek position); URLs use
    fsspec ``cat_ranges`` (concurrent range requests). The handle opens lazily on the first
    read, so a pickled owner can rebuild a reader in another process.
    """

    def __init__(self, location: str, storage_options: Mapping[str, Any] | None = None):
        self.location = location
        self.storage_options = dict(storage_options or {})
        self._path = local_path(location)
        self._fd: int | None = None
        self._fs: Any = None
        self._lock = threading.Lock()

    def _open(self) -> None:
        with self._lock:
            if self._fd is not None or self._fs is not None:
                return
            if self._path is not None:
                try:
                    self._fd = os.open(self._path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
                except OSError as exc:
                    raise _fs_error(self.location, exc) from None
            else:
                self._fs, self._fspath = filesystem(self.location, self.storage_options)

    def read_into(self, buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                  positions: np.ndarray) -> None:
        """Read ``lengths[k]`` bytes from file offset ``starts[k]`` into ``buf[positions[k]:]``.

        ``buf`` is a writable uint8 array; reads that come back short raise StorageError.
        """
        if self._fd is None and self._fs is None:
            self._open()
        view = memoryview(buf).cast("B")
        if self._fd is not None:
            for start, length, pos in zip(starts.tolist(), lengths.tolist(), positions.tolist()):
                done = 0
                while done < length:
                    try:
                        got = os.preadv(self._fd, [view[pos + done : pos + length]], start + done)
                    except OSError as exc:
                        raise _fs_error(self.location, exc) from None
                    if got == 0:
                        raise StorageError(
                            self.location, f"unexpected end of file at byte {start + done}")
                    done += got
            return
        n = len(starts)
        if n == 0:
            return
        try:
            blobs = self._fs.cat_ranges([self._fspath] * n, starts.tolist(),
                                        (starts + lengths).tolist(), on_error="raise")
        except Exception as exc:
            raise _fs_error(self.location, exc) from None
        for blob, length, pos in zip(blobs, lengths.tolist(), positions.tolist()):
            if len(blob) > length:
                raise _no_ranges(self.location)
            if len(blob) != length:
                raise StorageError(self.location, "range read came back short")
            view[pos : pos + length] = blob

    def descriptor(self) -> int | None:
        """The open descriptor of a local file (opened on first use), for callers that make
        their own positional reads of it; None for a URL."""
        if self._fd is None and self._fs is None:
            self._open()
        return self._fd

    def read(self, start: int, length: int) -> bytes:
        """``length`` bytes from offset ``start`` (short only at the end of the file)."""
        buf = np.empty(length, np.uint8)
        if self._fd is None and self._fs is None:
            self._open()
        if self._fd is not None:
            try:
                got = os.preadv(self._fd, [memoryview(buf)], start)
            except OSError as exc:
                raise _fs_error(self.location, exc) from None
            return buf[:got].tobytes()
        try:
            blob = self._fs.cat_file(self._fspath, start=start, end=start + length)
        except Exception as exc:
            raise _fs_error(self.location, exc) from None
        if len(blob) > length:
            raise _no_ranges(self.location)
        return blob

    def close(self) -> None:
        """Release the descriptor; a later read opens it again."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
            self._fd = None
            self._fs = None

    def __getstate__(self) -> dict:
        return {"location": self.location, "storage_options": self.storage_options}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["location"], state["storage_options"])

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
