"""What the XML says about a file, as one frozen dataclass, and the per-spectrum arrays."""
from __future__ import annotations

import math
import uuid as uuidlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import ImzMLFormatError
from ._cv import DTYPES
from ._xml import XmlMetadata

#: Names of the per-spectrum arrays of an opened file (see :class:`ionmap.ImzMLFile`).
ARRAYS = ("coordinates", "mz_offsets", "mz_lengths", "intensity_offsets", "intensity_lengths")


@dataclass(frozen=True)
class ImzMLMetadata:
    """File-level metadata of an imzML file.

    ``spectrum_type`` is None until known (declared, or detected from the data);
    ``mz_range`` (m/z, Th) None until known (declared by every non-empty spectrum's
    lowest/highest observed m/z, or read from the data). ``pixel_size_um``: (x, y) in µm;
    ``max_count``: declared (nx, ny) pixels; dtypes as NumPy dtype strings (``'<f8'``).
    """

    uuid: str | None
    declared_mode: str | None
    declared_spectrum_type: str | None
    spectrum_type: str | None
    polarity: str | None
    pixel_size_um: tuple[float, float] | None
    max_count: tuple[int, int] | None
    mz_dtype: str
    intensity_dtype: str
    mz_range: tuple[float, float] | None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> ImzMLMetadata:
        """Inverse of :meth:`to_json`; KeyError/TypeError for other content."""
        pairs = {"pixel_size_um", "max_count", "mz_range"}
        return cls(**{k: tuple(v) if k in pairs and v is not None else v
                      for k, v in values.items()})


def from_xml(meta: XmlMetadata, url: str) -> ImzMLMetadata:
    """The file-level metadata a parse gives (most specific declaration first)."""
    head = meta.header
    content = head.file_content
    group_terms = {t for params in head.groups.values() for t, _ in params}
    first_terms = meta.first.terms
    modes = {"continuous", "processed"} & set(content)
    declared_type = None
    for terms in (set(content), first_terms, group_terms):
        types = {"profile", "centroid"} & terms
        if len(types) == 1:
            declared_type = types.pop()
            break
    signs = {"positive", "negative"} & (set(content) | group_terms | first_terms)
    polarity = "mixed" if len(signs) == 2 else (signs.pop() if signs else None)
    settings = head.scan_settings

    def number(term: str) -> float | None:
        try:
            value = float(settings[term])  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            return None
        return value if math.isfinite(value) and value > 0 else None

    px, py = number("pixel_size_x"), number("pixel_size_y")
    nx, ny = number("max_count_x"), number("max_count_y")
    return ImzMLMetadata(
        uuid=_canonical_uuid(content.get("uuid"), url),
        declared_mode=modes.pop() if len(modes) == 1 else None,
        declared_spectrum_type=declared_type,
        spectrum_type=declared_type,
        polarity=polarity,
        pixel_size_um=None if px is None else (px, py if py is not None else px),
        max_count=None if nx is None or ny is None else (int(nx), int(ny)),
        mz_dtype=DTYPES[meta.mz_dtype].str,
        intensity_dtype=DTYPES[meta.intensity_dtype].str,
        mz_range=meta.mz_bounds,
    )


def _canonical_uuid(value: str | None, url: str) -> str | None:
    if not value:
        return None
    try:
        return str(uuidlib.UUID(value.strip().strip("{}")))
    except ValueError:
        raise ImzMLFormatError(url, f"universally unique identifier {value!r} is not a UUID") from None


def unwrap(offsets: np.ndarray) -> np.ndarray:
    """Undo offsets written as signed 32-bit: each step from a non-negative to a negative
    value adds 2**32 to it and to all later offsets (as pyimzML does; unlike pyimzML, a
    negative first offset is wrapped too)."""
    negative = offsets < 0
    if not negative.any():
        return offsets
    wraps = negative & ~np.concatenate([[False], negative[:-1]])
    return offsets + np.cumsum(wraps) * 2**32


def arrays_from_xml(meta: XmlMetadata) -> dict[str, np.ndarray]:
    """The per-spectrum arrays (:data:`ARRAYS`): coordinates int32 (n, 3), offsets int64
    (unwrapped), lengths int32. Equal m/z and intensity lengths (as every valid file has)
    are one array."""
    t = meta.table
    same = np.array_equal(t.mz_length, t.intensity_length)
    return {
        "coordinates": t.coords,
        "mz_offsets": unwrap(t.mz_offset),
        "mz_lengths": t.intensity_length if same else t.mz_length,
        "intensity_offsets": unwrap(t.intensity_offset),
        "intensity_lengths": t.intensity_length,
    }
