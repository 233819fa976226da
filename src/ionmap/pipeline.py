"""Bulk runs: a TOML pipeline config applied to every sample of a folder.

A sample in the input folder (local or an ``s3://`` prefix) is ``NAME.imzML`` with its
``.ibd``, and optionally ``NAME.cells.csv`` or ``NAME.cells.geojson``,
``NAME.landmarks.csv`` and a tissue mask ``NAME.tissue.tif`` (``.tiff``, ``.png``,
``.geojson``; MSI grid, replacing the automatic mask and ``[hotspots] tissue_mask``,
whose path is relative to the config). Each sample gets ``OUTPUT/NAME/`` with the result store
(``result.zarr``), the hotspot outputs (``hotspots/``) and ``report.html``. A failing sample
is recorded and the others go on; ``summary.csv`` lists every sample and ``cohort.csv``
compares the samples.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import tomllib
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _files
from .errors import InputError, IonmapError
from .params import (
    SECTIONS,
    ConvertParams,
    HotspotParams,
    ImmuneParams,
    RecalibrationParams,
    RegistrationParams,
)

_DONE = "sample.json"  # written last in OUTPUT/NAME: the sample is complete


@dataclass
class PipelineConfig:
    """A parsed pipeline: one parameter object per stage (the TOML sections)."""

    path: str
    convert: ConvertParams = field(default_factory=ConvertParams)
    recalibration: RecalibrationParams = field(default_factory=RecalibrationParams)
    registration: RegistrationParams = field(default_factory=RegistrationParams)
    hotspots: HotspotParams = field(default_factory=HotspotParams)
    immune: ImmuneParams = field(default_factory=ImmuneParams)


def load_config(path: str | os.PathLike) -> PipelineConfig:
    """Read and validate a pipeline TOML (see ``pipelines/*.toml`` for every key).

    Each section is checked against its own parameter object
    (:data:`ionmap.params.SECTIONS`): an unknown key, a key of another section or a value of
    the wrong type is an InputError naming the file, the section and the key.
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise InputError(source, "pipeline config not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(source, f"not valid TOML: {exc}") from None
    unknown = set(raw) - set(SECTIONS)
    if unknown:
        raise InputError(source, f"unknown section(s): {', '.join(sorted(unknown))} "
                                 f"(sections: {', '.join(SECTIONS)})")
    conv = raw.get("convert", {})
    targets = conv.get("targets") if isinstance(conv, Mapping) else None
    if isinstance(targets, str) and not _files.is_url(targets):  # relative to the config
        conv = {**conv, "targets": str(Path(source).parent / targets)}
    sections = {**raw, "convert": conv}
    hot = raw.get("hotspots", {})
    mask = hot.get("tissue_mask") if isinstance(hot, Mapping) else None
    if isinstance(mask, str):  # relative to the config, like the targets
        sections["hotspots"] = {**hot, "tissue_mask": str(Path(source).parent / mask)}
    parsed = {name: cls.from_mapping(sections.get(name, {}), section=name, source=source)
              for name, cls in SECTIONS.items()}
    return PipelineConfig(source, **parsed)


#: A sample's own tissue mask (NAME + suffix; see :func:`ionmap.regions.read_tissue_mask`),
#: used instead of ``[hotspots] tissue_mask``.
TISSUE_MASK_SUFFIXES = (".tissue.tif", ".tissue.tiff", ".tissue.png", ".tissue.geojson")


@dataclass(frozen=True)
class Sample:
    """One sample of an input folder: its imzML and optional annotation files (URLs)."""

    name: str
    imzml: str
    cells: str | None = None
    landmarks: str | None = None
    tissue_mask: str | None = None


def discover_samples(directory: str, storage_options: Mapping[str, Any] | None = None
                     ) -> list[Sample]:
    """Samples in a folder or ``s3://`` prefix, sorted by name (extensions matched
    case-insensitively)."""
    names = _files.listdir(directory, storage_options)
    lower = {n.lower(): n for n in names}
    samples = []
    for n in sorted(names):
        if not n.lower().endswith(".imzml"):
            continue
        stem = n[: -len(".imzml")]
        found = {}
        for key, suffixes in (("cells", (".cells.csv", ".cells.geojson")),
                              ("landmarks", (".landmarks.csv",)),
                              ("tissue_mask", TISSUE_MASK_SUFFIXES)):
            for suffix in suffixes:
                if (stem + suffix).lower() in lower:
                    found[key] = _files.join(directory, lower[(stem + suffix).lower()])
                    break
        samples.append(Sample(stem, _files.join(directory, n), **found))
    if not samples:
        raise InputError(directory, "no .imzML files found (missing or empty folder?)")
    return samples


def _local_copy(url: str, folder: Path, storage_options: Mapping[str, Any] | None) -> str:
    """A local path for a small annotation file (downloaded when it is a URL)."""
    if _files.local_path(url) is not None:
        return _files.local_path(url)
    _files.make_dir(folder)
    target = folder / _files.basename(url)
    with _files.open_input(url, storage_options) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return str(target)


@dataclass
class SampleOutcome:
    """What happened to one sample: status ``ok``, ``skipped`` (complete, resumed) or
    ``failed`` (with the one-line error), time in s, and its cohort row."""

    name: str
    status: str
    seconds: float
    error: str = ""
    cohort: dict[str, Any] = field(default_factory=dict)


def cohort_row(name: str, hotspots: list[dict], labels: Mapping[str, np.ndarray],
               tissue: np.ndarray, pixel_mm2: float) -> dict[str, Any]:
    """Per-sample cohort numbers: significant hotspots per class and the share of tissue
    area inside immune-excluded hotspots (union over maps). Candidates that are not
    significant on their own (``significant`` false) are never counted."""
    from .regions import CLASSES

    hotspots = [h for h in hotspots if h.get("significant", True)]
    row: dict[str, Any] = {"sample": name, "n_hotspots": len(hotspots),
                           "tissue_mm2": float(tissue.sum() * pixel_mm2)}
    for cls in CLASSES:
        row[f"n_{cls.replace('-', '_')}"] = sum(h["class"] == cls for h in hotspots)
    excluded = np.zeros(tissue.shape, bool)
    for name_, lab in labels.items():
        ids = [h["id"] for h in hotspots if h["map"] == name_ and h["class"] == "immune-excluded"]
        excluded |= np.isin(lab, ids)
    row["excluded_area_fraction"] = float((excluded & tissue).sum() / max(int(tissue.sum()), 1))
    return row


def run_sample(sample: Sample, config: PipelineConfig, out: Path, *, scheduler: Any = None,
               resume: bool = False, storage_options: Mapping[str, Any] | None = None,
               progress: bool = False, cells_pixel_size_um: float | None = None
               ) -> dict[str, Any]:
    """Convert one sample, find its hotspots (when it has cells) and write its report.

    Returns the sample's cohort row. ``out`` is ``OUTPUT/NAME``; ``sample.json`` is written
    there last, so a sample without it is incomplete. ``cells_pixel_size_um``: the
    histology pixel size in µm (see :func:`ionmap.regions.read_cells`), so that the QuPath
    GeoJSON of µm cells is written in image pixels.
    """
    from .engine import convert
    from .regions import read_cells, run_hotspots, store_maps
    from .report import CLASS_RGB, write_overlays, write_report

    _files.make_dir(out)
    (out / _DONE).unlink(missing_ok=True)
    result = convert(sample.imzml, str(out / "result.zarr"), config.convert,
                     recalibration=config.recalibration, resume=resume, overwrite=not resume,
                     scheduler=scheduler, storage_options=storage_options, progress=progress)
    run = None
    tissue = (_local_copy(sample.tissue_mask, out / "inputs", storage_options)
              if sample.tissue_mask else None)
    if sample.cells:
        method = config.registration.method
        if method == "landmarks" and not sample.landmarks:
            raise InputError(sample.imzml, "the pipeline asks for landmarks and the sample "
                                           f"has no {sample.name}.landmarks.csv")
        inputs = out / "inputs"
        registration = ("auto" if method == "auto" or not sample.landmarks
                        else _local_copy(sample.landmarks, inputs, storage_options))
        cells = read_cells(_local_copy(sample.cells, inputs, storage_options),
                           pixel_size_um=cells_pixel_size_um)
        run = run_hotspots(result, cells, registration, out / "hotspots", config.hotspots,
                           config.immune, model=config.registration.model, colors=CLASS_RGB,
                           **({"tissue_mask": tissue} if tissue else {}))
        write_overlays(result, out / "hotspots")
    else:
        store_maps(result, config.hotspots.maps, noise_floor=config.hotspots.noise_floor,
                   normalisation=config.hotspots.normalisation,
                   tissue_mask=tissue or config.hotspots.tissue_mask)
    write_report(out / "report.html", result)
    if run is not None:
        px = run.params["pixel_size_um"]
        row = cohort_row(sample.name, run.hotspots, run.labels, run.tissue, px[0] * px[1] * 1e-6)
    else:
        row = {"sample": sample.name}
    _files.write_atomic(out / _DONE, json.dumps({"complete": True, "cohort": row}))
    return row


def _describe(row: Mapping[str, Any]) -> str:
    """One line of a sample's cohort row: hotspots per class."""
    if "n_hotspots" not in row:
        return "converted (no cells: immune context not assessed)"
    classes = ", ".join(f"{v} {k[2:].replace('_', '-')}" for k, v in row.items()
                        if k.startswith("n_") and k != "n_hotspots" and v)
    return f"{row['n_hotspots']} hotspot(s)" + (f": {classes}" if classes else "")


def run_pipeline(config: PipelineConfig | str | os.PathLike, input_dir: str,
                 output_dir: str | os.PathLike, *, scheduler: Any = None, resume: bool = False,
                 storage_options: Mapping[str, Any] | None = None, progress: bool = False,
                 cells_pixel_size_um: float | None = None,
                 echo: Callable[[str], None] = print) -> list[SampleOutcome]:
    """Run a pipeline over every sample of ``input_dir``; write ``summary.csv`` and
    ``cohort.csv`` to ``output_dir`` (a local folder).

    A sample that fails is recorded with its error and the others go on. With ``resume``,
    complete samples are skipped and interrupted ones finished. The scheduler is connected
    to once, before the first sample: an unreachable one is a StorageError up front, not a
    failure of every sample. ``cells_pixel_size_um``: see :func:`run_sample`.
    """
    from .engine import check_scheduler, resolve_targets, scheduler_client

    if not isinstance(config, PipelineConfig):
        config = load_config(config)
    if config.convert.targets is not None:  # a bad targets CSV fails once, not per sample
        resolve_targets(None, config.convert.targets, None, storage_options)
    check_scheduler(scheduler)
    samples = discover_samples(str(input_dir), storage_options)
    out = Path(output_dir)
    _files.make_dir(out)
    with scheduler_client(scheduler) as client:
        outcomes = [_run_or_record(sample, i, len(samples), config, out, scheduler=client,
                                   resume=resume, storage_options=storage_options,
                                   progress=progress, cells_pixel_size_um=cells_pixel_size_um,
                                   echo=echo)
                    for i, sample in enumerate(samples, 1)]
    _write_summaries(out, outcomes)
    return outcomes


def _run_or_record(sample: Sample, i: int, n: int, config: PipelineConfig, out: Path, *,
                   resume: bool, echo: Callable[[str], None], **kwargs: Any) -> SampleOutcome:
    """Sample ``i`` of ``n`` through :func:`run_sample`: skipped when complete and
    ``resume``; a failure is recorded (``OUTPUT/NAME/error.txt``), never raised."""
    echo(f"[{i}/{n}] {sample.name}")
    done = out / sample.name / _DONE
    t0 = time.perf_counter()
    if resume and done.exists():
        echo("  complete, skipped")
        return SampleOutcome(sample.name, "skipped", 0.0,
                             cohort=json.loads(done.read_text())["cohort"])
    try:
        row = run_sample(sample, config, out / sample.name, resume=resume, **kwargs)
    except Exception as exc:  # a bad sample never stops the others
        message = (str(exc) if isinstance(exc, IonmapError)
                   else f"{type(exc).__name__}: {exc}")
        outcome = SampleOutcome(sample.name, "failed", time.perf_counter() - t0,
                                message.splitlines()[0] if message else "")
        _files.write_atomic(out / sample.name / "error.txt", traceback.format_exc())
        echo(f"  failed: {outcome.error}")
        return outcome
    outcome = SampleOutcome(sample.name, "ok", time.perf_counter() - t0, cohort=row)
    echo(f"  {_describe(row)} ({outcome.seconds:.1f} s)")
    return outcome


def _write_summaries(out: Path, outcomes: list[SampleOutcome]) -> None:
    """``summary.csv`` (status of every sample) and ``cohort.csv`` (their cohort rows)."""
    from .regions import write_csv

    write_csv(out / "summary.csv",
              [{"sample": o.name, "status": o.status, "seconds": f"{o.seconds:.2f}",
                "error": o.error} for o in outcomes],
              ["sample", "status", "seconds", "error"])
    rows = [o.cohort for o in outcomes if o.cohort]
    columns = list(dict.fromkeys(k for r in rows for k in r)) or ["sample"]
    write_csv(out / "cohort.csv", rows, columns)


def run_demo(out_dir: str | os.PathLike = "ionmap-demo", *, seed: int = 0,
             overwrite: bool = False, progress: bool = False,
             echo: Callable[[str], None] = print) -> Path:
    """The embedded default job: synthesize a tumour section into ``OUT/input``, run the
    default pipeline (tme-negative panel, landmarks registration, hotspots with CD8 context)
    into ``OUT/output`` and return the path of its ``report.html``. An earlier demo in
    ``OUT`` is an error unless ``overwrite``."""
    from . import synth

    out = Path(out_dir)
    if (out / "output").exists() and not overwrite:
        raise InputError(out, "holds an earlier demo; pass overwrite=True to replace it")
    sample = synth.make_sample(out / "input", "demo", seed=seed, overwrite=overwrite)
    echo(synth.sample_summary(sample))
    outcome = run_pipeline(PipelineConfig("<defaults>"), str(out / "input"), out / "output",
                           progress=progress, echo=echo,
                           cells_pixel_size_um=synth.HISTOLOGY_PIXEL_UM)[0]
    if outcome.status == "failed":
        raise IonmapError(sample.imzml, f"demo failed: {outcome.error}")
    return out / "output" / sample.imzml.stem / "report.html"
