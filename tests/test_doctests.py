"""Every docstring example in the package runs (doctest), so the examples stay true."""
from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil

import pytest

import ionmap

# Every Python module, internal (``_name``) ones included; not the compiled kernels.
MODULES = sorted(m.name for m in pkgutil.walk_packages(ionmap.__path__, "ionmap.")
                 if importlib.util.find_spec(m.name).origin.endswith(".py"))


def test_examples_exist():
    examples = 0
    for name in MODULES:
        finder = doctest.DocTestFinder()
        examples += sum(len(t.examples) for t in finder.find(importlib.import_module(name)))
    assert examples >= 5


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
