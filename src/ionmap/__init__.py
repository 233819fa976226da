"""ionmap: high-throughput spatial metabolomics image processing.

The user's verbs and types are here: :func:`open_imzml` / :class:`ImzMLFile` (reading),
:class:`SpectrumBatch` (the spectra the kernels take), :class:`Target` (an ion to map),
:func:`convert` (imzML -> OME-Zarr ion images) and :func:`open_result` / :class:`Result`
(reading a result), the parameter objects of each stage (:class:`ConvertParams`, ...) and
the errors. Subpackages (``ionmap.regions``, ``ionmap.kernels``, ``ionmap.chem``,
``ionmap.store``, ``ionmap.pipeline``, ``ionmap.synth``) load on first use, so that
``import ionmap`` and the command line start fast. ``__init__.pyi`` states the types.
"""
from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    ImzMLError,
    InputError,
    IonmapError,
    IonmapWarning,
    MissingIbdError,
    StorageError,
)

__version__ = "0.1.0"

# public name -> module that defines it (loaded on first access)
_LAZY: dict[str, str] = {
    "open_imzml": "ionmap.imzml",
    "ImzMLFile": "ionmap.imzml",
    "SpectrumBatch": "ionmap.batch",
    "Target": "ionmap.chem",
    "convert": "ionmap.engine",
    "open_result": "ionmap.store",
    "Result": "ionmap.store",
    "ConvertParams": "ionmap.params",
    "RecalibrationParams": "ionmap.params",
    "RegistrationParams": "ionmap.params",
    "HotspotParams": "ionmap.params",
    "ImmuneParams": "ionmap.params",
}
_SUBPACKAGES = ("chem", "imzml", "kernels", "params", "pipeline", "regions", "report",
                "store", "synth")

__all__ = ["__version__", "IonmapError", "InputError", "StorageError", "ImzMLError",
           "MissingIbdError", "IonmapWarning", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        value = importlib.import_module(f"ionmap.{name}")
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'ionmap' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*__all__, *_SUBPACKAGES])
