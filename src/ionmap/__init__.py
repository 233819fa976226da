"""ionmap: high-throughput spatial metabolomics image processing.

The public API is re-exported here; heavy modules load on first use so that the command
line starts fast.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from .errors import ImzMLError, InputError, IonmapError, StorageError  # noqa: E402

# public name -> (module, attribute or None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "chem": ("ionmap.chem", None),
    "regions": ("ionmap.regions", None),
    "synth": ("ionmap.synth", None),
    "convert": ("ionmap.engine.convert", "convert"),
    "open_result": ("ionmap.store", "open_result"),
    "Result": ("ionmap.store", "Result"),
    "kernels": ("ionmap.kernels", None),
    "pick_peaks": ("ionmap.kernels", "pick_peaks"),
    "build_mz_axis": ("ionmap.kernels", "build_mz_axis"),
    "open_imzml": ("ionmap.imzml", "open_imzml"),
    "ImzMLFile": ("ionmap.imzml", "ImzMLFile"),
    "pipeline": ("ionmap.pipeline", None),
    "run_pipeline": ("ionmap.pipeline", "run_pipeline"),
}

__all__ = ["__version__", "ImzMLError", "InputError", "IonmapError", "StorageError", *_LAZY]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'ionmap' has no attribute {name!r}") from None
    mod = importlib.import_module(module)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
