"""Numbers in imzML attribute values, as the reference (XML-parser) path reads them.

The fast scan parses the same values in C (``ionmap._xmlscan``) and hands any value it
does not read exactly like these functions to the XML-parser path.
"""
from __future__ import annotations

import math

INT64 = (-(2**63), 2**63)
_EXACT = 2**53  # every integer below is exact in a double


def exact_integer(value: str | None) -> int:
    """An int64 attribute value; scientific notation (``1.6E+4``) is accepted when exact
    (below 2**53, where a double holds every integer). ValueError names the problem."""
    try:
        number = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        try:
            parsed = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            parsed = math.nan
        if not (math.isfinite(parsed) and parsed == int(parsed) and abs(parsed) < _EXACT):
            raise ValueError("is not an integer") from None
        number = int(parsed)
    if not INT64[0] <= number < INT64[1]:
        raise ValueError("is out of range")
    return number


def hint(value: str | None) -> float | None:
    """An optional decimal hint (lowest/highest observed m/z): its value, or None when it
    cannot be read (hints are optional; the data tell the range then)."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
