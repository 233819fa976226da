"""The options of ``convert`` and ``hotspots`` are the fields of their stages' parameter
objects: every field the command line may set is an option, with the field's default, and a
value given on the command line reaches the object."""
from __future__ import annotations

import dataclasses
import types
import typing

import pytest

from ionmap.cli import _params, build_parser
from ionmap.params import SECTIONS

#: command -> (its required arguments, the TOML sections whose fields are its options)
COMMANDS = {
    "convert": (["in.imzML", "out.zarr"], ("convert", "recalibration")),
    "hotspots": (["r.zarr", "--cells", "c.csv", "--register", "auto", "--out", "o"],
                 ("registration", "hotspots", "immune")),
}
CASES = [(command, section, f.name) for command, (_, sections) in COMMANDS.items()
         for section in sections for f in dataclasses.fields(SECTIONS[section])
         if f.metadata["cli"]]


def _parse(command: str, *extra: str):
    return build_parser().parse_args([command, *COMMANDS[command][0], *extra])


def _flag(section: str, name: str) -> str:
    f = {f.name: f for f in dataclasses.fields(SECTIONS[section])}[name]
    return f.metadata["flag"] or "--" + name.replace("_", "-")


def _other_value(section: str, name: str) -> tuple[list[str], object]:
    """Command-line words giving field ``name`` a value other than its default, and that
    value as the parameter object holds it."""
    cls = SECTIONS[section]
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    hint = typing.get_type_hints(cls, localns={"Target": object})[name]
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    args = [a for a in typing.get_args(hint) if a is not type(None)] if union else [hint]
    kind, default, flag = args[0], f.default, _flag(section, name)
    if hint is bool:
        return [flag], not default
    if typing.get_origin(kind) is typing.Literal:
        other = next(c for c in typing.get_args(kind) if c != default)
        return [flag, other], other
    if typing.get_origin(kind) is tuple:
        return [flag, "lactate, kyn_trp"], ("lactate", "kyn_trp")
    if default is not None and union and len(args) < len(typing.get_args(hint)):
        return [flag, "none"], None  # an optional field takes "none"
    if kind is int:
        value = 2 if default is None else default + 1
    elif kind is float:
        value = 0.5 if default is None else default / 2
    else:
        value = {"panel": "tme-positive", "recalibrate": "none"}.get(name, "x.csv")
    return [flag, str(value)], value


def test_every_stage_field_is_an_option():
    assert {s for _, (_, sections) in COMMANDS.items() for s in sections} == set(SECTIONS)
    assert len(CASES) >= 40
    only_toml = [f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)
                 if not f.metadata["cli"]]
    assert only_toml == ["method"]  # pipelines choose landmarks or auto per sample


@pytest.mark.parametrize("command", COMMANDS)
def test_defaults_come_from_the_parameter_objects(command):
    args = _parse(command)
    for section in COMMANDS[command][1]:
        assert _params(section, args) == SECTIONS[section]()


@pytest.mark.parametrize("command, section, name", CASES)
def test_a_value_on_the_command_line_reaches_the_object(command, section, name):
    words, value = _other_value(section, name)
    if name == "targets":  # either a panel or a targets CSV
        assert _params(section, _parse(command, *words)).panel is None
    params = _params(section, _parse(command, *words))
    assert getattr(params, name) == value
    assert dataclasses.replace(params, **{name: SECTIONS[section]().__dict__[name]}) \
        == SECTIONS[section]()  # and nothing else changed


def test_panel_and_targets_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exc:
        _parse("convert", "--panel", "tme-negative", "--targets", "t.csv")
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_wrong_value_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        _parse("hotspots", "--extent", "half")
    assert exc.value.code == 2
    assert "--extent: invalid float value: 'half'" in capsys.readouterr().err


def test_help_groups_the_options_by_section(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["hotspots", "--help"])
    out = capsys.readouterr().out
    for section in ("registration", "hotspots", "immune"):
        assert f"[{section}] parameters" in out
    assert "--surrogates N" in out and "(default 199)" in out
