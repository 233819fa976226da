"""The public API: what ``ionmap`` and ``ionmap.regions`` export, and that the static view
(``__init__.pyi``, ``py.typed``) states exactly what the lazy package gives at run time."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import ionmap
from ionmap import regions

SRC = Path(ionmap.__file__).resolve().parent

#: The user's verbs and types (issue 10, item 6), the parameter objects and the errors.
API = {"__version__", "open_imzml", "ImzMLFile", "SpectrumBatch", "Target", "convert",
       "open_result", "Result", "ConvertParams", "RecalibrationParams", "RegistrationParams",
       "HotspotParams", "ImmuneParams", "IonmapError", "InputError", "StorageError",
       "ImzMLError", "MissingIbdError", "IonmapWarning"}
#: The analysis steps of ionmap.regions (plain arrays in, plain data out) and the run of
#: them all; no store plumbing, drawing or file writers.
REGIONS_API = {"Cells", "read_cells", "read_class_table", "Registration", "fit_landmarks",
               "read_landmarks", "register_auto", "build_maps", "ratio", "resolve_map",
               "tissue_mask", "read_tissue_mask", "Hotspots", "find_hotspots", "gi_star",
               "bh_qvalues", "ImmuneContext", "immune_context", "classify",
               "exclusion_score", "edge_distance", "HotspotRun", "MSIData", "run_hotspots"}


def _stub_names() -> tuple[set[str], set[str]]:
    """(names the stub re-exports, of those the subpackages) from ``__init__.pyi``."""
    tree = ast.parse((SRC / "__init__.pyi").read_text(encoding="utf-8"))
    names, modules = set(), set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for a in node.names:
                assert a.asname == a.name, f"{a.name}: a re-export must read 'X as X'"
                names.add(a.name)
                if node.module is None:
                    modules.add(a.name)
        elif isinstance(node, ast.AnnAssign):
            names.add(node.target.id)
    return names - {"__all__"}, modules


def test_package_exports_the_users_verbs_and_types():
    assert set(ionmap.__all__) == API
    for name in ionmap.__all__:
        assert getattr(ionmap, name) is not None


def test_stub_states_what_the_package_gives():
    names, modules = _stub_names()
    assert names - modules == set(ionmap.__all__)
    assert modules == set(ionmap._SUBPACKAGES)
    assert (SRC / "py.typed").is_file()
    for name in names:  # each stated name exists at run time
        getattr(ionmap, name)


def test_errors_are_the_ones_of_ionmap_errors():
    from ionmap import errors

    for name in ("IonmapError", "InputError", "StorageError", "ImzMLError",
                 "MissingIbdError", "IonmapWarning"):
        assert getattr(ionmap, name) is getattr(errors, name)


def test_regions_all_is_the_analysis():
    assert set(regions.__all__) == REGIONS_API
    assert not set(regions._PLUMBING) & set(regions.__all__)
    for name in (*regions.__all__, *regions._PLUMBING):
        assert getattr(regions, name) is not None


@pytest.mark.parametrize("name", ["outlines", "write_csv", "CLASSES", "label_name",
                                  "run_summary", "load_result", "store_maps"])
def test_plumbing_is_not_star_exported(name):
    scope: dict = {}
    exec("from ionmap.regions import *", scope)
    assert name not in scope
    assert "run_hotspots" in scope


def test_import_is_light():
    """``import ionmap`` loads no subpackage, NumPy or zarr (the CLI starts fast)."""
    code = ("import sys, ionmap; heavy = [m for m in ('numpy', 'zarr', 'dask', "
            "'ionmap.regions', 'ionmap.engine', 'ionmap.imzml') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
