"""One typed parameter object per stage, shared by the Python API, the CLI and the TOML config.

Each stage has a frozen dataclass; every field carries its type, default, unit and help
text (``field.metadata``), so :func:`ionmap.convert` / :func:`ionmap.regions.run_hotspots`,
the ``ionmap`` command line (defaults and ``--help``) and the sections of a pipeline TOML
(``[convert]``, ``[recalibration]``, ``[registration]``, ``[hotspots]``, ``[immune]``) all
read them from here. Constructing an object checks the types (and, for convert, the
ranges) and raises :class:`~ionmap.errors.InputError` naming the field.

>>> ConvertParams(ppm=5).ppm
5.0
>>> ConvertParams(ppm="5")
Traceback (most recent call last):
...
ionmap.errors.InputError: ppm = '5': expected a number
>>> field_help(ConvertParams, "ppm")
'window half-width for targets without their own ppm (ppm; default 10.0)'

Adding a parameter: add a field with :func:`param` to the stage's class (and, if it must be
range-checked, a line in its ``_problems``); the TOML section, ``ionmap.convert(**...)`` and
the command line (an option of the commands that take the section, see :data:`SECTIONS`)
accept it at once.
This module is light (standard library only) so that importing it costs nothing.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union

from .errors import InputError

#: A window half-width (ppm) must stay below this: at 10^6 ppm the window reaches m/z 0.
MAX_PPM = 1e6

if TYPE_CHECKING:
    from .chem import Target

P = TypeVar("P", bound="Params")


def param(default: Any, help: str, unit: str | None = None, *, flag: str | None = None,
          metavar: str | None = None, cli: bool = True) -> Any:
    """A dataclass field with its help text and unit (m/z, ppm, pixels, µm, ...).

    For the command line (:mod:`ionmap.cli`): ``flag`` when the option is not
    ``--name-with-dashes``, ``metavar`` for its value, ``cli=False`` for a field that only a
    pipeline TOML sets.
    """
    return field(default=default, metadata={"help": help, "unit": unit, "flag": flag,
                                            "metavar": metavar, "cli": cli})


class Params:
    """Base of the parameter objects: type checks in ``__post_init__``, TOML loading."""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            ok, value = _coerce(value, hints[f.name])
            if not ok:
                raise InputError(None, f"{f.name} = {value!r}: expected {_expected(hints[f.name])}")
            object.__setattr__(self, f.name, value)
        problems = self._problems()
        if problems:
            raise InputError(None, "; ".join(problems))

    def _problems(self) -> list[str]:
        """Range checks beyond the types (none by default)."""
        return []

    @classmethod
    def names(cls) -> list[str]:
        """The field names, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def from_mapping(cls: type[P], values: Mapping[str, Any], *, section: str,
                     source: str | os.PathLike | None = None) -> P:
        """Build from a TOML section: unknown keys and wrong types are InputErrors naming
        ``[section]`` and the key (and ``source``, the config file)."""
        if not isinstance(values, Mapping):
            raise InputError(source, f"[{section}] must be a table of keys")
        allowed = cls.names()
        for key in values:
            if key not in allowed:
                raise InputError(source, f"[{section}] unknown key {key!r} (allowed: "
                                         f"{', '.join(allowed)})")
        try:
            return cls(**values)
        except InputError as exc:
            raise InputError(source, f"[{section}] {exc.problem}") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready field values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}  # type: ignore[call-overload]


def split_overrides(overrides: Mapping[str, Any], *classes: type[Params]
                    ) -> list[dict[str, Any]]:
    """Sort keyword overrides by the parameter class that has the field (one dict per class);
    an unknown name is an InputError listing what is allowed."""
    out: list[dict[str, Any]] = [{} for _ in classes]
    for key, value in overrides.items():
        owners = [i for i, cls in enumerate(classes) if key in cls.names()]
        if not owners:
            allowed = sorted({n for cls in classes for n in cls.names()})
            raise InputError(None, f"unknown parameter {key!r} (allowed: {', '.join(allowed)})")
        out[owners[0]][key] = value
    return out


def with_overrides(params: P | None, cls: type[P], overrides: Mapping[str, Any]) -> P:
    """``params`` (or the defaults) with ``overrides`` replaced; checks run again."""
    if params is not None and not isinstance(params, cls):
        raise InputError(None, f"expected a {cls.__name__}, got {type(params).__name__}")
    split_overrides(overrides, cls)  # an unknown name is an InputError, as everywhere
    base = params if params is not None else cls()
    return dataclasses.replace(base, **overrides) if overrides else base


def field_help(cls: type[Params], name: str) -> str:
    """The help text of field ``name`` with its unit and default (for ``--help``)."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]  # type: ignore[arg-type]
    unit = f.metadata.get("unit")
    extra = f"{unit}; " if unit else ""
    help = f.metadata["help"]
    if "(default" in help:  # the help explains the default itself
        return f"{help} ({unit})" if unit else help
    if isinstance(f.default, bool):  # a switch: on when given
        return f"{help} ({unit})" if unit else help
    default = "none" if f.default is None else f.default
    return f"{help} ({extra}default {default})"


# -- the stages --------------------------------------------------------------------------------

NORMALIZE = ("none", "tic", "rms")
ANALYZERS = ("tof", "orbitrap", "fticr")


@dataclass(frozen=True)
class ConvertParams(Params):
    """What :func:`ionmap.convert` extracts (section ``[convert]``).

    A pixel's value for a target is the sum of the intensities of its spectrum's points
    with m/z in [mz·(1 − ppm·1e-6), mz·(1 + ppm·1e-6)] (inclusive).
    """

    panel: str | None = param(None, "built-in panel: tme-negative or tme-positive (default: "
                              "the one matching the file's polarity)")
    targets: str | os.PathLike[str] | Sequence[Target] | None = param(
        None, "instead of a panel, a targets CSV (name and mz, or name, formula and adduct; "
        "optional ppm and group; from Python also a list of ionmap.chem.Target)",
        metavar="CSV")
    ppm: float = param(10.0, "window half-width for targets without their own ppm", "ppm")
    peaks: bool = param(False, "sum picked peaks instead of raw profile points (centroid "
                        "spectra are used as they are)")
    snr: float = param(3.0, "peak-picking signal-to-noise threshold")
    features: bool = param(False, "also build the dataset-wide m/z axis and write the "
                           "feature cube")
    feature_ppm: float | None = param(None, "feature binning half-width (default: ppm), "
                                      "scaled by the analyzer's peak-width law", "ppm")
    analyzer: Literal["tof", "orbitrap", "fticr"] = param(
        "tof", "mass analyser for the feature peak-width law: tof (width ∝ m), orbitrap "
        "(∝ m^1.5) or fticr (∝ m^2)")
    min_fraction: float = param(0.01, "keep features seen in at least this fraction of the "
                                "sampled spectra", "fraction 0..1")
    axis_sample: int | None = param(20_000, "spectra sampled to build the feature m/z axis "
                                    "(all: none)", "spectra", metavar="N")
    normalize: Literal["none", "tic", "rms"] = param(
        "none", "divide each pixel by its TIC or RMS, times the median over pixels with a "
        "non-zero normaliser (ion images and features, not the tic image)")
    band_rows: int | None = param(None, "rows per band (= shard height); normally chosen "
                                  "from the image and file size", "pixels", metavar="N")

    def _problems(self) -> list[str]:
        problems = []
        for name in ("ppm", "feature_ppm"):
            value = getattr(self, name)
            if value is not None and not 0 < value < MAX_PPM:
                problems.append(f"{name} must be positive and below {MAX_PPM:g}, not {value}")
        if not self.snr >= 0:
            problems.append(f"snr must be >= 0, not {self.snr}")
        if not 0 <= self.min_fraction <= 1:
            problems.append(f"min_fraction must be within 0..1, not {self.min_fraction}")
        for name in ("axis_sample", "band_rows"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be at least 1, not {value}")
        return problems


@dataclass(frozen=True)
class RecalibrationParams(Params):
    """m/z recalibration before extraction (section ``[recalibration]``); the model and
    its fit are described in :mod:`ionmap.recal`."""

    recalibrate: str = param(
        "auto", "auto (reference ions: the targets with their isotopes and the usual "
        "matrix ions of DHB, 9-AA, DAN and NEDC), none (the recorded m/z axis) or the path "
        "of a lock-mass CSV (name and mz, or name, formula and adduct; only those ions)",
        metavar="auto|none|FILE.csv")
    search_ppm: float = param(40.0, "search half-width for each reference ion on the "
                              "recorded axis (must cover the largest drift)", "ppm")
    inlier_ppm: float = param(3.0, "a reference within this of a spectrum's consensus "
                              "offset is an inlier (RANSAC tolerance)", "ppm")
    residual_ppm: float = param(10.0, "search half-width around the model's prediction when "
                                "the residual error is measured in every spectrum", "ppm")
    smooth_px: float = param(2.0, "sigma of the spatial smoothing of the offset field",
                             "pixels")
    max_sample: int = param(4000, "at most about this many spectra (a spatial lattice) are read "
                            "for the fit", "spectra")
    min_presence: float = param(0.3, "a reference must be an inlier in this fraction of the "
                                "lattice spectra (and more often than decoys at random "
                                "masses)", "fraction 0..1")
    min_references: int = param(2, "with fewer references found the recorded axis is kept")
    resolving_power: float = param(20000.0, "resolving power m/FWHM for isotope peaks when "
                                   "the data cannot tell (centroid spectra)")

    def _problems(self) -> list[str]:
        problems = [f"{name} must be positive, not {getattr(self, name)}"
                    for name in ("search_ppm", "inlier_ppm", "residual_ppm", "resolving_power")
                    if not getattr(self, name) > 0]
        if not self.smooth_px >= 0:
            problems.append(f"smooth_px must be >= 0, not {self.smooth_px}")
        if not 0 < self.min_presence <= 1:
            problems.append(f"min_presence must be within 0..1, not {self.min_presence}")
        for name in ("max_sample", "min_references"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, not {getattr(self, name)}")
        if not self.recalibrate:
            problems.append("recalibrate must be auto, none or a CSV path")
        return problems


@dataclass(frozen=True)
class RegistrationParams(Params):
    """How cells are brought onto the MSI grid (section ``[registration]``)."""

    method: Literal["landmarks-or-auto", "landmarks", "auto"] = param(
        "landmarks-or-auto", "pipeline runs: landmarks (NAME.landmarks.csv required), auto "
        "(rotation, scale and shift from tissue and cell density) or landmarks when the "
        "sample has them", cli=False)
    model: Literal["similarity", "affine"] = param("similarity", "landmark transform model")


@dataclass(frozen=True)
class HotspotParams(Params):
    """Metabolite maps and their hotspots (section ``[hotspots]``); see
    :func:`ionmap.regions.find_hotspots` and :func:`ionmap.regions.build_maps`."""

    maps: tuple[str, ...] | None = param(
        None, "maps: channel names, ratios A/B, groups and presets kyn_trp, glu_gln, "
        "akg_succ, amp_atp, lipids (default: those of lactate, kynurenine, kyn_trp, lipids "
        "the result allows)", metavar="LIST")
    fdr: float = param(0.05, "a hotspot is significant at q <= FDR (Benjamini-Hochberg over "
                       "the cluster p-values of all maps of the sample)")
    min_area_px: int = param(9, "smallest hotspot", "pixels", metavar="N")
    radius_px: int = param(1, "half-width R of the smallest centre window of the local "
                           "contrast ((2R+1)^2 pixels; larger scales 2R+1, 4R+3, ...)",
                           "pixels", metavar="R")
    neighbourhood: Literal["square", "disk"] = param("square", "shape of the contrast "
                                                     "windows")
    extent: float | None = param(0.5, "trim each hotspot to pixels whose (smoothed) excess "
                                 "over the local background is at least this fraction of "
                                 "its plateau (0.5: half maximum; none: no trimming)",
                                 "fraction 0..1")
    noise_floor: float = param(0.1, "ratio maps: mask pixels whose denominator is below this "
                               "fraction of its tissue median", "fraction")
    cluster_z: float = param(3.09, "cluster-forming threshold on the local contrast scaled "
                             "to unit SD under the map's own autocorrelation (3.09: "
                             "one-sided p = 0.001)", "z", metavar="Z")
    n_surrogates: int = param(199, "surrogate maps per map (same autocorrelation, no niche) "
                              "for the cluster p-values", flag="--surrogates", metavar="N")
    transform: Literal["log", "none"] = param("log", "scale on which maps are tested (log: "
                                              "ionisation effects are multiplicative)")
    candidates: bool = param(False, "also list candidate clusters that are not significant "
                             "(class undetermined: not significant; never counted)")
    normalisation: Literal["tic", "pqn", "none"] = param(
        "tic", "per-pixel normaliser of single and group maps (ionmap.regions.build_maps): tic, "
        "pqn (median quotient of the panel ions, Dieterle 2006) or none; a result "
        "normalised at conversion (--normalize) is used as it is")
    tissue_mask: str | None = param(
        None, "tissue mask replacing the automatic one (ionmap.regions.tissue_mask): a TIFF or PNG "
        "of the MSI grid (non-zero = tissue) or GeoJSON polygons in MSI pixels (default: "
        "segmented on the panel ions, so bright matrix off the tissue is not tissue)", "file",
        metavar="FILE")
    annotation_fdr: float = param(0.1, "annotation FDR (target-decoy q-value, "
                                  "ionmap.annotate) above which a map's hotspots are marked "
                                  "not confidently annotated in hotspots.csv; a derived map "
                                  "takes the worst FDR of its channels", "q-value 0..1",
                                  metavar="Q")


@dataclass(frozen=True)
class ImmuneParams(Params):
    """The immune context of each hotspot (section ``[immune]``); see
    :func:`ionmap.regions.immune_context`."""

    cell_type: str = param("CD8", "cell type whose exclusion is assessed (a class of the "
                           "cell file)")
    rim_um: float = param(60.0, "rim width outside a hotspot's edge", "µm")
    scarce_ratio: float = param(0.5, "the cell type is scarce inside below this fraction of "
                                "its tissue density", "fraction")
    rim_ratio: float = param(0.5, "the cell type is present at the rim from this fraction "
                             "of its tissue density", "fraction")
    edge_guard_um: float | None = param(None, "band inside the edge left out of the inside "
                                        "density (none: half an MSI pixel)", "µm",
                                        metavar="UM")
    n_permutations: int = param(999, "permutations for the exclusion p-value",
                               flag="--permutations", metavar="N")
    seed: int = param(0, "seed of the permutations and of the surrogate maps")
    min_expected: float = param(5.0, "a scarce inside (or rim) is called only when at least "
                                "this many cells of the type are expected there under the "
                                "reference rate", "cells", metavar="N")
    confidence: float = param(0.9, "confidence of the rate-ratio intervals that decide a "
                              "class (0.9: each one-sided call errs at most 5 %)", "fraction")
    min_coverage: float = param(0.5, "undetermined (not annotated) when less of a hotspot's "
                                "inside (or, for a scarce inside, its rim) lies in the "
                                "annotated region", "fraction")

    def _problems(self) -> list[str]:
        problems = [f"{name} must be positive, not {getattr(self, name)}"
                    for name in ("rim_um", "scarce_ratio", "rim_ratio")
                    if not getattr(self, name) > 0]
        for name in ("n_permutations", "min_expected", "edge_guard_um"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                problems.append(f"{name} must be >= 0, not {value}")
        if not 0 < self.confidence < 1:
            problems.append(f"confidence must be between 0 and 1, not {self.confidence}")
        if not 0 <= self.min_coverage <= 1:
            problems.append(f"min_coverage must be within 0..1, not {self.min_coverage}")
        return problems


#: TOML section -> the parameter object it is checked against; the commands of the CLI group
#: their options by these sections too.
SECTIONS: dict[str, type[Params]] = {
    "convert": ConvertParams, "recalibration": RecalibrationParams,
    "registration": RegistrationParams, "hotspots": HotspotParams, "immune": ImmuneParams,
}


# -- type checks -----------------------------------------------------------------------------


class _NotInToml:
    """Stands in for types a config file cannot spell (e.g. a list of Target objects)."""


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, localns={"Target": _NotInToml})


def _coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    """(value fits ``hint``, value normalised: ints as floats, lists of str as tuples)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True, value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, out = _coerce(value, arg)
            if ok:
                return True, out
        return False, value
    if hint is type(None):
        return value is None, value
    if origin is Literal:
        return value in typing.get_args(hint) and isinstance(value, str), value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    if origin is os.PathLike:
        return isinstance(value, os.PathLike), value
    if origin in (tuple, Sequence):
        (item, *rest) = typing.get_args(hint)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            return False, value
        if item is _NotInToml:  # objects from Python (e.g. Target): not checked here
            return not any(isinstance(v, (str, int, float)) for v in value), tuple(value)
        items = [_coerce(v, item) for v in value]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    return isinstance(value, hint), value


def _expected(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        parts = [_expected(a) for a in typing.get_args(hint)]
        return " or ".join(p for p in dict.fromkeys(parts) if p)
    if hint is type(None):
        return "none (omit the key)"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    if origin in (tuple, Sequence):
        (item, *_) = typing.get_args(hint)
        if item is _NotInToml:
            return "a list of Target"
        return "a list of " + {str: "strings", int: "integers", float: "numbers"}.get(
            item, _expected(item))
    if origin is os.PathLike:
        return ""
    return {bool: "true or false", int: "an integer", float: "a number",
            str: "a string"}.get(hint, getattr(hint, "__name__", str(hint)))
