"""AnnData exports of a result for scanpy/squidpy (``ionmap export``).

- :func:`pixel_table`: pixels × ion images (or features), one observation per pixel with
  a spectrum; ``obs``: ``x``, ``y`` (MSI pixel, 0-based), ``tic``, ``tissue`` and, after
  ``ionmap hotspots``, the hotspot id of every analysed map (0: none); ``var``: the target
  metadata (name, formula, adduct, mz, ppm, group) or the feature m/z;
  ``obsm["spatial"]``: (x, y) in µm (pixels when the pixel size is unknown, said in
  ``uns["spatial_unit"]``).
- :func:`cell_table`: cells × ion images, each cell given the value of the MSI pixel its
  centre falls in (NaN off the grid); ``obs``: cell type, MSI position and, per map,
  the hotspot id, its immune class and the compartment (inside, rim within the run's
  ``rim_um`` of the hotspot edge, outside, edge band = the guard band just inside the
  edge, not measured = off the grid, the tissue or the annotated region), as the hotspot
  run counted each cell. Needs a stored hotspot run.

Every value is read from the result store; nothing is recomputed but the pixel lookup.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._files import write_atomic
from .._geometry import pixels_inside
from ..errors import InputError
from ..regions import COMPARTMENTS, label_name


def _open(result: Any, storage_options: Mapping[str, Any] | None):
    from ..store import open_result

    if isinstance(result, (str, os.PathLike)):
        return open_result(result, storage_options)
    return result


def _spatial(xy: np.ndarray, px: tuple[float, float] | None) -> tuple[np.ndarray, str]:
    if px is None:
        return xy.astype(np.float64), "MSI pixels (pixel size unknown)"
    return xy * np.asarray(px, np.float64), "micrometer"


def _var(result, features: bool):
    import pandas as pd

    if features:
        mz = result.features_mz
        return pd.DataFrame({"mz": mz}, index=[f"mz_{m:.5f}" for m in mz])
    rows = [{k: ("" if t.get(k) is None else t.get(k)) for k in
             ("formula", "adduct", "mz", "ppm", "group")} for t in result.targets]
    return pd.DataFrame(rows, index=result.target_names)


def _cube(result, features: bool) -> np.ndarray:
    if features:
        if result.features is None:
            raise InputError(result.url, "the result has no feature cube (convert with "
                             "features=True)")
        return np.asarray(result.features.compute())
    return np.asarray(result.ion_images.compute())


def pixel_table(result: Any, *, features: bool = False,
                storage_options: Mapping[str, Any] | None = None):
    """The pixels × targets (or × features) AnnData of a result (see module docstring)."""
    import anndata
    import pandas as pd

    result = _open(result, storage_options)
    mask = np.asarray(result.mask, bool)
    ys, xs = np.nonzero(mask)
    cube = _cube(result, features)
    tissue = result.tissue
    obs = {"x": xs, "y": ys, "tic": np.asarray(result.tic)[ys, xs].astype(np.float64),
           "tissue": (tissue if tissue is not None else mask)[ys, xs]}
    hot = result.hotspots
    for name in (hot or {}).get("maps", []):
        if label_name(name) in result.label_names:
            obs[f"hotspot_{name}"] = result.labels(label_name(name))[ys, xs]
    spatial, unit = _spatial(np.column_stack([xs, ys]), result.pixel_size_um)
    adata = anndata.AnnData(
        X=cube[:, ys, xs].T.astype(np.float32),
        obs=pd.DataFrame(obs, index=[f"{x}_{y}" for x, y in zip(xs, ys)]),
        var=_var(result, features))
    adata.obsm["spatial"] = spatial
    adata.uns["spatial_unit"] = unit
    adata.uns["ionmap"] = {"result": str(result.url),
                           "values": "features" if features else "ion images"}
    return adata


#: Names of the stored compartment codes -2..2 (see ``ionmap.store``'s hotspots group).
COMPARTMENT_NAMES = ("not measured", "edge band", *COMPARTMENTS)


def cell_table(result: Any, *, storage_options: Mapping[str, Any] | None = None):
    """The cells × targets AnnData of a result with a stored hotspot run."""
    import anndata
    import pandas as pd

    result = _open(result, storage_options)
    hot = result.hotspots
    if hot is None:
        raise InputError(result.url, "no hotspot run stored in this result (run ionmap "
                         "hotspots on it first)")
    xy = np.asarray(hot["cells_xy"], np.float64)
    col, row, on = pixels_inside(xy, result.shape)  # as the immune context counts them
    cube = np.asarray(result.ion_images.compute())
    values = np.full((len(xy), cube.shape[0]), np.nan, np.float32)
    values[on] = cube[:, row[on], col[on]].T
    obs: dict[str, Any] = {"cell_type": pd.Categorical(hot["cells_type"].astype(str)),
                           "msi_x": xy[:, 0], "msi_y": xy[:, 1], "on_grid": on}
    classes = {int(h["id"]): h["class"] for h in hot.get("hotspots", [])}
    ids, codes = hot.get("cells_hotspot"), hot.get("cells_compartment")
    if ids is None or codes is None:
        raise InputError(result.url, "the stored hotspot run has no per-cell compartments "
                         "(written by an older ionmap): run ionmap hotspots on it again")
    for k, name in enumerate(hot.get("maps", [])):
        owner = np.asarray(ids[k], np.int64)
        obs[f"hotspot_{name}"] = owner
        obs[f"class_{name}"] = pd.Categorical([classes.get(int(i), "") for i in owner])
        obs[f"compartment_{name}"] = pd.Categorical(
            np.asarray(COMPARTMENT_NAMES)[np.asarray(codes[k], np.int64) + 2])
    spatial, unit = _spatial(xy, result.pixel_size_um)
    adata = anndata.AnnData(X=values, obs=pd.DataFrame(obs, index=[f"cell_{i}" for i in
                                                                    range(len(xy))]),
                            var=_var(result, False))
    adata.obsm["spatial"] = spatial
    adata.uns["spatial_unit"] = unit
    adata.uns["ionmap"] = {"result": str(result.url),
                           "rim_um": float(hot.get("parameters", {}).get("rim_um", 0.0)),
                           "value": "ion image value of the MSI pixel the cell centre is in"}
    return adata


def write_h5ad(adata, path: str | os.PathLike) -> Path:
    """Write an AnnData as ``.h5ad`` (atomically: a temporary file, then renamed)."""
    return write_atomic(path, adata.write_h5ad)
