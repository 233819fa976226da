"""Metadata sidecar: the parsed imzML metadata saved so that a reopen skips the XML.

One ``.npz`` file (arrays, plus the scalar fields as JSON bytes; never pickle) named
``<file>.ionmap-meta``, written beside a local .imzML when its directory is writable, else
in the user cache directory (``$XDG_CACHE_HOME/ionmap`` or ``~/.cache/ionmap``) under a
name derived from the URL. A sidecar is used only when its key (format, URL, size and
mtime of the .imzML, UUID) matches; writes go to a temporary file renamed into place, so
readers never see half a file. Failing to write a sidecar is never an error.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from typing import Any

import numpy as np

from .. import storage

SUFFIX = ".ionmap-meta"
FORMAT = 1
_INFO = "__info__"


def user_cache_dir() -> str:
    """``$XDG_CACHE_HOME/ionmap``, else ``~/.cache/ionmap``."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "ionmap")


def _canonical(url: str) -> str:
    path = storage.local_path(url)
    return os.path.abspath(path) if path is not None else url


def locations(url: str) -> list[str]:
    """Candidate sidecar paths for ``url``, preferred first."""
    canonical = _canonical(url)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:32]
    in_cache = os.path.join(user_cache_dir(), f"{digest}{SUFFIX}")
    if storage.local_path(url) is not None:
        return [canonical + SUFFIX, in_cache]
    return [in_cache]


def load(url: str, key: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """(info, arrays) from the first sidecar whose key matches, else None."""
    want = {"format": FORMAT, "url": _canonical(url), **key}
    for path in locations(url):
        try:
            with np.load(path, allow_pickle=False) as npz:
                info = json.loads(npz[_INFO].tobytes())
                if info.get("key") != want:
                    continue
                arrays = {name: npz[name] for name in npz.files if name != _INFO}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            continue  # absent, unreadable or from another version: parse the XML instead
        return info["fields"], arrays
    return None


def save(url: str, key: dict[str, Any], fields: dict[str, Any],
         arrays: dict[str, np.ndarray]) -> str | None:
    """Write the sidecar (atomically); returns its path, or None when nowhere was writable."""
    info = {"key": {"format": FORMAT, "url": _canonical(url), **key}, "fields": fields}
    payload = {_INFO: np.frombuffer(json.dumps(info).encode(), np.uint8), **arrays}
    for path in locations(url):
        directory = os.path.dirname(path)
        tmp = None
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=directory)
            os.fchmod(fd, 0o644)  # readable by colleagues sharing the data folder
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **payload)
            os.replace(tmp, path)
            return path
        except OSError:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
    return None
