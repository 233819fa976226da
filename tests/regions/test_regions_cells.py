"""Cell annotation readers: every supported format, written here, read back exactly."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from ionmap.cli import main
from ionmap.errors import InputError
from ionmap.regions import read_cells, read_class_table

RNG = np.random.default_rng(7)
X = np.round(RNG.uniform(0, 5000, 50), 2)
Y = np.round(RNG.uniform(0, 3000, 50), 2)
TYPES = RNG.choice(["CD8", "Tumor", "Treg", "CAF"], 50)


def _write_table(path, header, rows, sep=","):
    lines = [sep.join(header)] + [sep.join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_plain_csv(tmp_path):
    p = _write_table(tmp_path / "c.csv", ["x", "y", "cell_type"], zip(X, Y, TYPES))
    cells = read_cells(p)
    np.testing.assert_array_equal(cells.x, X)
    np.testing.assert_array_equal(cells.y, Y)
    assert cells.cell_type.tolist() == TYPES.tolist()
    assert cells.unit == "um" and cells.um_per_unit == 1.0 and len(cells) == 50
    assert cells.types() == sorted(set(TYPES))


@pytest.mark.parametrize("sep,suffix", [(",", ".csv"), ("\t", ".tsv"), ("\t", ".txt")])
def test_qupath_measurements(tmp_path, sep, suffix):
    header = ["Image", "Object ID", "Object type", "Name", "Class", "Parent", "ROI",
              "Centroid X µm", "Centroid Y µm", "Nucleus: Area µm^2"]
    rows = [["slide.svs", f"id{i}", "Cell", "", t, "Annotation", "Polygon", x, y, 30.5]
            for i, (x, y, t) in enumerate(zip(X, Y, TYPES))]
    rows[3][4] = ""  # unclassified
    cells = read_cells(_write_table(tmp_path / f"q{suffix}", header, rows, sep))
    np.testing.assert_array_equal(cells.x, X)
    np.testing.assert_array_equal(cells.y, Y)
    assert cells.unit == "um"
    assert cells.cell_type[3] == "Unclassified"
    assert cells.cell_type[4] == TYPES[4]


def test_qupath_pixels_and_greek_mu(tmp_path):
    # QuPath without calibration writes px; some exports use the Greek mu (U+03BC).
    p = _write_table(tmp_path / "px.csv", ["Classification", "Centroid X px", "Centroid Y px"],
                     zip(TYPES, X, Y))
    cells = read_cells(p, pixel_size_um=0.5)
    assert cells.unit == "px" and cells.um_per_unit == 0.5
    np.testing.assert_array_equal(cells.x, X)
    p = _write_table(tmp_path / "mu.csv", ["Class", "Centroid X \u03bcm", "Centroid Y \u03bcm"],
                     zip(TYPES, X, Y))
    assert read_cells(p).unit == "um"


def test_inform_and_mcmicro(tmp_path):
    p = _write_table(tmp_path / "inform.txt", ["Sample Name", "Cell ID", "Cell X Position",
                                               "Cell Y Position", "Phenotype"],
                     [("s1", i, x, y, t) for i, (x, y, t) in enumerate(zip(X, Y, TYPES))], "\t")
    cells = read_cells(p)
    np.testing.assert_array_equal(cells.y, Y)
    assert cells.unit == "um" and cells.cell_type.tolist() == TYPES.tolist()

    header = ["CellID", "CD8_mean", "X_centroid", "Y_centroid", "Area", "my_pheno"]
    rows = [(i, 1.0, x, y, 20, t) for i, (x, y, t) in enumerate(zip(X, Y, TYPES))]
    p = _write_table(tmp_path / "mcmicro.csv", header, rows)
    with pytest.raises(InputError, match="phenotype column"):
        read_cells(p)  # no recognisable class column
    cells = read_cells(p, phenotype_column="my_pheno", pixel_size_um=0.65)
    assert cells.unit == "px" and cells.cell_type.tolist() == TYPES.tolist()
    np.testing.assert_array_equal(cells.x, X)


def test_units_override(tmp_path):
    p = _write_table(tmp_path / "c.csv", ["x", "y", "cell_type"], zip(X, Y, TYPES))
    cells = read_cells(p, units="px", pixel_size_um=0.25)
    assert cells.unit == "px" and cells.um_per_unit == 0.25


@pytest.mark.parametrize("content,match", [
    ("a,b,c\n1,2,3\n", "no centroid columns"),
    ("x,y,cell_type\n1,2,CD8\n3,oops,CD8\n", "line 3: column 'y' is not a finite number"),
    ("x,y,cell_type\n1,2,CD8\n3,nan,CD8\n", "line 3"),
    ("x,y,cell_type\n1,2\n", "line 2: expected at least 3 fields"),
    ("", "empty cell table"),
    ("x,y,cell_type\n", "no cells found"),
])
def test_table_errors(tmp_path, content, match):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(InputError, match=match) as err:
        read_cells(p)
    assert str(p) in str(err.value)


def test_unknown_format_and_missing(tmp_path):
    p = tmp_path / "cells.xlsx"
    p.write_bytes(b"PK")
    with pytest.raises(InputError, match="unknown cell annotation format"):
        read_cells(p)
    with pytest.raises(InputError, match="not found"):
        read_cells(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="units"):
        read_cells(p, units="mm")


def _square(cx, cy, h):
    return [[[cx - h, cy - h], [cx + h, cy - h], [cx + h, cy + h], [cx - h, cy + h],
             [cx - h, cy - h]]]


def test_qupath_geojson(tmp_path):
    features = []
    for i, (x, y, t) in enumerate(zip(X, Y, TYPES)):
        props = {"objectType": "cell", "classification": {"name": str(t), "color": [1, 2, 3]}}
        if i % 5 == 1:
            props = {"object_type": "detection", "classification": {"names": [str(t), "PD-L1"]}}
        if i % 5 == 2:
            props = {"objectType": "cell"}  # unclassified
        feat = {"type": "Feature", "id": f"c{i}", "geometry": {
            "type": "Polygon", "coordinates": _square(x + 3, y + 3, 4)}, "properties": props}
        if i % 5 != 3:
            # the nucleus decides the position when present
            feat["nucleusGeometry"] = {"type": "Polygon", "coordinates": _square(x, y, 2)}
        else:
            feat["geometry"] = {"type": "Polygon", "coordinates": _square(x, y, 4)}
        features.append(feat)
    features.append({"type": "Feature", "geometry": {"type": "Polygon",
                     "coordinates": _square(100, 100, 90)},
                     "properties": {"objectType": "annotation",
                                    "classification": {"name": "Tumor region"}}})
    p = tmp_path / "cells.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    cells = read_cells(p, pixel_size_um=0.5)
    assert len(cells) == 50 and cells.unit == "px" and cells.pixel_size_um == 0.5
    np.testing.assert_allclose(cells.x, X, atol=1e-9)
    np.testing.assert_allclose(cells.y, Y, atol=1e-9)
    expect = [f"{t}: PD-L1" if i % 5 == 1 else "Unclassified" if i % 5 == 2 else str(t)
              for i, t in enumerate(TYPES)]
    assert cells.cell_type.tolist() == expect
    # A bare list of features and point / multipolygon / holed geometries.
    bare = [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 6]},
         "properties": {"objectType": "cell", "classification": {"name": "CD8"}}},
        {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [
            _square(0, 0, 1), _square(10, 0, 1)]}, "properties": {"objectType": "cell"}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
            _square(0, 0, 4)[0], _square(2, 0, 1)[0][::-1]]}, "properties": {}},
    ]
    p2 = tmp_path / "bare.json"
    p2.write_text(json.dumps(bare))
    c2 = read_cells(p2)
    np.testing.assert_allclose(c2.xy[:2], [[5, 6], [5, 0]])
    # 8x8 square minus a 2x2 hole at x=2: centroid moves left by 4*2/60.
    np.testing.assert_allclose(c2.xy[2], [-4 * 2 / 60, 0], atol=1e-12)


def test_geojson_errors(tmp_path):
    p = tmp_path / "bad.geojson"
    p.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_cells(p)
    p.write_text(json.dumps({"type": "Topology"}))
    with pytest.raises(InputError, match="FeatureCollection"):
        read_cells(p)
    p.write_text(json.dumps([{"type": "Feature", "properties": {"objectType": "cell"},
                              "geometry": {"type": "LineString", "coordinates": [[0, 0]]}}]))
    with pytest.raises(InputError, match="feature 0: bad geometry"):
        read_cells(p)


def test_label_mask_per_cell_and_per_class(tmp_path):
    mask = np.zeros((40, 60), dtype=np.uint16)
    mask[2:6, 3:9] = 7        # cell 7: rows 2-5, cols 3-8
    mask[10:13, 20:22] = 9    # cell 9
    mask[10:13, 22:25] = 12   # cell 12 touches 9: still its own cell
    mask[30:32, 50:51] = 7    # a second region of value 7 (per-class masks)
    path = tmp_path / "mask.tif"
    tifffile.imwrite(path, mask)
    table = tmp_path / "classes.csv"
    table.write_text("label,class\n7,CD8\n9,Tumor\n12,Treg\n")
    cells = read_cells(path, class_table=table, pixel_size_um=0.5)
    assert cells.unit == "px" and len(cells) == 4
    got = sorted(zip(cells.x.tolist(), cells.y.tolist(), cells.cell_type.tolist()))
    # centroids in QuPath's frame: pixel (c, r) covers [c, c+1) x [r, r+1)
    assert got == sorted([(6.0, 4.0, "CD8"), (21.0, 11.5, "Tumor"), (23.5, 11.5, "Treg"),
                          (50.5, 31.0, "CD8")])
    # without a table the label value is the class; a dict works as a table
    assert sorted(read_cells(path).cell_type.tolist()) == ["12", "7", "7", "9"]
    cells = read_cells(path, class_table={7: "A", 9: "B", 12: "C"})
    assert sorted(cells.cell_type.tolist()) == ["A", "A", "B", "C"]
    table.write_text("label,class\n7,CD8\n")
    with pytest.raises(InputError, match="without a class in the class table: 9, 12"):
        read_cells(path, class_table=table)
    tifffile.imwrite(path, mask.astype(np.float32))
    with pytest.raises(InputError, match="integer label mask"):
        read_cells(path)


def test_class_table_formats(tmp_path):
    p = tmp_path / "t.tsv"
    p.write_text("value\tphenotype\n1\tCD8\n2\t\n")
    assert read_class_table(p) == {1: "CD8", 2: "Unclassified"}
    p = tmp_path / "two.csv"
    p.write_text("k,v\n3,Tumor\n")
    assert read_class_table(p) == {3: "Tumor"}
    p.write_text("k,v\nthree,Tumor\n")
    with pytest.raises(InputError, match="line 2"):
        read_class_table(p)


def test_cli_reports_bad_cells_in_one_line(tmp_path, capsys):
    bad = tmp_path / "cells.csv"
    bad.write_text("a,b\n1,2\n")
    rc = main(["hotspots", str(tmp_path / "r.zarr"), "--cells", str(bad), "--register",
               "auto", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and str(bad) in err and "no centroid columns" in err


def test_table_read_in_chunks(tmp_path, monkeypatch):
    import ionmap.regions._cells as cells_mod

    monkeypatch.setattr(cells_mod, "_CHUNK", 7)  # 50 rows: 8 chunks, the last partial
    rows = [(x, y, t) for x, y, t in zip(X, Y, TYPES)]
    p = _write_table(tmp_path / "c.csv", ["x", "y", "cell_type"], rows[:20] + [()] + rows[20:])
    cells = read_cells(p)
    np.testing.assert_array_equal(cells.x, X)
    assert cells.cell_type.tolist() == TYPES.tolist()
    rows[30] = (X[30], "bad", TYPES[30])
    p = _write_table(tmp_path / "c.csv", ["x", "y", "cell_type"], rows[:20] + [()] + rows[20:])
    with pytest.raises(InputError, match="line 33: column 'y'"):  # header + blank line
        read_cells(p)
