"""OME-NGFF 0.5 metadata builders: multiscales, omero channels and image-label.

Spatial scales are in µm per pixel (x, y); axes are named ``c``, ``y``, ``x``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

OME_VERSION = "0.5"

#: A qualitative palette (hex RGB) for channel colours in viewers.
PALETTE = ("FF00FF", "00FFFF", "FFFF00", "FF0000", "00FF00", "0000FF", "FF8000", "FFFFFF")

#: (min, max, start, end) of one channel: the data range and the displayed contrast range
#: (OMERO's ``window``), in the image's intensity units.
DisplayRange = tuple[float, float, float, float]


def _axes(names: Sequence[str], pixel_size_um: Sequence[float] | None) -> list[dict]:
    axes = []
    for name in names:
        if name == "c":
            axes.append({"name": "c", "type": "channel"})
        else:
            axis = {"name": name, "type": "space"}
            if pixel_size_um is not None:
                axis["unit"] = "micrometer"
            axes.append(axis)
    return axes


def multiscales(
    name: str, axis_names: Sequence[str], n_levels: int,
    pixel_size_um: Sequence[float] | None, *, method: str, centred: bool = True,
) -> list[dict]:
    """OME-NGFF 0.5 ``multiscales`` for ``n_levels`` levels halving y and x.

    Scales are in µm per pixel (x, y from ``pixel_size_um``; 1 per pixel when unknown).
    ``centred``: level l pixels are means of 2**l blocks, so their centres sit
    (2**l - 1) / 2 level-0 pixels in (a translation); False for subsampled labels.

    >>> ms = multiscales("tic", "yx", 2, (10.0, 20.0), method="mean")
    >>> [d["coordinateTransformations"][0]["scale"] for d in ms[0]["datasets"]]
    [[20.0, 10.0], [40.0, 20.0]]
    """
    sx, sy = (1.0, 1.0) if pixel_size_um is None else (float(pixel_size_um[0]),
                                                      float(pixel_size_um[1]))
    lead = [1.0] * (len(axis_names) - 2)
    datasets = []
    for level in range(n_levels):
        f = float(2**level)
        transforms: list[dict] = [{"type": "scale", "scale": [*lead, sy * f, sx * f]}]
        if centred and level:
            shift = (f - 1) / 2
            transforms.append({"type": "translation",
                               "translation": [*(0.0 for _ in lead), sy * shift, sx * shift]})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    return [{
        "name": name,
        "axes": _axes(axis_names, pixel_size_um),
        "datasets": datasets,
        "type": method,
        "metadata": {"description": f"level l = {method} of 2**l x 2**l blocks of level 0"},
    }]


def omero(names: Sequence[str], ranges: Sequence[DisplayRange] | None) -> dict:
    """OMERO channel metadata: label, colour and display range of each channel."""
    channels = []
    for i, label in enumerate(names):
        lo, hi, start, end = ranges[i] if ranges else (0.0, 1.0, 0.0, 1.0)
        channels.append({
            "label": label,
            "color": PALETTE[i % len(PALETTE)],
            "active": i < 3,
            "window": {"min": lo, "max": hi, "start": start, "end": end},
        })
    return {"channels": channels, "rdefs": {"model": "color"}}


def _label_colors(colors: Mapping[int, Sequence[int]] | Iterable[Mapping] | None) -> list[dict]:
    if colors is None:
        return []
    if isinstance(colors, Mapping):
        return [{"label-value": int(v), "rgba": [int(c) for c in rgba]}
                for v, rgba in sorted(colors.items())]
    return [dict(c) for c in colors]


def _label_properties(props: Mapping[int, Mapping] | Iterable[Mapping] | None) -> list[dict]:
    if props is None:
        return []
    if isinstance(props, Mapping):
        return [{"label-value": int(v), **dict(p)} for v, p in sorted(props.items())]
    return [dict(p) for p in props]


def image_label(
    colors: Mapping[int, Sequence[int]] | Iterable[Mapping] | None,
    properties: Mapping[int, Mapping] | Iterable[Mapping] | None,
) -> dict:
    """The ``image-label`` block; colours and properties get the same label values (NGFF
    validators require it), missing colours from :data:`PALETTE`."""
    color_list, prop_list = _label_colors(colors), _label_properties(properties)
    if color_list and prop_list:
        have_c = {c["label-value"] for c in color_list}
        have_p = {p["label-value"] for p in prop_list}
        for v in sorted(have_p - have_c):
            rgb = PALETTE[int(v) % len(PALETTE)]
            color_list.append({"label-value": v,
                               "rgba": [int(rgb[i : i + 2], 16) for i in (0, 2, 4)] + [255]})
        prop_list.extend({"label-value": v} for v in sorted(have_c - have_p))
        color_list.sort(key=lambda d: d["label-value"])
        prop_list.sort(key=lambda d: d["label-value"])
    return {"version": OME_VERSION, "colors": color_list, "properties": prop_list,
            "source": {"image": "../../"}}
