"""Opening result stores: local paths or fsspec URLs, one-line storage errors, and the
decision what to do with what an output location already holds."""
from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import zarr
import zarr.abc.store
import zarr.errors
import zarr.storage

from .._files import filesystem, local_path
from ..errors import IonmapError, StorageError

Store = zarr.abc.store.Store
F = TypeVar("F", bound=Callable[..., Any])


def open_store(
    url: str | os.PathLike, storage_options: Mapping[str, Any] | None = None, *,
    read_only: bool = False,
) -> Store:
    """A Zarr store for a local path or an fsspec URL (``s3://bucket/prefix.zarr``).

    ``storage_options`` go to fsspec (e.g. ``{"endpoint_url": "http://127.0.0.1:8333"}``);
    without them s3fs reads the standard AWS variables.
    """
    url = os.fspath(url)
    path = local_path(url)
    if path is None:
        try:
            return zarr.storage.FsspecStore.from_url(
                url, storage_options=dict(storage_options or {}), read_only=read_only
            )
        except (ImportError, ValueError) as exc:
            raise StorageError(url, f"cannot open object store: {exc}") from None
    return zarr.storage.LocalStore(path, read_only=read_only)


@functools.lru_cache(maxsize=16)
def _cached_store(url: str, options_json: str) -> Store:
    return open_store(url, json.loads(options_json))


def worker_store(url: str, storage_options: Mapping[str, Any] | None) -> Store:
    """The writable store for ``url``, opened once per process (tasks call this)."""
    return _cached_store(os.fspath(url), json.dumps(dict(storage_options or {}), sort_keys=True))


def location(store: Store) -> str:
    """The path or URL of a store, for messages."""
    if isinstance(store, zarr.storage.LocalStore):
        return str(store.root)
    return f"{getattr(store.fs, 'protocol', ('store',))[0]}://{store.path}"


def storage_errors(fn: F) -> F:
    """Report failures of the store itself (unreachable server, denied access, full disk)
    as one-line StorageErrors naming the store; ionmap's own errors pass unchanged."""
    @functools.wraps(fn)
    def wrapper(store, *args, **kwargs):
        try:
            return fn(store, *args, **kwargs)
        except IonmapError:
            raise
        except Exception as exc:  # noqa: BLE001 - fsspec backends raise many kinds
            raise StorageError(location(store), f"{fn.__name__.strip('_').replace('_', ' ')}"
                               f" failed: {type(exc).__name__}: {exc}") from exc
    return wrapper  # type: ignore[return-value]


@storage_errors
def read_root_attrs(store: Store) -> dict | None:
    """The root ``ionmap`` attribute, or None when the store holds no ionmap result."""
    try:
        root = zarr.open_group(store, mode="r", zarr_format=3)
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError,
            zarr.errors.NodeTypeValidationError, ValueError, TypeError):
        return None  # nothing there, or an unreadable root: "not an ionmap store"
    attrs = root.attrs.asdict().get("ionmap")
    return dict(attrs) if isinstance(attrs, Mapping) else None


@storage_errors
def update_root_attrs(store: Store, attrs: dict) -> None:
    """Replace the root ``ionmap`` attribute (the only writer is the driver process)."""
    zarr.open_group(store, mode="r+", zarr_format=3).update_attributes({"ionmap": attrs})


def _is_empty(url: str, storage_options: Mapping[str, Any] | None) -> bool:
    path = local_path(url)
    if path is not None:
        root = Path(path)
        return not root.exists() or (root.is_dir() and not any(root.iterdir()))
    fs, key = filesystem(url, storage_options)
    try:
        fs.invalidate_cache(key)
        return not fs.ls(key, detail=False)
    except FileNotFoundError:
        return True
    except Exception as exc:  # noqa: BLE001 - fsspec backends raise many kinds
        raise StorageError(url, f"cannot list output: {type(exc).__name__}: {exc}") from exc


def _clear(url: str, storage_options: Mapping[str, Any] | None) -> None:
    path = local_path(url)
    try:
        if path is not None:
            shutil.rmtree(path, ignore_errors=False)
            return
        fs, key = filesystem(url, storage_options)
        fs.invalidate_cache(key)
        if fs.exists(key):
            fs.rm(key, recursive=True)
        fs.invalidate_cache(key)
    except FileNotFoundError:
        pass
    except Exception as exc:  # noqa: BLE001 - fsspec backends raise many kinds
        raise StorageError(url, f"cannot clear output: {type(exc).__name__}: {exc}") from exc


def prepare_output(
    url: str, storage_options: Mapping[str, Any] | None, *, resume: bool, overwrite: bool
) -> tuple[Store, dict | None]:
    """Open the output store and decide what to do with what is there.

    Returns (store, attrs of the unfinished run to resume, or None for a fresh start).
    Raises StorageError for a finished result without ``overwrite``, for an interrupted run
    without ``resume``/``overwrite``, and for a non-ionmap path (never deleted).
    """
    path = local_path(url)
    if path is not None and os.path.isfile(path):
        raise StorageError(url, "output exists and is a file, not a Zarr store")
    store = open_store(url, storage_options)
    attrs = read_root_attrs(store)
    if attrs is None:
        if not _is_empty(url, storage_options):
            raise StorageError(url, "output exists and is not an ionmap result; refusing to "
                               "overwrite it (choose another OUTPUT)")
        return store, None
    if overwrite:
        _clear(url, storage_options)
        return open_store(url, storage_options), None
    if attrs.get("complete"):
        if resume:
            return store, attrs
        raise StorageError(url, "a finished ionmap result already exists here "
                           "(use overwrite=True to replace it)")
    if not resume:
        raise StorageError(url, "holds an interrupted conversion (use resume=True to continue "
                           "it or overwrite=True to start again)")
    return store, attrs
