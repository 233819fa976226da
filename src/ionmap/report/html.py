"""Assemble the self-contained ``report.html`` of one sample."""
from __future__ import annotations

import base64
import html
import json
import os
import platform
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StorageError
from . import figures

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:2em}table{border-collapse:collapse;font-size:.85em}
td,th{border:1px solid #ddd;padding:.25em .5em;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}img{max-width:100%}
.cls-immune-excluded{color:#c2185b;font-weight:600}.cls-inflamed{color:#2e7d32}
.cls-immune-desert{color:#6d4c41}.note{color:#666;font-size:.9em}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.8em}
"""

_VERSIONS = ("ionmap", "numpy", "zarr", "dask", "distributed", "scikit-image", "pyimzml")


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c, "")
            cls = f' class="cls-{html.escape(str(v))}"' if c == "class" else ""
            cells.append(f"<td{cls}>{_fmt(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def write_report(path: str | os.PathLike, result: Any, *, hotspots: Any = None,
                 imzml: str | None = None, storage_options: Mapping | None = None) -> Path:
    """Write one self-contained HTML report (images embedded) for a sample.

    ``result``: an opened :class:`ionmap.store.Result` (or its URL). ``hotspots``: the
    :class:`ionmap.regions.HotspotRun` of the sample, or None when it has no cells (the
    metabolite maps are then drawn without hotspots). ``imzml``: the source file, for the
    mean spectrum (default: the source recorded in the result).
    """
    from .. import regions
    from ..store import open_result

    if isinstance(result, (str, os.PathLike)):
        result = open_result(result, storage_options)
    attrs = dict(result.attrs)
    source = attrs.get("source", {})
    mask = np.asarray(result.mask, bool)
    sections: list[str] = []

    meta = {"source": source.get("path", ""), "uuid": source.get("uuid", ""),
            "grid (y × x)": " × ".join(map(str, result.shape)),
            "spectra": int(mask.sum()),
            "pixel size (µm)": result.pixel_size_um or "unknown",
            "result store": str(result.url)}
    sections.append("<h2>Sample</h2>" + _table(
        [{"key": k, "value": v} for k, v in meta.items()], ["key", "value"]))

    sections.append("<h2>Total ion current</h2>" + _img(
        figures.image_grid({"TIC": np.asarray(result.tic)}, mask, columns=1), "TIC"))

    imzml = imzml or source.get("path")
    if imzml:
        mz, mean = figures.read_mean_spectrum(imzml, storage_options)
        sections.append("<h2>Mean spectrum</h2>" + (_img(
            figures.mean_spectrum(mz, mean, result.targets), "mean spectrum") if len(mz) else
            '<p class="note">Every spectrum of the file is empty.</p>'))

    images = {n: np.asarray(result.ion_image(n)) for n in result.target_names}
    sections.append(f"<h2>Ion images ({len(images)} targets)</h2>" + _img(
        figures.image_grid(images, mask), "ion images") + _table(
        result.targets, ["name", "formula", "adduct", "mz", "ppm", "group"]))

    if hotspots is not None:
        maps, cell_type = hotspots.maps, hotspots.params["cell_type"]
    else:
        data, names = regions.load_result(result)
        tissue = regions.tissue_mask(data.mask, data.tic)
        maps = regions.build_maps(data.images, tissue, names, data.groups,
                                  tic=None if data.normalized else data.tic)
    sections.append("<h2>Metabolite and ratio maps</h2>" + _img(
        figures.image_grid(maps, None), "maps") + '<p class="note">Ratio maps are '
        "semi-quantitative (ionisation efficiencies differ); pixels whose denominator is "
        "below the noise floor are grey.</p>")

    if hotspots is None:
        sections.append('<h2>Hotspots</h2><p class="note">No cell annotations for this '
                        "sample: immune context not assessed.</p>")
    else:
        reg = hotspots.registration
        quality = ({"RMS residual (MSI px)": reg.rms_px, "leave-one-out RMS (MSI px)":
                    reg.loo_rms_px} if reg.method == "landmarks" else
                   {"tissue/cell-density correlation": reg.score})
        sections.append("<h2>Registration</h2>" + _table(
            [{"key": k, "value": v} for k, v in {"method": f"{reg.method} ({reg.model})",
                                                 **reg.parameters(), **quality}.items()],
            ["key", "value"]))
        pngs = [p for p in hotspots.files if Path(p).suffix == ".png"]
        sections.append(f"<h2>Hotspots and {html.escape(cell_type)} cells</h2>" + "".join(
            _img(Path(p).read_bytes(), Path(p).stem) for p in pngs))
        from ..regions.run import HOTSPOT_COLUMNS

        sections.append("<h2>Hotspot table</h2>" + (_table(
            hotspots.hotspots, HOTSPOT_COLUMNS[:HOTSPOT_COLUMNS.index("p_value") + 1])
            if hotspots.hotspots else
            '<p class="note">No hotspot passed the FDR and area thresholds.</p>'))
        if hotspots.curves:
            sections.append("<h2>Density against distance from the edge</h2>" + _img(
                figures.distance_curves(hotspots.curves, hotspots.hotspots, cell_type),
                "distance curves"))

    params = {"conversion": attrs.get("parameters", {}),
              "hotspots": hotspots.params if hotspots is not None else None,
              "versions": _versions()}
    sections.append("<h2>Parameters and versions</h2><pre>" + html.escape(
        json.dumps(params, indent=1, default=str)) + "</pre>")

    name = Path(str(source.get("path", "sample"))).stem
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<title>ionmap report: {html.escape(name)}</title><style>{_CSS}</style></head>"
           f"<body><h1>ionmap report: {html.escape(name)}</h1><p class=\"note\">"
           f"{stamp}</p>{''.join(sections)}</body></html>")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".html.tmp")
        tmp.write_text(doc, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise StorageError(path, f"cannot write report: {exc.strerror or exc}") from None
    return path
