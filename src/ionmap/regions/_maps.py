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

Single and composite maps are *normalised*: each channel is first divided by a per-pixel
normaliser (``normalisation``; scaled by its tissue median so values stay in intensity
units), then by its own median over the tissue, so 1.0 is the tissue baseline and a
composite weighs its channels equally. Normalisers (:func:`normaliser`):

- ``tic``: the pixel's total ion current;
- ``pqn``: probabilistic quotient normalisation (Dieterle et al. 2006, Anal. Chem.
  78:4281) on the panel: the median over the ion images given of each ion's quotient to
  its tissue median. A niche that raises a minority of the ions barely moves it, and,
  unlike the TIC, it ignores matrix and background peaks;
- ``none``.

The default (``HotspotParams.normalisation``) is ``tic``: on seeded synthetic sections
(``benchmarks/bench_sections.py --sections 5``, 60 × 80 px) it gave 0 false hotspots on 20
null sections with a TIC field, smooth backgrounds and bright matrix off the tissue (PQN
0.2–0.6 per section, RMS at conversion 0–0.4, none 0–0.6) and found 33 of 34 planted
niche-maps under all three confounders (PQN 33, RMS 17, none 22). In synth the ionisation
field multiplies every peak, the case the TIC is exact for.

Ratios use the raw channels (a per-pixel factor cancels) and are semi-quantitative:
ionisation efficiencies differ between the two ions.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

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


def _baseline(image: np.ndarray, tissue: np.ndarray) -> float:
    """Tissue median of a channel, or its tissue mean when mostly zero; 0 if empty."""
    v = image[tissue & np.isfinite(image)]
    if v.size == 0:
        return 0.0
    med = float(np.median(v))
    return med if med > 0 else float(v.mean())


#: Per-pixel normalisers of single and group maps (see the module doc).
NORMALISATIONS = ("tic", "pqn", "none")
_ROWS = 256  # rows per block of the median quotient (bounds the (channels, rows, nx) stack)


def median_quotient(images: Sequence[np.ndarray], region: np.ndarray,
                    quantile: float = 0.5) -> np.ndarray | None:
    """(ny, nx) median over the channels of I_c / (its ``quantile`` over ``region``), 0
    off ``region``; channels whose quantile is 0 are left out; None when none is left."""
    region = np.asarray(region, dtype=bool)
    chans, scales = [], []
    for img in images:
        v = np.nan_to_num(np.asarray(img, dtype=np.float64)[region])
        top = float(np.quantile(v, quantile)) if v.size else 0.0
        if top > 0:
            chans.append(img)
            scales.append(top)
    if not chans:
        return None
    out = np.zeros(region.shape)
    inv = (1.0 / np.array(scales))[:, None, None]
    for y0 in range(0, region.shape[0], _ROWS):
        block = np.stack([np.asarray(c[y0:y0 + _ROWS], dtype=np.float64) for c in chans])
        q = np.median(np.maximum(np.nan_to_num(block), 0.0) * inv, axis=0)
        out[y0:y0 + _ROWS] = np.where(region[y0:y0 + _ROWS], q, 0.0)
    return out


def normaliser(method: str, images: Mapping[str, np.ndarray], tissue: np.ndarray,
               tic: np.ndarray | None = None) -> np.ndarray | None:
    """The per-pixel normaliser ``method`` (:data:`NORMALISATIONS`) on the tissue: the TIC
    (None without one), the PQN median quotient of ``images`` (every channel given), or
    None for "none"."""
    if method == "tic":
        return None if tic is None else np.asarray(tic, dtype=np.float64)
    if method == "pqn":
        return median_quotient(list(images.values()), tissue)
    if method == "none":
        return None
    raise InputError(None, f"normalisation {method!r}: use one of {', '.join(NORMALISATIONS)}")


def normalized(image: np.ndarray, tissue: np.ndarray, norm: np.ndarray | None = None
               ) -> np.ndarray:
    """Channel divided by the per-pixel normaliser ``norm`` (times its tissue median;
    None: as it is), over its tissue median (1.0 = baseline); NaN off tissue and where
    ``norm`` is not positive."""
    img = np.asarray(image, dtype=np.float64)
    if norm is not None:
        norm = np.asarray(norm, dtype=np.float64)
        ok = tissue & (norm > 0)
        scale = float(np.median(norm[ok])) if ok.any() else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            img = np.where(ok, img / norm * scale, np.nan)
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
    normalisation: str = "tic",
    noise_floor: float = DEFAULT_NOISE_FLOOR,
) -> dict[str, np.ndarray]:
    """Build the named maps from ion images.

    ``images``: channel name -> (ny, nx) ion image (for ``pqn``, every panel ion: they
    all enter the normaliser); ``tissue``: (ny, nx) bool; ``groups``: channel name ->
    target group (e.g. "lipid"), for composites; ``tic``: (ny, nx) total ion current;
    ``normalisation``: the per-pixel normaliser of single and group maps,
    :data:`NORMALISATIONS` (``tic`` without a ``tic``, or ``none``: the images as they
    are, e.g. normalised at conversion); ``noise_floor``: ratio denominators below this
    fraction of their tissue median are masked. Returns name -> float64 (ny, nx) map,
    NaN off tissue and where masked.
    """
    tissue = np.asarray(tissue, dtype=bool)
    norm = normaliser(normalisation, images, tissue, tic)
    out: dict[str, np.ndarray] = {}
    for name in names:
        spec = resolve_map(name, list(images), groups)
        if spec[0] == "single":
            out[name] = normalized(images[spec[1]], tissue, norm)
        elif spec[0] == "ratio":
            out[name] = ratio(images[spec[1]], images[spec[2]], tissue, noise_floor)
        else:
            out[name] = np.sum([normalized(images[c], tissue, norm) for c in spec[2:]], axis=0)
    return out


def map_info(name: str, channels: Sequence[str], groups: Mapping[str, str | None] | None,
             *, normalisation: str = "TIC") -> dict[str, str]:
    """Name, unit and definition of map ``name`` as :func:`build_maps` makes it (for
    colour-bar labels and stored metadata); ``normalisation``: its name as shown ("TIC",
    "RMS", "PQN", "un")."""
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
