"""The one palette of immune classes, used by the HTML report, the PNG overlays, the
QuPath GeoJSON classifications and the label colours in the result store.

Okabe–Ito colours (distinguishable with the common colour-vision deficiencies). Drawn on
viridis maps they get a black halo, so each shows on dark and bright pixels alike;
"immune-desert" is sky blue, not the dark blue that disappears into viridis' low end.
"""
from __future__ import annotations

#: Immune class -> RGB (0-255).
CLASS_RGB: dict[str, tuple[int, int, int]] = {
    "inflamed": (204, 121, 167),        # reddish purple
    "immune-excluded": (230, 159, 0),   # orange
    "immune-desert": (86, 180, 233),    # sky blue
    "undetermined": (190, 190, 190),    # light grey
}
#: Colour of a class that is not in :data:`CLASS_RGB`.
OTHER_RGB = (255, 255, 255)
#: The cells of the assessed type on overlays: white dots with a black edge.
CELL_FACE, CELL_EDGE = "white", "black"


def rgb(cls: str) -> tuple[int, int, int]:
    """RGB (0-255) of an immune class."""
    return CLASS_RGB.get(cls, OTHER_RGB)


def rgb01(cls: str) -> tuple[float, float, float]:
    """RGB (0-1, for matplotlib) of an immune class."""
    return tuple(c / 255 for c in rgb(cls))


def hex_color(cls: str) -> str:
    """``#rrggbb`` of an immune class (for HTML)."""
    return "#%02x%02x%02x" % rgb(cls)
