"""The whole region analysis in one call: maps, hotspots, immune context, every export.

:func:`run_hotspots` is what ``ionmap hotspots`` calls. It takes a result store (URL or
an opened :class:`ionmap.store.Result`) or plain arrays (:class:`MSIData`), the cells and
a registration, and writes into ``out_dir``:

- ``hotspots.csv``: one row per hotspot (columns in :data:`HOTSPOT_COLUMNS`); its
  ``annotation`` column (:func:`annotation_status`) says whether the map's ions are
  confidently annotated at ``annotation_fdr``;
- ``cell_densities.csv``: density of every cell type inside / rim / outside each hotspot;
- ``distance_curves.csv``: density against signed distance from each hotspot's edge;
- ``hotspots.geojson``: outlines as QuPath annotations in the annotation frame (histology
  pixels when the cells are in µm and the histology pixel size is known);
- ``hotspots_msi.geojson``: the same outlines in MSI pixels;
- ``registration.json``: the transform and its residuals;
- ``hotspots_<map>.png``: the map, hotspot outlines coloured by class, and the cells of
  the chosen type;
- and, for a result store, one OME-NGFF label image ``hotspots_<map>`` per map.
"""
from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import store
from .._files import make_dir
from ..errors import InputError, IonmapWarning
from ..params import (
    HotspotParams,
    ImmuneParams,
    RegistrationParams,
    split_overrides,
    with_overrides,
)
from . import _export as export
from ._cells import Cells, read_cells
from ._coverage import coverage_mask
from ._export import json_ready
from ._hotspots import Hotspots, find_hotspots, sample_significance
from ._immune import NOT_SIGNIFICANT, immune_context
from ._maps import DEFAULT_MAPS, build_maps, map_channels, map_info, resolve_map
from ._register import Registration, audit_registration, fit_landmarks, register_auto
from ._tissue import find_tissue

#: Columns of hotspots.csv: the documented ones first, then extra measurements.
HOTSPOT_COLUMNS = (
    "id", "map", "class", "centroid_x", "centroid_y", "area_px", "area_mm2", "mean_value",
    "inside_density", "rim_density", "outside_density", "exclusion_score", "p_value",
    "hotspot_p", "hotspot_q", "significant", "max_value", "max_z", "cluster_mass",
    "inside_count", "rim_count", "rim_area_mm2",
    "centroid_annotation_x", "centroid_annotation_y",
    "class_reason", "coverage_fraction", "rim_coverage_fraction", "expected_inside",
    "inside_vs_tissue", "inside_vs_tissue_lo", "inside_vs_tissue_hi",
    "rim_vs_tissue", "rim_vs_tissue_lo", "rim_vs_tissue_hi",
    "inside_vs_rim", "inside_vs_rim_lo", "inside_vs_rim_hi", "inside_vs_rim_p", "dispersion",
    "class_stable", "classes_across_settings", "registration_stable", "annotation",
)


@dataclass
class MSIData:
    """What the region module needs from a result, as plain arrays.

    ``images``: channel name -> (ny, nx) ion image (every target of the result: the
    maps read some, the tissue mask, :func:`~ionmap.regions.tissue_mask`, all);
    ``mask``: (ny, nx) bool, pixel has a spectrum; ``tic``: (ny, nx) total ion current,
    or None; ``pixel_size_um``: (x, y) µm;
    ``groups``: channel -> target group (for composite maps); ``normalized``: the images
    are TIC-normalised already; ``url``: the result store they came from, if any;
    ``fdr``: channel -> annotation FDR (q-value, :mod:`ionmap.annotate`), None or absent
    for a channel that was not scored (results made before scoring, targets without a
    formula).
    """

    images: dict[str, np.ndarray]
    mask: np.ndarray
    tic: np.ndarray | None = None
    pixel_size_um: tuple[float, float] | None = None
    groups: dict[str, str | None] = field(default_factory=dict)
    normalized: bool = False
    url: str | None = None
    normalisation: str = "TIC"
    fdr: dict[str, float | None] = field(default_factory=dict)


def annotation_status(map_name: str, data: MSIData, threshold: float) -> str:
    """How confidently the ions of ``map_name`` are annotated: "confident" when every
    channel the map reads has an FDR at most ``threshold``; otherwise "not confidently
    annotated (FDR q: ions)" with the worst FDR and the channels above it (a ratio or
    group map is as doubtful as its worst channel); "not scored" when a channel it reads
    has no FDR."""
    chans = map_channels([map_name], list(data.images), data.groups)
    fdrs = [data.fdr.get(c) for c in chans]
    if any(q is None for q in fdrs):
        return "not scored"
    bad = [c for c, q in zip(chans, fdrs) if q > threshold]
    if not bad:
        return "confident"
    return f"not confidently annotated (FDR {max(fdrs):.2f}: {', '.join(bad)})"


def load_result(result: Any, maps: Sequence[str] | None = None,
                storage_options: Mapping[str, Any] | None = None) -> tuple[MSIData, list[str]]:
    """Read the ion images, mask and TIC of a result store (URL or opened Result).

    Returns the data and the map names: ``maps`` as given, or (None) those of
    :data:`DEFAULT_MAPS` that the result's channels allow.
    """
    if isinstance(result, (str, os.PathLike)):
        result = store.open_result(result, storage_options)
    channels = list(result.target_names)
    groups = {t["name"]: t.get("group") for t in result.targets}
    if maps is None:
        maps = [m for m in DEFAULT_MAPS if _resolvable(m, channels, groups)]
        if not maps:
            raise InputError(result.url, f"none of the default maps ({', '.join(DEFAULT_MAPS)}) "
                                         "can be built from the result's channels; name them")
    params = result.attrs.get("parameters", {}) if isinstance(result.attrs, Mapping) else {}
    method = params.get("normalize", "none")
    data = MSIData(
        images={c: np.asarray(result.ion_image(c)) for c in channels},
        mask=np.asarray(result.mask, dtype=bool),
        tic=np.asarray(result.tic),
        pixel_size_um=result.pixel_size_um,
        groups=groups,
        normalized=method != "none",
        url=str(result.url),
        normalisation="RMS" if method == "rms" else "TIC",
        fdr={t["name"]: t.get("fdr") for t in result.targets},
    )
    return data, list(maps)


def store_maps(result: Any, maps: Sequence[str] | None = None, *,
               noise_floor: float = HotspotParams.noise_floor,
               normalisation: str = HotspotParams.normalisation,
               tissue_mask: str | os.PathLike | None = None,
               storage_options: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Build the tissue mask (``tissue_mask``: a user mask file, see
    :func:`~ionmap.regions.read_tissue_mask`) and the maps (``normalisation``: see
    :func:`~ionmap.regions.build_maps`) of a result (no cells needed) and store them in
    it, for the report and viewers of a sample without cell annotations. Returns the maps."""
    data, maps = load_result(result, maps, storage_options)
    tissue = find_tissue(data.mask, data.tic, data.images, tissue_mask)
    values = build_maps(data.images, tissue, maps, data.groups, tic=data.tic,
                        normalisation=_normalisation(data, normalisation),
                        noise_floor=noise_floor)
    infos = [map_info(m, list(data.images), data.groups,
                      normalisation=_normalisation_name(data, normalisation)) for m in maps]
    store.write_maps(data.url, values, tissue, infos, storage_options=storage_options)
    return values


def _normalisation(data: MSIData, method: str) -> str:
    """The maps' normaliser: ``method``, or none for images normalised at conversion."""
    return "none" if data.normalized else method


def _normalisation_name(data: MSIData, method: str) -> str:
    """How the maps are normalised, as the colour bars say it ("TIC", "RMS", "PQN", "un")."""
    if data.normalized:
        return data.normalisation
    return {"tic": "TIC" if data.tic is not None else "un", "pqn": "PQN", "none": "un"}[method]


def _resolvable(name: str, channels: list[str], groups: Mapping[str, str | None]) -> bool:
    try:
        resolve_map(name, channels, groups)
    except InputError:
        return False
    return True


@dataclass
class HotspotRun:
    """Everything :func:`run_hotspots` computed (the same as the files it wrote).

    ``hotspots``: rows of hotspots.csv; ``densities``: rows of cell_densities.csv;
    ``curves``: rows of distance_curves.csv; ``registration``; ``tissue``: (ny, nx) bool;
    ``maps`` / ``labels``: map name -> (ny, nx) values / hotspot ids; ``cell_hotspot`` /
    ``cell_compartment``: map name -> (n_cells,) each cell's hotspot id (0: none) and
    compartment as the immune context counted it (see
    :attr:`~ionmap.regions.ImmuneContext.cell_compartment`); ``files``: written.
    """

    hotspots: list[dict]
    densities: list[dict]
    curves: list[dict]
    registration: Registration
    tissue: np.ndarray
    maps: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    cell_hotspot: dict[str, np.ndarray]
    cell_compartment: dict[str, np.ndarray]
    files: list[Path]
    params: dict


def label_name(map_name: str) -> str:
    """Name of the label image (and PNG stem) of a map's hotspots: ``hotspots_<map>``."""
    return "hotspots_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", map_name)


def run_hotspots(
    source: Any,
    cells: Cells | str | os.PathLike,
    registration: Registration | str | os.PathLike,
    out_dir: str | os.PathLike,
    hotspots: HotspotParams | None = None,
    immune: ImmuneParams | None = None,
    *,
    model: str = RegistrationParams.model,
    annotated_region: str | os.PathLike | np.ndarray | None = None,
    pixel_size_um: float | tuple[float, float] | None = None,
    write_labels: bool = True,
    colors: Mapping[str, Sequence[int]] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> HotspotRun:
    """Find metabolic hotspots and their immune context; write every output to ``out_dir``.

    ``source``: a result URL/path, an opened Result, or :class:`MSIData`. ``cells``:
    :class:`Cells` or a cell file (read with defaults; use :func:`read_cells` for options).
    ``registration``: a :class:`Registration`, "auto", or a landmarks CSV (fitted with
    ``model``, similarity or affine). ``hotspots``: a :class:`~ionmap.params.HotspotParams`
    (maps, contrast windows, FDR, size and extent of hotspots, ratio noise floor);
    ``immune``: an :class:`~ionmap.params.ImmuneParams` (cell type, rim, thresholds,
    permutations); any of their fields given as keywords replace their values
    (``run_hotspots(..., fdr=0.01, cell_type="CD3")``). ``maps`` default: those of
    lactate, kynurenine, kyn_trp, lipids the channels allow. ``pixel_size_um`` overrides
    the MSI pixel size (µm). ``annotated_region``: where cells were annotated (a GeoJSON/TIFF
    file or an MSI-grid bool array; default: the cells file's annotations, else the hull of
    the cells; see :mod:`ionmap.regions._coverage`). The registration is audited against
    the declared units (:func:`~ionmap.regions._register.audit_registration`); its warnings
    are in ``params["warnings"]``. ``write_labels``: also store the labels, maps, tissue,
    hotspot tables and cells in the result store (if ``source`` is one), for viewers, the
    report and the exports; ``colors``: immune class -> RGB (0-255) for the GeoJSON
    classifications and label colours (the command line passes the report's palette,
    :mod:`ionmap.report._palette`; None: no colours, QuPath and napari choose their own).
    The surrogates of map k are seeded by ``(seed, k)`` (``ImmuneParams.seed``).

    Significance is decided over the whole sample: the q-values (``hotspot_q``) are
    Benjamini–Hochberg over the candidate clusters of every map, and a hotspot is
    ``significant`` when q ≤ ``fdr``. Only significant hotspots get an immune context and
    a class; the others are left out of every output, or, with ``candidates``, listed
    as ``undetermined`` with ``class_reason`` "not significant" (no densities), as
    :func:`~ionmap.regions.immune_context` calls them, and never counted. Hotspot ids are unique over maps.
    """
    hot_over, imm_over = split_overrides(overrides, HotspotParams, ImmuneParams)
    hp = with_overrides(hotspots, HotspotParams, hot_over)
    ip = with_overrides(immune, ImmuneParams, imm_over)
    maps = hp.maps
    cell_type = ip.cell_type
    if isinstance(source, MSIData):
        data = source
        maps = list(maps) if maps is not None else [
            m for m in DEFAULT_MAPS if _resolvable(m, list(data.images), data.groups)]
    else:
        data, maps = load_result(source, maps, storage_options)
    if not maps:
        raise InputError(data.url, "no maps to analyse")
    px = pixel_size_um if pixel_size_um is not None else data.pixel_size_um
    if px is None:
        raise InputError(data.url, "the MSI pixel size is unknown; give it "
                                   "(pixel_size_um=...)")
    px = (float(px), float(px)) if np.isscalar(px) else (float(px[0]), float(px[1]))
    if not isinstance(cells, Cells):
        cells = read_cells(cells)
    if cell_type not in set(cells.cell_type.tolist()):
        raise InputError(cells.source, f"no cells of type {cell_type!r} (types: "
                                       f"{', '.join(cells.types()[:20])}); name it with the "
                                       "cell type option")
    tissue = find_tissue(data.mask, data.tic, data.images, hp.tissue_mask)
    if isinstance(registration, Registration):
        reg = registration
    elif str(registration) == "auto":
        reg = register_auto(tissue, cells, pixel_size_um=px)
    else:
        reg = fit_landmarks(registration, model, annotation_unit=cells.unit)

    values = build_maps(data.images, tissue, maps, data.groups, tic=data.tic,
                        normalisation=_normalisation(data, hp.normalisation),
                        noise_floor=hp.noise_floor)
    cells_msi = reg.to_msi(cells.xy)
    coverage, coverage_source = coverage_mask(tissue.shape, cells, cells_msi, reg,
                                              annotated_region)
    notes = audit_registration(reg, cells, cells_msi, tissue, px, ip.rim_um, coverage)
    loo = reg.loo_rms_px if reg.method == "landmarks" else None
    rows, densities, curves, labels = [], [], [], {}
    cell_ids, cell_comps = {}, {}  # per map: each cell's hotspot id and compartment
    pixel_mm2 = px[0] * px[1] * 1e-6
    found = [find_hotspots(values[name], tissue, fdr=hp.fdr, min_area_px=hp.min_area_px,
                           radius=hp.radius_px, shape=hp.neighbourhood, extent=hp.extent,
                           cluster_z=hp.cluster_z, n_surrogates=hp.n_surrogates,
                           transform=hp.transform, seed=np.random.SeedSequence([ip.seed, k]),
                           keep="all")
             for k, name in enumerate(maps)]
    significant = sample_significance(found, hp.fdr)
    n_candidates = sum(len(hs) for hs in found)
    kept = [hs.subset(sig) for hs, sig in zip(found, significant)]
    # every candidate cluster of every map, significant or not, stays out of the tiles that
    # estimate the cells' dispersion: a niche's own cell pattern is not background scatter
    candidates = np.logical_or.reduce([hs.labels > 0 for hs in found])
    for name, hs, shown, sig in zip(maps, found, kept, significant):
        status = annotation_status(name, data, hp.annotation_fdr)
        ctx = immune_context(shown, cells_msi, cells.cell_type, tissue, px,
                             rim_um=ip.rim_um, cell_type=cell_type,
                             edge_guard_um=ip.edge_guard_um, scarce_ratio=ip.scarce_ratio,
                             rim_ratio=ip.rim_ratio, n_permutations=ip.n_permutations,
                             seed=ip.seed, coverage=coverage,
                             significant=[True] * len(shown.table),
                             min_expected=ip.min_expected, confidence=ip.confidence,
                             min_coverage=ip.min_coverage, registration_error_px=loo,
                             other_hotspots=candidates)
        table, contexts = shown.table, ctx.table
        if hp.candidates:  # the others after the significant ones, without a context
            rest = hs.subset(~sig)
            lab = np.where(rest.labels > 0, rest.labels + len(shown), shown.labels)
            shown = Hotspots(lab, [], shown.z, shown.null_max_mass, shown.params)
            table = table + [{**h, "label": h["label"] + len(contexts)} for h in rest.table]
            contexts = contexts + [_NOT_SIGNIFICANT] * len(rest.table)
        offset = len(rows)  # ids are unique over all maps
        labels[name] = np.where(shown.labels > 0, shown.labels + offset, 0).astype(np.int32)
        ann = reg.to_annotation(np.array([[h["centroid_x"], h["centroid_y"]] for h in table])
                                ) if table else np.zeros((0, 2))
        for h, c, a in zip(table, contexts, ann):
            rows.append({"id": h["label"] + offset, "map": name, **h, **c,
                         "area_mm2": h["area_px"] * pixel_mm2,
                         "centroid_annotation_x": float(a[0]),
                         "centroid_annotation_y": float(a[1]), "annotation": status})
        cell_ids[name] = np.where(ctx.cell_label > 0, ctx.cell_label + offset, 0)
        cell_comps[name] = ctx.cell_compartment
        densities += [{"id": d["label"] + offset, "map": name, **d} for d in ctx.densities]
        curves += [{"id": d["label"] + offset, "map": name, **d} for d in ctx.curves]
    for r in rows:
        r.pop("label", None)
    for d in densities + curves:
        d.pop("label", None)

    params = {**hp.to_dict(), **ip.to_dict(), "maps": list(maps), "pixel_size_um": list(px),
              "n_candidates": n_candidates,
              "n_significant": int(sum(int(s.sum()) for s in significant)),
              "n_cells": len(cells), "tissue_px": int(tissue.sum()),
              "coverage_source": coverage_source,
              "coverage_px": int((coverage & tissue).sum()), "warnings": notes}
    infos = [map_info(m, list(data.images), data.groups,
                      normalisation=_normalisation_name(data, hp.normalisation)) for m in maps]
    files = _write_outputs(Path(out_dir), data, cells, cells_msi, reg, tissue, values, labels,
                           (cell_ids, cell_comps), rows, densities, curves, params, infos,
                           write_labels, colors or {}, storage_options)
    return HotspotRun(rows, densities, curves, reg, tissue, values, labels, cell_ids,
                      cell_comps, files, params)


#: Immune fields of a candidate that is not significant: never classified.
_NOT_SIGNIFICANT = {"class": "undetermined", "class_reason": NOT_SIGNIFICANT,
                    "inside_density": float("nan"),
                    "rim_density": float("nan"), "outside_density": float("nan"),
                    "exclusion_score": float("nan"), "p_value": float("nan"),
                    "inside_count": 0, "rim_count": 0, "rim_area_mm2": float("nan")}


#: GeoJSON of the hotspots when the cells are in µm and the histology pixel size unknown:
#: QuPath would read it as pixels, so the name says it is not.
GEOJSON_UM = "hotspots_UM_NOT_PIXELS.geojson"


def _annotation_output(reg: Registration, cells: Cells) -> tuple[np.ndarray, str, str]:
    """MSI -> GeoJSON frame, its unit and the file name: QuPath wants histology pixels;
    cells in µm without a histology pixel size give µm, named and warned as such."""
    if cells.unit == "um" and cells.pixel_size_um:
        scale = np.diag([1 / cells.pixel_size_um, 1 / cells.pixel_size_um, 1.0])
        return scale @ reg.matrix, "px", "hotspots.geojson"
    if cells.unit == "um":
        warnings.warn(f"{cells.source}: cells are in µm and the histology pixel size is "
                      f"unknown, so the QuPath annotations are in µm ({GEOJSON_UM}); give "
                      "cells_pixel_size_um=... to get them in image pixels", IonmapWarning,
                      stacklevel=3)
        return reg.matrix, "um", GEOJSON_UM
    return reg.matrix, cells.unit, "hotspots.geojson"


def _write_outputs(out: Path, data: MSIData, cells: Cells, cells_msi: np.ndarray,
                   reg: Registration, tissue: np.ndarray, values: dict, labels: dict,
                   assigned: tuple[dict, dict], rows: list, densities: list,
                   curves: list, params: dict, infos: list[dict], write_labels: bool,
                   colors: Mapping[str, Sequence[int]], storage_options) -> list[Path]:
    make_dir(out)
    files = [
        export.write_csv(out / "hotspots.csv", rows, HOTSPOT_COLUMNS),
        export.write_csv(out / "cell_densities.csv", densities,
                         ("id", "map", "cell_type", "compartment", "n_cells", "area_mm2",
                          "density_per_mm2")),
        export.write_csv(out / "distance_curves.csv", curves,
                         ("id", "map", "cell_type", "distance_um", "n_cells", "area_mm2",
                          "density_per_mm2")),
    ]
    matrix, unit, geo_name = _annotation_output(reg, cells)
    for stale in {"hotspots.geojson", GEOJSON_UM} - {geo_name}:
        (out / stale).unlink(missing_ok=True)  # never leave one of an earlier run beside
    geo = export.hotspots_geojson(labels, rows, matrix=matrix, colors=colors)
    geo_msi = export.hotspots_geojson(labels, rows, colors=colors)
    files.append(export.write_json(out / geo_name, geo))
    files.append(export.write_json(out / "hotspots_msi.geojson", geo_msi))
    registration = {**reg.to_dict(), "geojson_unit": unit, "geojson_file": geo_name,
                    "cells_file": cells.source, "cells_unit": cells.unit,
                    "histology_pixel_size_um": cells.pixel_size_um,
                    "msi_pixel_size_um": params["pixel_size_um"], "parameters": params}
    files.append(export.write_json(out / "registration.json", registration))
    if write_labels and data.url:
        _store(data.url, tissue, values, labels, assigned, rows, densities, curves, params,
               infos, registration, cells, cells_msi, colors, storage_options)
    return files


def _store(url: str, tissue: np.ndarray, values: dict, labels: dict, assigned: tuple[dict, dict],
           rows: list, densities: list, curves: list,
           params: dict, infos: list[dict], registration: dict, cells: Cells,
           cells_msi: np.ndarray, colors: Mapping[str, Sequence[int]], storage_options) -> None:
    """Maps, tissue, hotspot tables and cells into the result; one label image per map
    with its provenance, and no label image left of an earlier run's other maps."""
    store.write_maps(url, values, tissue, infos, storage_options=storage_options)
    stamp = store.now()
    names = []
    for name, lab in labels.items():
        mine = [r for r in rows if r["map"] == name]
        props = [{"label-value": int(r["id"]), **{k: v for k, v in r.items()
                  if k != "id" and isinstance(v, (int, float, str)) and not (
                      isinstance(v, float) and not np.isfinite(v))}} for r in mine]
        label_colors = {int(r["id"]): (*colors[r["class"]], 255) for r in mine
                        if r["class"] in colors}
        names.append(label_name(name))
        store.write_labels(url, names[-1], lab, colors=label_colors or None, properties=props,
                     provenance={"map": name, "parameters": params, "written": stamp},
                     storage_options=storage_options)
    store.remove_stale_labels(url, names, prefix="hotspots_",
                                 storage_options=storage_options)
    clean = json_ready({"hotspots": rows, "densities": densities, "curves": curves,
                        "registration": registration, "parameters": params,
                        "maps": [i["name"] for i in infos]})
    store.write_hotspots(url, clean, cells_msi, cells.cell_type,
                         *(np.stack([a[i["name"]] for i in infos]) for a in assigned),
                         storage_options=storage_options)


def run_summary(run: HotspotRun) -> str:
    """A short text report of a run: registration, one line per hotspot, files."""
    reg = run.registration
    if reg.method == "landmarks":
        quality = f"RMS residual {reg.rms_px:.2f} px" + (
            f", leave-one-out {reg.loo_rms_px:.2f} px" if reg.loo_rms_px is not None else "")
    else:
        quality = f"tissue/cell-density correlation {reg.score:.2f}" if reg.score else ""
    p = reg.parameters()
    lines = [f"registration: {reg.method} ({reg.model}), rotation {p['rotation_deg']:.2f} deg, "
             f"scale {p['scale']:.4g} per MSI pixel; {quality}"]
    lines += [f"  note: {n}" for n in reg.notes]
    cov = run.params.get("coverage_px")
    if cov is not None:
        lines.append(f"annotated region ({run.params['coverage_source']}): {cov} of "
                     f"{run.params['tissue_px']} tissue pixels")
    lines += [f"  warning: {n}" for n in run.params.get("warnings", [])]
    n_sig = run.params.get("n_significant", len(run.hotspots))
    n_other = run.params.get("n_candidates", n_sig) - n_sig
    lines.append(f"{n_sig} hotspot(s) significant at q <= {run.params['fdr']:g} in "
                 f"{len(run.maps)} map(s) ({', '.join(run.maps)}); {n_other} candidate "
                 f"cluster(s) not significant{' (listed)' if run.params.get('candidates') else ''}"
                 f"; {run.params['cell_type']} per mm2 inside / rim / outside:")
    for h in run.hotspots:
        lines.append(
            f"  {h['id']:>3} {h['map']:<12} {h['class']:<16} at ({h['centroid_x']:.1f}, "
            f"{h['centroid_y']:.1f}) px, {h['area_px']} px; {h['inside_density']:.0f} / "
            f"{h['rim_density']:.0f} / {h['outside_density']:.0f}, exclusion "
            f"{h['exclusion_score']:+.2f} (p = {h['p_value']:.3g}); hotspot q = "
            f"{h['hotspot_q']:.3g}"
            + (f" [{h['class_reason']}]" if h.get("class_reason") else ""))
    folder = run.files[0].parent if run.files else None
    lines.append(f"wrote {len(run.files)} files to {folder}")
    return "\n".join(lines)
