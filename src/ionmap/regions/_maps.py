"""Metabolite maps from ion images: single metabolites, ratios and group composites.

All maps live on the MSI pixel grid (y, x) and are float64 with NaN outside the tissue
(and, for ratios, where the denominator is below the noise floor). A map name is resolved
in this order:

1. a preset: ``kyn_trp`` (kynurenine / tryptophan), ``glu_gln`` (glutamate / glutamine),
   ``akg_succ`` (alpha-ketoglutarate / succinate), ``amp_atp`` (AMP / ATP), ``lipids``
   (composite of the ``lipid`` group);
2. a channel name (a single metabolite);
3. ``A/B`` with two channel names (a ratio);
4. a target group (``lipid``, or its plural ``lipids``; a composite).

Single and composite maps are *normalised*: each channel is first divided by the pixel's
TIC (when given; scaled by the median tissue TIC so values stay in intensity units), then
by its own median over the tissue, so 1.0 is the tissue baseline and a composite weighs
its channels equally. Ratios use the raw channels (TIC cancels) and are semi-quantitative:
ionisation efficiencies differ between the two ions.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from skimage.filters import threshold_otsu

from ..errors import InputError
from ..params import HotspotParams

#: Built-in map names: ("ratio", numerator, denominator) or ("group", group name).
PRESETS: dict[str, tuple[str, ...]] = {
    "kyn_trp": ("ratio", "kynurenine", "tryptophan"),
    "glu_gln": ("ratio", "glutamate", "glutamine"),
    "akg_succ": ("ratio", "alpha-ketoglutarate", "succinate"),
    "amp_atp": ("ratio", "AMP", "ATP"),
    "lipids": ("group", "lipid"),
}
#: Maps the ``hotspots`` command builds when none are named (those the data allow).
DEFAULT_MAPS = ("lactate", "kynurenine", "kyn_trp", "lipids")
#: Default noise floor of a ratio's denominator, as a fraction of its tissue median.
DEFAULT_NOISE_FLOOR = HotspotParams.noise_floor


def resolve_map(name: str, channels: Sequence[str],
                groups: Mapping[str, str | None] | None = None) -> tuple[str, ...]:
    """How to build map ``name``: ("single", ch), ("ratio", num, den) or ("group", g, *chs).

    Raises :class:`InputError` naming the missing channels or the names that would work.
    """
    groups = groups or {}
    chans = set(channels)
    spec: tuple[str, ...] | None = PRESETS.get(name)
    if spec is None and name in chans:
        spec = ("single", name)
    if spec is None and "/" in name:
        spec = ("ratio", *(part.strip() for part in name.split("/", 1)))
    if spec is None:
        known = {g for g in groups.values() if g}
        for g in (name, name[:-1] if name.endswith("s") else None):
            if g in known:
                spec = ("group", g)
                break
    if spec is None:
        raise InputError(None, f"unknown map {name!r}: not a channel, a ratio A/B, a group "
                               f"or a preset ({', '.join(PRESETS)}); channels: "
                               f"{', '.join(channels)}")
    if spec[0] == "group":
        members = [c for c in channels if groups.get(c) == spec[1]]
        if not members:
            raise InputError(None, f"map {name!r} needs channels of group {spec[1]!r}; none "
                                   "in the result")
        return ("group", spec[1], *members)
    missing = [c for c in spec[1:] if c not in chans]
    if missing:
        raise InputError(None, f"map {name!r} needs channel(s) {', '.join(missing)}, not in "
                               "the result")
    return spec


def tissue_mask(mask: np.ndarray, tic: np.ndarray | None = None, *,
                separation: float = 0.8) -> np.ndarray:
    """The tissue among the pixels that have a spectrum.

    ``mask``: (ny, nx) bool, pixel has a spectrum. When off-tissue pixels were acquired too
    (matrix-only spectra at low TIC), log TIC is clearly bimodal and Otsu's threshold splits
    it; a split is used only if Otsu's separability (between-class over total variance of
    log TIC) reaches ``separation`` (default 0.8; a single Gaussian gives 0.64), otherwise
    every pixel with a spectrum counts as tissue.
    """
    mask = np.asarray(mask, dtype=bool)
    if tic is None or mask.sum() < 16:
        return mask.copy()
    tic = np.asarray(tic, dtype=np.float64)
    values = np.log(np.maximum(tic[mask], 0) + 1.0)
    if np.ptp(values) == 0:
        return mask.copy()
    t = threshold_otsu(values)
    lo, hi = values[values <= t], values[values > t]
    between = lo.size * hi.size / values.size**2 * (hi.mean() - lo.mean()) ** 2
    if between / values.var() < separation:
        return mask.copy()
    return mask & (np.log(np.maximum(tic, 0) + 1.0) > t)


def _baseline(image: np.ndarray, tissue: np.ndarray) -> float:
    """Tissue median of a channel, or its tissue mean when mostly zero; 0 if empty."""
    v = image[tissue & np.isfinite(image)]
    if v.size == 0:
        return 0.0
    med = float(np.median(v))
    return med if med > 0 else float(v.mean())


def normalized(image: np.ndarray, tissue: np.ndarray, tic: np.ndarray | None = None) -> np.ndarray:
    """TIC-normalised channel over its tissue median (1.0 = baseline), NaN off tissue."""
    img = np.asarray(image, dtype=np.float64)
    if tic is not None:
        tic = np.asarray(tic, dtype=np.float64)
        ok = tissue & (tic > 0)
        scale = float(np.median(tic[ok])) if ok.any() else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            img = np.where(ok, img / tic * scale, np.nan)
    base = _baseline(img, tissue)
    out = img / base if base > 0 else np.zeros_like(img)
    out[~tissue] = np.nan
    return out


def ratio(num: np.ndarray, den: np.ndarray, tissue: np.ndarray,
          noise_floor: float = DEFAULT_NOISE_FLOOR) -> np.ndarray:
    """num / den on tissue; NaN where den < ``noise_floor`` × (tissue median of den)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    floor = noise_floor * _baseline(den, tissue)
    ok = tissue & (den > 0) & (den >= floor)
    out = np.full(num.shape, np.nan)
    out[ok] = num[ok] / den[ok]
    return out


def build_maps(
    images: Mapping[str, np.ndarray],
    tissue: np.ndarray,
    names: Sequence[str] = DEFAULT_MAPS,
    groups: Mapping[str, str | None] | None = None,
    *,
    tic: np.ndarray | None = None,
    noise_floor: float = DEFAULT_NOISE_FLOOR,
) -> dict[str, np.ndarray]:
    """Build the named maps from ion images.

    ``images``: channel name -> (ny, nx) ion image; ``tissue``: (ny, nx) bool; ``groups``:
    channel name -> target group (e.g. "lipid"), for composites; ``tic``: (ny, nx) total
    ion current for normalisation (None if the images are normalised already);
    ``noise_floor``: ratio denominators below this fraction of their tissue median are
    masked. Returns name -> float64 (ny, nx) map, NaN off tissue and where masked.
    """
    tissue = np.asarray(tissue, dtype=bool)
    out: dict[str, np.ndarray] = {}
    for name in names:
        spec = resolve_map(name, list(images), groups)
        if spec[0] == "single":
            out[name] = normalized(images[spec[1]], tissue, tic)
        elif spec[0] == "ratio":
            out[name] = ratio(images[spec[1]], images[spec[2]], tissue, noise_floor)
        else:
            out[name] = np.sum([normalized(images[c], tissue, tic) for c in spec[2:]], axis=0)
    return out


def map_info(name: str, channels: Sequence[str], groups: Mapping[str, str | None] | None,
             *, normalisation: str = "TIC") -> dict[str, str]:
    """Name, unit and definition of map ``name`` as :func:`build_maps` makes it (for
    colour-bar labels and stored metadata); ``normalisation``: "TIC" or "RMS"."""
    spec = resolve_map(name, channels, groups)
    norm = f"{normalisation}-normalised, "
    if spec[0] == "single":
        return {"name": name, "unit": f"fold of tissue median ({normalisation}-normalised)",
                "definition": f"{spec[1]}, {norm}divided by its tissue median"}
    if spec[0] == "ratio":
        return {"name": name, "unit": f"ratio {spec[1]}/{spec[2]}",
                "definition": f"{spec[1]} / {spec[2]} (raw intensities; semi-quantitative)"}
    return {"name": name, "unit": f"sum of folds of tissue median ({len(spec) - 2} ions)",
            "definition": f"sum over group {spec[1]} ({', '.join(spec[2:])}) of each ion, "
                          f"{norm}divided by its tissue median"}


def map_channels(names: Sequence[str], channels: Sequence[str],
                 groups: Mapping[str, str | None] | None = None) -> list[str]:
    """The channels the named maps read (to load only those from a store)."""
    need: list[str] = []
    for name in names:
        spec = resolve_map(name, channels, groups)
        for c in spec[2:] if spec[0] == "group" else spec[1:]:
            if c not in need:
                need.append(c)
    return need
