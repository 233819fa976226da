"""Parameter objects: one per stage, shared by the API, the CLI and the TOML sections."""
from __future__ import annotations

import dataclasses

import pytest

import ionmap
from ionmap.errors import InputError
from ionmap.params import (
    ConvertParams,
    HotspotParams,
    ImmuneParams,
    RecalibrationParams,
    RegistrationParams,
    field_help,
    split_overrides,
)
from ionmap.pipeline import SECTIONS, load_config

ALL = (ConvertParams, RecalibrationParams, RegistrationParams, HotspotParams, ImmuneParams)


@pytest.mark.parametrize("cls", ALL)
def test_every_field_has_help_and_a_valid_default(cls):
    default = cls()
    for f in dataclasses.fields(cls):
        assert f.metadata["help"].strip(), f.name
        assert field_help(cls, f.name)
        assert getattr(default, f.name) == f.default  # the defaults pass their own checks
    with pytest.raises(dataclasses.FrozenInstanceError):
        default.__setattr__(dataclasses.fields(cls)[0].name, None)


def test_types_are_checked_and_named():
    assert ConvertParams(ppm=5).ppm == 5.0 and isinstance(ConvertParams(ppm=5).ppm, float)
    for kwargs, message in [({"ppm": "5"}, "ppm = '5': expected a number"),
                            ({"peaks": 1}, "peaks = 1: expected true or false"),
                            ({"normalize": "TIC"}, "normalize = 'TIC': expected one of"),
                            ({"band_rows": 2.5}, "band_rows = 2.5: expected an integer"),
                            ({"ppm": True}, "ppm = True: expected a number")]:
        with pytest.raises(InputError, match=message):
            ConvertParams(**kwargs)
    with pytest.raises(InputError, match="ppm must be positive.*snr must be >= 0"):
        ConvertParams(ppm=0, snr=-1)
    assert HotspotParams(maps=["a", "b/c"]).maps == ("a", "b/c")  # lists become tuples
    with pytest.raises(InputError, match="maps = 'lactate': expected a list of strings"):
        HotspotParams(maps="lactate")
    with pytest.raises(InputError, match="expected a list of strings"):
        HotspotParams(maps=["lactate", 3])


def test_overrides_go_to_the_object_that_has_the_field():
    hot, imm = split_overrides({"fdr": 0.01, "seed": 3}, HotspotParams, ImmuneParams)
    assert hot == {"fdr": 0.01} and imm == {"seed": 3}
    with pytest.raises(InputError, match="unknown parameter 'fdrr'"):
        split_overrides({"fdrr": 0.01}, HotspotParams, ImmuneParams)


def test_convert_checks_parameters_before_touching_files(tmp_path):
    missing = tmp_path / "missing.imzML"
    with pytest.raises(InputError, match="ppm must be positive"):
        ionmap.convert(missing, tmp_path / "o.zarr", ppm=-1)
    with pytest.raises(InputError, match="'ppmm'"):
        ionmap.convert(missing, tmp_path / "o.zarr", ppmm=5)
    with pytest.raises(InputError, match="expected a ConvertParams"):
        ionmap.convert(missing, tmp_path / "o.zarr", HotspotParams())
    with pytest.raises(InputError, match="search_ppm must be positive"):
        ionmap.convert(missing, tmp_path / "o.zarr",
                       recalibration=RecalibrationParams(search_ppm=-1.0))
    with pytest.raises(InputError, match="min_presence must be within"):
        ionmap.convert(missing, tmp_path / "o.zarr", min_presence=0.0)  # a recalibration key
    assert not (tmp_path / "o.zarr").exists()


def test_run_hotspots_refuses_unknown_parameters(tmp_path):
    from ionmap.regions import run_hotspots

    with pytest.raises(InputError, match="unknown parameter 'window'"):
        run_hotspots("nowhere.zarr", "cells.csv", "auto", tmp_path, window="disk")


def _config(tmp_path, text):
    path = tmp_path / "p.toml"
    path.write_text(text)
    return load_config(path)


def test_config_sections_are_their_objects(tmp_path):
    config = _config(tmp_path, '[convert]\nppm = 5\ntargets = "t.csv"\n[hotspots]\n'
                               'maps = ["lactate"]\nfdr = 0.01\n[immune]\ncell_type = "CD3"\n'
                               '[registration]\nmodel = "affine"\n')
    assert config.convert == ConvertParams(ppm=5.0, targets=str(tmp_path / "t.csv"))
    assert config.hotspots == HotspotParams(maps=("lactate",), fdr=0.01)
    assert config.immune == ImmuneParams(cell_type="CD3")
    assert config.registration == RegistrationParams(model="affine")
    assert config.recalibration == RecalibrationParams()
    assert set(SECTIONS) == {"convert", "recalibration", "registration", "hotspots", "immune"}


@pytest.mark.parametrize("text, message", [
    ("[immune]\nfdr = 0.01\n", r"p\.toml: \[immune\] unknown key 'fdr'"),
    ("[immune]\nmodel = 'affine'\n", r"\[immune\] unknown key 'model'"),
    ("[hotspots]\ncell_type = 'CD8'\n", r"\[hotspots\] unknown key 'cell_type'"),
    ("[convert]\nscheduler = 'x'\n", r"\[convert\] unknown key 'scheduler'"),
    ("[hotspots]\nmaps = 'lactate'\n", r"\[hotspots\] maps = 'lactate': expected a list of"),
    ("[hotspots]\nmin_area_px = 9.5\n", r"\[hotspots\] min_area_px = 9.5: expected an int"),
    ("[immune]\nedge_guard_um = 'x'\n", r"\[immune\] edge_guard_um = 'x': expected a number"),
    ("[convert]\nppm = -3\n", r"\[convert\] ppm must be positive"),
    ("[registration]\nmethod = 'manual'\n", r"\[registration\] method = 'manual'"),
    ("[recalibration]\nrecalibrate = 3\n", r"\[recalibration\] recalibrate = 3"),
    ("[report]\nx = 1\n", r"unknown section\(s\): report"),
    ("immune = 3\n", r"\[immune\] must be a table"),
])
def test_config_refuses_wrong_keys_and_types(tmp_path, text, message):
    with pytest.raises(InputError, match=message):
        _config(tmp_path, text)
