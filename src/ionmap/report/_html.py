"""The self-contained ``report.html`` of one sample, rendered from stored results only.

What it shows was computed and stored by convert (TIC, mask, ion images, mean spectrum)
and by the hotspot step (tissue, maps, labels, hotspot tables, registration, cells); the
report reads it through the result reader and draws it (Jinja2 template
``templates/report.html.j2``, figures from :mod:`ionmap.report._figures`).
"""
from __future__ import annotations

import base64
import json
import os
import platform
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from markupsafe import Markup, escape

from .._files import write_atomic
from ..interference import describe
from ..params import HotspotParams
from . import _figures as figures
from . import _palette as palette
from ._stored import Stored, read_stored

_VERSIONS = ("ionmap", "numpy", "zarr", "dask", "distributed", "scikit-image", "pyimzml")
#: Target columns shown when present (annotation scores appear once stored).
_TARGET_COLUMNS = ("name", "formula", "adduct", "mz", "ppm", "group", "mass_error_ppm")
#: Mass-error colour range of the recalibration maps (± ppm).
_ERROR_RANGE_PPM = 20.0


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _fmt(column: str, value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return ""
        if column == "mz" or column.endswith("_mz"):
            return f"{value:.5f}"  # m/z to 5 decimals (0.01 ppm at m/z 1000 is 0.00001)
        return f"{value:.4g}"
    return str(value)


def _table(rows: Sequence[Mapping], columns: Sequence[str]) -> Markup:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            text = escape(_fmt(c, r.get(c, "")))
            if c == "class":
                text = Markup(f'<span class="swatch" style="background:'
                              f'{palette.hex_color(str(r.get(c, "")))}"></span>') + text
            cells.append(f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return Markup(f"<table><tr>{head}</tr>{''.join(body)}</table>")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("ionmap.report", "templates"),
                      autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined)
    env.globals["table"] = _table
    return env


def ion_unit(attrs: Mapping[str, Any]) -> str:
    """Unit of the stored ion images."""
    method = attrs.get("parameters", {}).get("normalize", "none")
    if method == "none":
        return "counts (summed intensity in the m/z window)"
    return f"{method.upper()}-normalised counts (× median {method.upper()} / pixel's)"


def _figures(s: Stored) -> dict[str, Any]:
    px = s.pixel_size_um
    out: dict[str, Any] = {
        "tic": _data_uri(figures.image_grid({"TIC": s.tic}, "counts (sum of the spectrum)",
                                            pixel_size_um=px, mask=s.mask, columns=1)),
        "ions": _data_uri(figures.image_grid(s.ion_images, ion_unit(s.attrs),
                                             pixel_size_um=px, mask=s.mask)),
        "spectrum": None, "maps": None, "overlays": {}, "curves": None,
        "mass_error": None, "error_histogram": None,
    }
    if s.mass_error is not None:
        out["mass_error"] = _data_uri(figures.image_grid(
            {"before": s.mass_error["before"], "after": s.mass_error["after"]},
            "mass error (ppm)", pixel_size_um=px, columns=2, symmetric=_ERROR_RANGE_PPM))
    if (s.recalibration or {}).get("histogram"):
        out["error_histogram"] = _data_uri(figures.error_histogram(
            s.recalibration["histogram"]))
    if s.mean_spectrum is not None and len(s.mean_spectrum[0]):
        out["spectrum"] = _data_uri(figures.mean_spectrum(*s.mean_spectrum[:2], s.targets))
    if s.maps:
        out["maps"] = _data_uri(figures.image_grid(s.maps, s.map_units, pixel_size_um=px))
    if s.hotspots is not None:
        out["overlays"] = {}
        for name, data in overlay_pngs(s).items():
            rows = [r for r in s.hotspots["hotspots"] if r["map"] == name]
            numbers = ", ".join(f"{r['id']} ({r['class']})" for r in rows) or "none"
            out["overlays"][name] = {
                "src": _data_uri(data),
                "caption": f"{name} ({s.map_units.get(name, '')}). Hotspots numbered as in "
                           f"the table: {numbers}. {s.cell_type} cells: white dots."}
        if s.hotspots.get("curves"):
            out["curves"] = _data_uri(figures.distance_curves(
                s.hotspots["curves"], s.hotspots["hotspots"], s.cell_type))
    return out


def annotation_rows(s: Stored) -> tuple[list[dict], float]:
    """The per-target annotation table as display strings (m/z to 4 decimals) and the FDR
    threshold it flags at (the hotspot run's ``annotation_fdr``, else the default); rows
    of unscored targets (no formula, older results) say so. Empty if nothing is scored."""
    threshold = float((s.hotspots or {}).get("parameters", {}).get(
        "annotation_fdr", HotspotParams.annotation_fdr))
    if not any(t.get("fdr") is not None for t in s.targets):
        return [], threshold
    rows = []
    for t in s.targets:
        q = t.get("fdr")
        scores = {k: ("" if t.get(k) is None else f"{t[k]:.3f}")
                  for k in ("msm", "rho_spectral", "rho_spatial", "rho_chaos", "fdr")}
        status = ("not scored" if q is None else "confident" if q <= threshold
                  else "not confidently annotated")
        peak = t.get("window_vs_fwhm") or {}
        width = "" if not peak else (f"{peak['window_ppm']:.1f} / " + (
            "-" if peak["fwhm_ppm"] is None else f"{peak['fwhm_ppm']:.1f}"))
        rows.append({"name": t["name"], "formula": t.get("formula") or "",
                     "adduct": t.get("adduct") or "", "mz": f"{t['mz']:.4f}", **scores,
                     "status": status, "flagged": q is not None and q > threshold,
                     "width": width, "peak": peak.get("verdict", ""),
                     "interferences": ("" if "interferences" not in t
                                       else describe(t["interferences"]))})
    return rows, threshold


def overlay_pngs(s: Stored) -> dict[str, bytes]:
    """One overlay PNG per analysed map: map, numbered outlines, cells of the type."""
    focus = s.hotspots["cells_xy"][s.hotspots["cells_type"] == s.cell_type]
    out = {}
    for name in s.hotspots.get("maps", []):
        if name not in s.maps or name not in s.hotspot_labels:
            continue
        rows = [r for r in s.hotspots["hotspots"] if r["map"] == name]
        out[name] = figures.overlay(s.maps[name], s.hotspot_labels[name], rows, focus,
                                    unit=s.map_units.get(name, ""),
                                    pixel_size_um=s.pixel_size_um, title=name,
                                    cell_label=f"{s.cell_type} cells")
    return out


def write_overlays(result: Any, out_dir: str | os.PathLike, *,
                   storage_options: Mapping[str, Any] | None = None) -> list[Path]:
    """Write ``hotspots_<map>.png`` overlays from the hotspot run stored in ``result``."""
    s = read_stored(result, storage_options)
    if s.hotspots is None:
        return []
    files = []
    for name, data in overlay_pngs(s).items():
        path = Path(out_dir) / f"hotspots_{s.safe_names[name]}.png"
        files.append(write_atomic(path, data))
    return files



def render_report(result: Any, *, storage_options: Mapping[str, Any] | None = None) -> str:
    """The report of a result (URL or opened Result) as one HTML string."""
    s = read_stored(result, storage_options)
    source = s.attrs.get("source", {})
    px = s.pixel_size_um
    sample = {"source": source.get("path", ""), "uuid": source.get("uuid", ""),
              "grid (y × x)": " × ".join(map(str, s.tic.shape)),
              "spectra": int(s.mask.sum()),
              "tissue pixels": int(s.tissue.sum()) if s.tissue is not None else "not stored",
              "pixel size (µm)": f"{px:g}" if px else "unknown (no scale bar)",
              "result store": s.url}
    if s.mean_spectrum is None:
        note = "No mean spectrum stored (result written by an older ionmap)."
    elif not len(s.mean_spectrum[0]):
        note = "Every spectrum of the file is empty."
    else:
        info = s.mean_spectrum[2]
        note = (f"Mean of {info.get('spectra')} spectra spread evenly over the file, in "
                f"{info.get('bins')} log-spaced m/z bins; red lines: panel targets.")
    bar = figures.bar_length_um(s.tic.shape[1], px)
    annotation, annotation_fdr = annotation_rows(s)
    context = {
        "annotation": annotation, "annotation_fdr": annotation_fdr,
        "recalibration": s.recalibration,
        "scale_bar": (f"Scale bars: {figures.bar_label(bar)}." if bar else
                      "No scale bar: the file does not record its pixel size."),
        "name": Path(str(source.get("path", "sample"))).stem,
        "stamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "url": s.url, "sample": sample, "figures": _figures(s), "spectrum_note": note,
        "targets": s.targets, "ion_unit": ion_unit(s.attrs),
        "target_columns": [c for c in _TARGET_COLUMNS if any(c in t for t in s.targets)],
        "maps": s.map_info, "hotspots": s.hotspots is not None,
        "classes": {c: palette.hex_color(c) for c in palette.CLASS_RGB},
        "parameters": json.dumps({"conversion": s.attrs.get("parameters", {}),
                                  "hotspots": (s.hotspots or {}).get("parameters"),
                                  "versions": _versions()}, indent=1, default=str),
    }
    if s.hotspots is not None:
        rows = s.hotspots["hotspots"]
        reg = s.hotspots.get("registration", {})
        context.update(
            cell_type=s.cell_type, hotspot_rows=rows,
            hotspot_columns=list(dict.fromkeys(k for r in rows for k in r)),
            registration={k: _fmt(k, v) for k, v in reg.items()
                          if not isinstance(v, (dict, list)) and k != "parameters"})
    return _environment().get_template("report.html.j2").render(**context)


def write_report(path: str | os.PathLike, result: Any, *,
                 storage_options: Mapping[str, Any] | None = None) -> Path:
    """Write the self-contained HTML report (images embedded) of a result (URL or opened
    Result), drawn from what convert and the hotspot step stored in it."""
    return write_atomic(Path(path), render_report(result, storage_options=storage_options))
