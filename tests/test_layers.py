"""Data flows one way: no module imports a layer above its own, and only zarr's public API.

Layers, bottom to top (a module may import its own layer and those below):

0. ``errors``, ``batch``, ``params``, ``_files`` (input paths and URLs, atomic writes), ``_geometry``
1. ``imzml``, ``kernels``, ``chem``
2. ``store``
3. ``engine``
4. ``regions``
5. ``report``
6. ``pipeline``
7. ``cli``

``synth`` writes test data and the demo: it may use the writers below it (chem, imzml) and
nothing above; only the pipeline (the demo) and the CLI import it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ionmap"

LAYERS = {
    "errors": 0, "batch": 0, "params": 0, "_files": 0, "_geometry": 0,
    "imzml": 1, "kernels": 1, "chem": 1, "isotopes": 1, "recal": 1, "annotate": 1,
    "interference": 1,
    "_binning": 1, "_peaks": 1, "_windows": 1, "_recal": 1,
    "_gather": 1, "_xmlscan": 1,
    "store": 2,
    "synth": 2,  # beside the store: uses chem and imzml, nothing above
    "engine": 3,
    "regions": 4,
    "report": 5,
    "pipeline": 6,
    "cli": 7,
}


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def _name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = _name(path) if path.name == "__init__.py" else _name(path).rsplit(".", 1)[0]
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", None) == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only, never executed
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # "from . import store": a name that is a module is imported too
            found += [(node.lineno, f"{module}.{a.name}") for a in node.names
                      if _is_module(f"{module}.{a.name}")]
    return found


def _is_module(module: str) -> bool:
    path = SRC.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "ionmap" or len(parts) < 2:
        return None
    return LAYERS.get(parts[1])


def test_every_module_has_a_layer():
    tops = {_name(p).split(".")[1] for p in _modules() if _name(p) != "ionmap"}
    assert tops <= set(LAYERS), tops - set(LAYERS)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: _name(p))
def test_no_import_from_a_layer_above(path):
    own = _layer(_name(path))
    if own is None:  # the package root re-exports lazily (see __init__.py)
        return
    bad = [f"line {line}: {mod}" for line, mod in _imports(path)
           if (layer := _layer(mod)) is not None and layer > own]
    if _name(path).split(".")[1] == "synth":  # synth: only chem, imzml and the bottom
        bad += [f"line {line}: {mod}" for line, mod in _imports(path)
                if (layer := _layer(mod)) is not None and layer >= 2
                and mod.split(".")[1] != "synth"]
    assert not bad, f"{_name(path)} (layer {own}) imports from above: {bad}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: _name(p))
def test_public_zarr_api_only(path):
    private = [f"line {line}: {mod}" for line, mod in _imports(path)
               if mod == "zarr.core" or mod.startswith("zarr.core.")]
    text = path.read_text(encoding="utf-8")
    assert not private and "zarr.core." not in text, private


def test_the_walker_sees_relative_and_absolute_imports(tmp_path):
    """The check itself can fail: a planted upward import is found."""
    found = dict((m, n) for n, m in _imports(SRC / "regions" / "_run.py"))
    assert "ionmap.store" in found and "ionmap.params" in found
    assert _layer("ionmap.cli") > _layer("ionmap.store") > _layer("ionmap.errors")
