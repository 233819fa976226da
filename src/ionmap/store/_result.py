"""Reading a result store: ion images, TIC, mask, features and labels as arrays."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr
import zarr.errors

from .._files import local_path
from ..errors import InputError, StorageError
from ._backend import open_store, read_root_attrs
from ._layout import FEATURES, ION, LABELS, MASK, MASS_ERROR, TIC


class Result:
    """A result store written by :func:`ionmap.convert`.

    Images are (y, x) in pixels, image[y - 1, x - 1] for the imzML's 1-based (x, y).
    Numpy properties read the data when accessed; the dask properties are lazy.
    """

    def __init__(self, url: str, store: Any, attrs: dict) -> None:
        self.url = url
        self._store = store
        self.attrs = attrs

    # -- metadata -------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        """True once every band and the pyramid are written."""
        return bool(self.attrs.get("complete"))

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx) image size in pixels."""
        return tuple(self.attrs["shape"])

    @property
    def pixel_size_um(self) -> tuple[float, float] | None:
        """(x, y) pixel size in µm, or None when the imzML does not say."""
        p = self.attrs.get("pixel_size_um")
        return None if p is None else (float(p[0]), float(p[1]))

    @property
    def targets(self) -> list[dict]:
        """One dict per channel: name, formula, adduct, mz (Th), ppm, group, window, and
        the annotation confidence (:mod:`ionmap.annotate`): msm, fdr (q-value; 1 for a
        target without signal), rho_spectral, rho_spatial, rho_chaos, n_decoys (None
        without a formula or in results made before scoring existed); and
        (:mod:`ionmap.interference`) ``interferences``, the other ions inside the window
        (ion, mz, ppm offset, abundance), and ``window_vs_fwhm``, the window's full width
        against the measured peak FWHM (window_ppm, fwhm_ppm, ratio, verdict, fwhm_from)."""
        scores = (self.attrs.get("annotation") or {}).get("targets") or [{}] * len(
            self.attrs["targets"])
        return [{**dict(t), **s} for t, s in zip(self.attrs["targets"], scores)]

    @property
    def target_names(self) -> list[str]:
        return [t["name"] for t in self.attrs["targets"]]

    # -- arrays ---------------------------------------------------------------------------
    def _zarr(self, path: str) -> zarr.Array:
        return zarr.open_array(self._store, path=path, mode="r", zarr_format=3)

    def _dask(self, path: str):
        import dask.array as da

        arr = self._zarr(path)
        return da.from_zarr(arr, chunks=arr.shards or arr.chunks)

    @property
    def n_levels(self) -> int:
        """Number of pyramid levels of the ion images (level 0 is full resolution)."""
        return int(self.attrs["layout"]["levels"])

    @property
    def ion_images(self):
        """Lazy dask array (c, y, x) float32 of level 0, channels in ``target_names`` order."""
        return self._dask(f"{ION}/0")

    def ion_level(self, level: int):
        """Lazy dask array (c, y, x) of pyramid level ``level`` (2**level coarser)."""
        return self._dask(f"{ION}/{level}")

    def ion_image(self, name: str) -> np.ndarray:
        """The (y, x) float32 image of target ``name``."""
        names = self.target_names
        if name not in names:
            raise InputError(self.url, f"no ion image {name!r} (targets: {', '.join(names)})")
        return self._zarr(f"{ION}/0")[names.index(name)]

    def tic_level(self, level: int):
        """Lazy dask array (y, x) of TIC pyramid level ``level`` (2**level coarser)."""
        return self._dask(f"{TIC}/{level}")

    def ome(self, path: str) -> dict:
        """The OME-NGFF metadata (the ``ome`` attribute) of group ``path``, e.g.
        ``"ion_images"`` (multiscales, omero channels) or ``"ion_images/labels/NAME"``
        (image-label colours and properties); {} when the group or attribute is absent."""
        try:
            group = zarr.open_group(self._store, path=path, mode="r", zarr_format=3)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            return {}
        return dict(group.attrs.asdict().get("ome", {}))

    @property
    def tic(self) -> np.ndarray:
        """(y, x) float32 total ion count (sum of each raw spectrum's intensities)."""
        return self._zarr(f"{TIC}/0")[...]

    @property
    def mask(self) -> np.ndarray:
        """(y, x) bool: the pixel has a spectrum."""
        return self._zarr(MASK)[...]

    @property
    def features_mz(self) -> np.ndarray | None:
        """(F,) float64 feature m/z axis (Th), or None without features."""
        return self._zarr(f"{FEATURES}/mz")[...] if "features" in self.attrs else None

    @property
    def features(self):
        """Lazy dask array (F, y, x) float32 feature cube, or None without features."""
        return self._dask(f"{FEATURES}/0") if "features" in self.attrs else None

    @property
    def recalibration(self) -> dict | None:
        """What recalibration did: method, applied, message, model and per-reference
        errors (see :mod:`ionmap.recal`), or None for results made before it existed."""
        rec = self.attrs.get("recalibration")
        return None if rec is None else dict(rec)

    @property
    def mass_error(self) -> dict[str, np.ndarray] | None:
        """Per-pixel mass error maps (y, x) float32 in ppm when the run was recalibrated:
        ``before`` (median reference error on the recorded axis), ``after`` (after the
        model) and ``model`` (the offset field a); NaN where no reference was found."""
        if not (self.recalibration or {}).get("applied"):
            return None
        planes = self._zarr(MASS_ERROR)[...]
        return {"before": planes[0], "after": planes[1], "model": planes[2]}

    @property
    def label_names(self) -> list[str]:
        """Names of the label images under ion_images/labels."""
        return list(self.ome(f"{ION}/{LABELS}").get("labels", []))

    def labels(self, name: str) -> np.ndarray:
        """The (y, x) integer label image ``name`` (level 0)."""
        if name not in self.label_names:
            raise InputError(self.url, f"no labels {name!r} (have: {self.label_names})")
        return self._zarr(f"{ION}/{LABELS}/{name}/0")[...]

    # -- what the analysis steps stored (None when absent) --------------------------------
    @property
    def mean_spectrum(self) -> tuple[np.ndarray, np.ndarray, dict] | None:
        """(m/z in Th, mean intensity per spectrum, info) stored by convert, or None."""
        from . import _analysis as analysis

        return analysis.read_mean_spectrum(self._store)

    @property
    def tissue(self) -> np.ndarray | None:
        """(y, x) bool tissue mask stored with the maps, or None."""
        from . import _analysis as analysis

        return analysis.read_tissue(self._store)

    @property
    def maps(self) -> tuple[dict[str, np.ndarray], list[dict]] | None:
        """(map name -> (y, x) float32 values, per-map name/unit/definition), or None."""
        from . import _analysis as analysis

        return analysis.read_maps(self._store)

    @property
    def hotspots(self) -> dict | None:
        """The stored hotspot run (tables, registration, parameters, cells), or None."""
        from . import _analysis as analysis

        return analysis.read_hotspots(self._store)

    def __repr__(self) -> str:
        state = "complete" if self.complete else "INCOMPLETE"
        return (f"Result({self.url!r}, shape={self.shape}, targets={len(self.target_names)},"
                f" {state})")


def open_result(
    url: str | os.PathLike, storage_options: Mapping[str, Any] | None = None, *,
    allow_incomplete: bool = False,
) -> Result:
    """Open a result store (local path or ``s3://bucket/prefix.zarr``).

    Raises StorageError when there is no ionmap result at ``url``, or when the conversion
    did not finish (unless ``allow_incomplete``: then check ``Result.complete``).
    """
    url = os.fspath(url)
    path = local_path(url)
    if path is not None and not os.path.isdir(path):
        raise StorageError(url, "no ionmap result here (not a directory)")
    store = open_store(url, storage_options, read_only=True)
    try:
        attrs = read_root_attrs(store)
    except OSError as exc:
        raise StorageError(url, f"cannot read result: {exc}") from None
    if attrs is None:
        raise StorageError(url, "not an ionmap result (no root 'ionmap' attribute)")
    if not attrs.get("complete") and not allow_incomplete:
        raise StorageError(url, "incomplete result: the conversion was interrupted "
                           "(finish it with resume=True)")
    return Result(url, store, attrs)
