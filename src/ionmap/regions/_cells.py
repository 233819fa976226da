"""Cell annotation readers: cell tables (CSV/TSV), QuPath GeoJSON and label-mask TIFFs.

Every reader returns :class:`Cells`: one centroid per cell in the *annotation frame* (the
frame of the file: origin top-left, x to the right, y down) and a free-form cell type
string. Coordinates are kept exactly as the file has them; ``unit`` says whether they are
µm or histology-image pixels, and ``pixel_size_um`` (µm per histology pixel) relates the
two when known. Co-registration (:mod:`ionmap.regions._register`) maps MSI pixels into
this frame.

Supported tables (columns auto-detected, case-insensitive, ``µm``/``um`` alike):

=============== ============================================ ================ ==========
format          x, y columns                                 class column     unit
=============== ============================================ ================ ==========
plain           ``x``, ``y``                                 ``cell_type``    µm
QuPath          ``Centroid X µm``, ``Centroid Y µm``         ``Class``        µm
QuPath (px)     ``Centroid X px``, ``Centroid Y px``         ``Class``        px
inForm          ``Cell X Position``, ``Cell Y Position``     ``Phenotype``    µm
MCMICRO         ``X_centroid``, ``Y_centroid``               ``phenotype``    px
=============== ============================================ ================ ==========

The class column can be named explicitly (``phenotype_column``), and the unit overridden
(``units``); a table without a recognised class column is an error naming the columns.
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._geometry import ring_moments
from ..errors import InputError

#: Cell type given to objects without a classification (QuPath's name for it).
UNCLASSIFIED = "Unclassified"

# (x column, y column, unit) by format; names are normalised with _norm().
_XY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("centroid x um", "centroid y um", "um"),
    ("centroid x px", "centroid y px", "px"),
    ("cell x position", "cell y position", "um"),
    ("x_centroid", "y_centroid", "px"),
    ("x", "y", "um"),
)
_CLASS_COLUMNS = ("cell_type", "class", "classification", "phenotype", "celltype",
                  "cell type", "type")
_LABEL_COLUMNS = ("label", "value", "id", "cellid", "cell_id", "class_id")
_CHUNK = 100_000  # table rows parsed per batch


@dataclass(frozen=True)
class Cells:
    """Cell centroids in the annotation frame.

    ``x``, ``y``: float64 arrays in ``unit`` ("um" or "px", origin top-left of the
    histology image); ``cell_type``: str array; ``pixel_size_um``: µm per histology pixel,
    or None when unknown; ``source``: where the cells came from (for messages);
    ``annotations``: the annotation polygons of a QuPath GeoJSON (the annotated region),
    each [outer ring, *holes] as (k, 2) arrays in the same frame as the cells.
    """

    x: np.ndarray
    y: np.ndarray
    cell_type: np.ndarray
    unit: str
    pixel_size_um: float | None = None
    source: str = "<cells>"
    annotations: tuple[list[np.ndarray], ...] = ()

    def __post_init__(self) -> None:
        if self.unit not in ("um", "px"):
            raise InputError(self.source, f"unit must be 'um' or 'px', not {self.unit!r}")
        if not len(self.x) == len(self.y) == len(self.cell_type):
            raise InputError(self.source, "x, y and cell_type must have the same length")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def xy(self) -> np.ndarray:
        """(n, 2) float64 array of (x, y) in the annotation frame."""
        return np.column_stack([self.x, self.y])

    @property
    def um_per_unit(self) -> float | None:
        """µm per annotation-frame unit: 1 for µm, the pixel size for px, else None."""
        return 1.0 if self.unit == "um" else self.pixel_size_um

    def types(self) -> list[str]:
        """The distinct cell types, sorted."""
        return sorted(np.unique(self.cell_type).tolist())


def read_cells(
    path: str | os.PathLike,
    *,
    units: str | None = None,
    pixel_size_um: float | None = None,
    phenotype_column: str | None = None,
    class_table: str | os.PathLike | Mapping[int, str] | None = None,
) -> Cells:
    """Read cell centroids and types from a table, a QuPath GeoJSON or a label-mask TIFF.

    The format follows the suffix: ``.csv``/``.tsv``/``.txt`` (delimiter sniffed),
    ``.geojson``/``.json``, ``.tif``/``.tiff``. ``units`` ("um" or "px") overrides the
    format's unit; ``pixel_size_um`` is the histology pixel size in µm (needed to relate
    pixel coordinates to µm). ``class_table`` names the classes of a label mask (a CSV
    with a label and a class column, or a mapping label -> class).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "cell annotation file not found")
    if units is not None and units not in ("um", "px"):
        raise InputError(path, f"units must be 'um' or 'px', not {units!r}")
    if pixel_size_um is not None and not pixel_size_um > 0:
        raise InputError(path, f"pixel size must be positive, not {pixel_size_um}")
    suffix = path.suffix.lower()
    if class_table is not None and suffix not in (".tif", ".tiff"):
        raise InputError(path, "class_table=... names the labels of a label-mask TIFF; "
                               "this cell file is not one (its types come from its own "
                               "column)")
    annotations: tuple[list[np.ndarray], ...] = ()
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            x, y, types, unit = _read_table(path, phenotype_column)
        elif suffix in (".geojson", ".json"):
            x, y, types, unit, annotations = _read_geojson(path)
        elif suffix in (".tif", ".tiff"):
            x, y, types, unit = _read_mask(path, class_table)
        else:
            raise InputError(path, "unknown cell annotation format (expected .csv, .tsv, "
                                   ".txt, .geojson, .json, .tif or .tiff)")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text (byte {exc.start}: {exc.reason}); save "
                               "it as UTF-8") from None
    if len(x) == 0:
        raise InputError(path, "no cells found")
    return Cells(x, y, types, units or unit, pixel_size_um, str(path), annotations)


def _norm(name: str) -> str:
    """Column name for matching: lower case, micro signs as 'u', single spaces."""
    name = name.strip().lower().replace("µ", "u").replace("μ", "u")
    return " ".join(name.split())


def _open_table(path: Path):
    """csv.reader over a text table with a sniffed delimiter (comma, tab or semicolon)."""
    handle = path.open(newline="", encoding="utf-8-sig")
    sample = handle.read(65536)
    handle.seek(0)
    try:
        dialect = csv.Sniffer().sniff(sample.split("\n", 1)[0], delimiters=",\t;")
    except csv.Error:
        dialect = csv.excel
    return handle, csv.reader(handle, dialect)


def _find(columns: list[str], wanted: tuple[str, ...] | str) -> int | None:
    wanted = (wanted,) if isinstance(wanted, str) else wanted
    normed = [_norm(c) for c in columns]
    for w in wanted:
        if _norm(w) in normed:
            return normed.index(_norm(w))
    return None


def _floats(values: list[str], lines: list[int], path: Path, column: str) -> np.ndarray:
    try:
        out = np.array(values, dtype=np.float64)
    except ValueError:
        out = np.array([_to_float(v) for v in values])
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        raise InputError(path, f"line {lines[bad[0]]}: column {column!r} is not a finite "
                               f"number: {values[bad[0]]!r}")
    return out


def _to_float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return float("nan")


def _read_table(path: Path, phenotype_column: str | None):
    handle, reader = _open_table(path)
    with handle:
        header = next(reader, None)
        if not header:
            raise InputError(path, "empty cell table")
        xy = next(((ix, iy, unit) for cx, cy, unit in _XY_COLUMNS
                   if (ix := _find(header, cx)) is not None
                   and (iy := _find(header, cy)) is not None), None)
        if xy is None:
            raise InputError(path, "no centroid columns found (expected x,y; Centroid X µm, "
                                   "Centroid Y µm; Cell X Position, Cell Y Position; or "
                                   f"X_centroid, Y_centroid); columns: {', '.join(header)}")
        ix, iy, unit = xy
        ic = _find(header, phenotype_column or _CLASS_COLUMNS)
        if ic is None:
            wanted = repr(phenotype_column) if phenotype_column else "a class column"
            raise InputError(path, f"no {wanted} (tried {', '.join(_CLASS_COLUMNS)}; "
                                   f"name it with the phenotype column option); columns: "
                                   f"{', '.join(header)}")
        need = max(ix, iy, ic)
        codes: dict[str, int] = {}  # class name -> code, in order of appearance
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        xs: list[str] = []
        ys: list[str] = []
        cs: list[str] = []
        lines: list[int] = []

        def flush() -> None:
            # Text fields become arrays every _CHUNK rows: memory stays ~ the arrays.
            if xs:
                parts.append((_floats(xs, lines, path, header[ix]),
                              _floats(ys, lines, path, header[iy]),
                              np.array([codes.setdefault(c.strip() or UNCLASSIFIED, len(codes))
                                        for c in cs], dtype=np.int32)))
                for buffer in (xs, ys, cs, lines):
                    buffer.clear()

        # Stream the rows and keep only three fields: QuPath exports have dozens of columns.
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) <= need:
                raise InputError(path, f"line {line}: expected at least {need + 1} fields, "
                                       f"found {len(row)}")
            xs.append(row[ix])
            ys.append(row[iy])
            cs.append(row[ic])
            lines.append(line)
            if len(xs) == _CHUNK:
                flush()
        flush()
    if not parts:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=str), unit
    names = np.array(list(codes), dtype=str)
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            names[np.concatenate([p[2] for p in parts])], unit)


def _polygon_centroid(rings: list) -> tuple[float, float, float]:
    """(cx, cy, area) of a GeoJSON polygon (outer ring minus holes), shoelace formula."""
    total = sx = sy = 0.0
    for ring in rings:
        a, cx, cy = ring_moments(ring)
        # Holes wind the other way; abs values with sign by ring role keep both conventions.
        sign = 1.0 if ring is rings[0] else -1.0
        s = sign * np.sign(a) if a else 0.0
        total += s * a
        sx += s * a * cx
        sy += s * a * cy
    if total == 0:
        p = np.asarray(rings[0], dtype=np.float64)[:, :2]
        return float(p[:, 0].mean()), float(p[:, 1].mean()), 0.0
    return sx / total, sy / total, total


def _geometry_centroid(geom: Mapping) -> tuple[float, float]:
    kind = geom.get("type")
    coords = geom.get("coordinates")
    if kind == "Point":
        return float(coords[0]), float(coords[1])
    if kind == "Polygon":
        cx, cy, _ = _polygon_centroid(coords)
        return cx, cy
    if kind == "MultiPolygon":
        parts = [_polygon_centroid(rings) for rings in coords]
        area = sum(a for _, _, a in parts)
        if area == 0:
            return parts[0][0], parts[0][1]
        return (sum(cx * a for cx, _, a in parts) / area,
                sum(cy * a for _, cy, a in parts) / area)
    raise ValueError(f"unsupported geometry type {kind!r}")


def geometry_polygons(geom: Mapping) -> list[list[np.ndarray]]:
    """Polygons ([outer ring, *holes], (k, 2) float64 arrays) of a GeoJSON Polygon or
    MultiPolygon geometry; [] for other geometry types."""
    kind, coords = geom.get("type"), geom.get("coordinates")
    if kind == "Polygon":
        coords = [coords]
    elif kind != "MultiPolygon":
        return []
    out = []
    for rings in coords:
        arrays = [np.asarray(r, dtype=np.float64)[:, :2] for r in rings]
        if arrays and len(arrays[0]) >= 3:
            if not all(np.isfinite(a).all() for a in arrays):
                raise ValueError("non-finite coordinates")
            out.append(arrays)
    return out


def _classification(props: Mapping) -> str:
    """QuPath classification name; derived classes (``names``) joined as QuPath shows them."""
    c = props.get("classification")
    if isinstance(c, str):
        return c.strip() or UNCLASSIFIED
    if isinstance(c, Mapping):
        if c.get("name"):
            return str(c["name"]).strip()
        if c.get("names"):
            return ": ".join(str(n) for n in c["names"])
    return UNCLASSIFIED


def _read_geojson(path: Path):
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not valid JSON: {exc}") from None
    if isinstance(data, Mapping) and data.get("type") == "FeatureCollection":
        features = data.get("features") or []
    elif isinstance(data, Mapping) and data.get("type") == "Feature":
        features = [data]
    elif isinstance(data, list):
        features = data
    else:
        raise InputError(path, "not a GeoJSON FeatureCollection, Feature or list of features")
    xs, ys, cs, annotations = [], [], [], []
    for i, feat in enumerate(features):
        if not isinstance(feat, Mapping):
            raise InputError(path, f"feature {i}: not a JSON object")
        props = feat.get("properties") or {}
        kind = str(props.get("objectType", props.get("object_type", "cell"))).lower()
        if kind == "annotation" and isinstance(feat.get("geometry"), Mapping):
            try:  # the annotated region(s) the cells were detected in
                annotations += geometry_polygons(feat["geometry"])
            except (ValueError, TypeError, IndexError) as exc:
                raise InputError(path, f"feature {i}: bad annotation geometry ({exc})") \
                    from None
        if kind not in ("cell", "detection"):
            continue  # annotations, tiles, TMA cores are not cells
        # A cell's position is its nucleus when QuPath gives one, else the cell outline.
        geom = feat.get("nucleusGeometry") or feat.get("geometry")
        if not isinstance(geom, Mapping):
            raise InputError(path, f"feature {i}: no geometry")
        try:
            cx, cy = _geometry_centroid(geom)
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise InputError(path, f"feature {i}: bad geometry ({exc})") from None
        xs.append(cx)
        ys.append(cy)
        cs.append(_classification(props))
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InputError(path, "non-finite coordinates in a cell geometry")
    return x, y, np.array(cs, dtype=str), "px", tuple(annotations)


def read_class_table(source: str | os.PathLike | Mapping[int, str]) -> dict[int, str]:
    """Label value -> class name, from a mapping or a CSV with label and class columns.

    Columns are found by name (label: label/value/id/CellID; class: cell_type/class/
    phenotype/...); a two-column table without those names is read as (label, class).
    """
    if isinstance(source, Mapping):
        return {int(k): str(v) for k, v in source.items()}
    path = Path(source)
    if not path.is_file():
        raise InputError(path, "class table not found")
    handle, reader = _open_table(path)
    with handle:
        rows = [r for r in reader if r]
    if len(rows) < 2:
        raise InputError(path, "class table needs a header line and at least one row")
    header = rows[0]
    il, ic = _find(header, _LABEL_COLUMNS), _find(header, _CLASS_COLUMNS)
    if il is None or ic is None:
        if len(header) != 2:
            raise InputError(path, "class table needs a label and a class column; "
                                   f"columns: {', '.join(header)}")
        il, ic = 0, 1
    table: dict[int, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        try:
            table[int(float(row[il]))] = row[ic].strip() or UNCLASSIFIED
        except (ValueError, IndexError):
            raise InputError(path, f"line {line}: expected an integer label and a class") from None
    return table


def _read_mask(path: Path, class_table):
    """Cells of a label mask: one cell per connected region of equal non-zero value.

    That one rule serves per-cell masks (each cell its own value) and per-class masks
    (value = class id; touching cells of one class merge). Centroids are in histology
    pixels with pixel (col, row) covering [col, col+1) x [row, row+1), as QuPath does.
    """
    import tifffile
    from skimage.measure import label

    try:
        mask = tifffile.imread(path)
    except Exception as exc:  # tifffile raises many types for a bad file
        raise InputError(path, f"cannot read TIFF: {exc}") from None
    mask = np.squeeze(mask)
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise InputError(path, f"expected a 2-D integer label mask, got {mask.ndim}-D "
                               f"{mask.dtype}")
    regions = label(mask, background=0, connectivity=2).ravel()
    n = int(regions.max())
    rows, cols = np.divmod(np.arange(regions.size), mask.shape[1])
    count = np.bincount(regions, minlength=n + 1)[1:]
    x = np.bincount(regions, weights=cols, minlength=n + 1)[1:] / count + 0.5
    y = np.bincount(regions, weights=rows, minlength=n + 1)[1:] / count + 0.5
    value = np.zeros(n + 1, dtype=np.int64)
    value[regions] = mask.ravel()
    value = value[1:]
    if class_table is None:
        return x, y, value.astype(str), "px"
    table = read_class_table(class_table)
    missing = sorted(set(np.unique(value).tolist()) - set(table))
    if missing:
        raise InputError(path, f"label values without a class in the class table: "
                               f"{', '.join(map(str, missing[:10]))}"
                               f"{' ...' if len(missing) > 10 else ''}")
    keys = np.array(sorted(table), dtype=np.int64)
    names = np.array([table[k] for k in keys], dtype=str)
    return x, y, names[np.searchsorted(keys, value)], "px"
