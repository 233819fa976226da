"""The ``ionmap`` command. Thin: parse arguments, call the API, map errors to exit codes.

Exit codes: 0 success, 1 some work failed (bulk runs), 2 bad input or usage (one line on
stderr naming the file and the problem, no traceback).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .errors import IonmapError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ionmap",
        description="Spatial metabolomics: imzML to OME-Zarr ion images and immune-excluded "
        "metabolic hotspots.",
    )
    parser.add_argument("--version", action="version", version=f"ionmap {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ionmap`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except IonmapError as exc:
        print(f"ionmap: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ionmap: interrupted", file=sys.stderr)
        return 130


# Each command is a pair: _add_NAME(subparsers) declares it and sets ``run`` to _run_NAME.


def _add_storage_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--storage-option", action="append", metavar="KEY=VALUE",
                   help=f"fsspec option for {what}, e.g. endpoint_url=http://127.0.0.1:8333 "
                   "(repeatable; credentials otherwise from the AWS_* variables)")


def _storage_options(args) -> dict | None:
    from .storage import parse_storage_options

    return parse_storage_options(args.storage_option or ()) or None


def _add_scheduler(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheduler", metavar="ADDRESS", help="dask.distributed scheduler "
                   "address (default: $DASK_SCHEDULER_ADDRESS, else local threads)")


def _add_convert(sub) -> None:
    p = sub.add_parser(
        "convert", help="imzML -> OME-Zarr ion images (local or s3://, Dask)",
        description="Convert an imzML file (local or s3://, .ibd beside it) to an OME-Zarr "
        "(NGFF 0.5, Zarr v3) store of ion images: one channel per target, each pixel the sum "
        "of its spectrum's intensities with m/z within +-ppm of the target (inclusive).",
    )
    p.add_argument("input", metavar="INPUT", help=".imzML path or s3://bucket/key.imzML")
    p.add_argument("output", metavar="OUTPUT", help="store path or s3://bucket/prefix.zarr")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--panel", help="built-in panel: tme-negative or tme-positive "
                       "(default: the one matching the file's polarity)")
    which.add_argument("--targets", metavar="CSV", help="targets CSV: name and mz, or name, "
                       "formula and adduct; optional ppm and group")
    p.add_argument("--ppm", type=float, default=10.0,
                   help="window half-width in ppm for targets without their own (default 10)")
    p.add_argument("--peaks", action="store_true",
                   help="sum picked peaks instead of raw profile points")
    p.add_argument("--snr", type=float, default=3.0,
                   help="peak-picking signal-to-noise threshold (default 3)")
    p.add_argument("--features", action="store_true", help="also build the dataset-wide "
                   "m/z axis and write the feature cube")
    p.add_argument("--normalize", choices=("none", "tic", "rms"), default="none",
                   help="divide each pixel by its TIC or RMS, times the median over pixels "
                   "(default none)")
    _add_scheduler(p)
    p.add_argument("--workers", type=int, metavar="N", help="local threads (default: all cores)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in OUTPUT, skipping finished bands")
    p.add_argument("--overwrite", action="store_true", help="replace an existing result")
    _add_storage_option(p, "s3:// input and output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_convert)


def _run_convert(args) -> int:
    import time
    import warnings

    from . import convert
    options = _storage_options(args)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.showwarning = lambda msg, *a, **k: print(f"ionmap: warning: {msg}",
                                                          file=sys.stderr)
        result = convert(
            args.input, args.output, panel=args.panel, targets=args.targets, ppm=args.ppm,
            peaks=args.peaks, features=args.features, normalize=args.normalize,
            scheduler=args.scheduler, workers=args.workers, resume=args.resume,
            overwrite=args.overwrite, storage_options=options, progress=not args.quiet,
            snr=args.snr,
        )
    ny, nx = result.shape
    n_features = result.attrs.get("features", {}).get("n_features")
    extra = f", {n_features} features" if n_features is not None else ""
    print(f"{result.url}: {len(result.target_names)} ion images of {ny} x {nx} pixels{extra} "
          f"({time.perf_counter() - start:.1f} s)")
    return 0


def _synth_arg(parse):
    """An argparse ``type`` calling a parser of :mod:`ionmap.synth` (imported lazily)."""
    def convert(text: str):
        from . import synth

        try:
            return getattr(synth, parse)(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = parse
    return convert


def _add_synth(sub) -> None:
    p = sub.add_parser(
        "synth", help="write a synthetic tumour section (imzML, cells, landmarks, truth)",
        description="Write a synthetic MALDI-MSI tumour section into OUTDIR: NAME.imzML + "
        ".ibd (pyimzML writer; tissue pixels only), NAME.cells.csv (x,y,cell_type in um) or "
        "NAME.cells.geojson (QuPath cells, histology pixels), NAME.landmarks.csv "
        "(msi_x,msi_y,x,y) and NAME.truth.json (planted niches, immune classes, transform).",
    )
    p.add_argument("outdir", metavar="OUTDIR", help="folder to write into (created if missing)")
    p.add_argument("--name", default="sample", help="file name stem (default sample)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--mode", choices=("processed", "continuous"), default="processed",
                   help="imzML storage mode (default processed)")
    p.add_argument("--type", dest="spectrum_type", choices=("profile", "centroid"),
                   default="profile", help="spectrum type (default profile)")
    p.add_argument("--mz-dtype", choices=("float32", "float64"), default="float64",
                   help="m/z array type (default float64)")
    p.add_argument("--intensity-dtype", choices=("float32", "float64"), default="float32",
                   help="intensity array type (default float32)")
    p.add_argument("--polarity", choices=("negative", "positive"), default="negative",
                   help="ion mode and panel: tme-negative or tme-positive (default negative)")
    p.add_argument("--shape", type=_synth_arg("parse_shape"), default=(60, 80),
                   metavar="NYxNX", help="grid in pixels (default 60x80)")
    p.add_argument("--pixel-size", type=float, default=25.0, metavar="UM",
                   help="pixel size in um (default 25)")
    p.add_argument("--size", type=_synth_arg("parse_size"), default=None,
                   help="benchmark file: grow the grid until the .ibd reaches this size, "
                   "e.g. 1.5GB (continuous profile spectra then carry ~1000 ions)")
    p.add_argument("--cells-format", choices=("csv", "geojson"), default="csv",
                   help="cell annotations as plain CSV in um or QuPath GeoJSON (default csv)")
    p.add_argument("--off-tissue", choices=("absent", "matrix"), default="absent",
                   help="pixels off the tissue: no spectrum, or matrix-only spectra "
                   "(default absent)")
    p.set_defaults(run=_run_synth)


def _run_synth(args) -> int:
    import time

    from . import synth

    start = time.perf_counter()
    sample = synth.make_sample(
        args.outdir, args.name, seed=args.seed, mode=args.mode,
        spectrum_type=args.spectrum_type, mz_dtype=args.mz_dtype,
        intensity_dtype=args.intensity_dtype, polarity=args.polarity, shape=args.shape,
        pixel_size_um=args.pixel_size, cells_format=args.cells_format,
        target_bytes=args.size, off_tissue=args.off_tissue,
    )
    print(synth.summary(sample))
    print(f"({time.perf_counter() - start:.1f} s)")
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo", help="the whole job on a synthetic tumour section, with a report",
        description="Synthesize a tumour section with planted metabolic niches and immune "
        "cells into DIR/input, convert it, find immune-excluded metabolic hotspots and "
        "write DIR/output/demo/report.html.",
    )
    p.add_argument("--out", default="ionmap-demo", metavar="DIR",
                   help="output folder (default ./ionmap-demo)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=_run_demo)


def _run_demo(args) -> int:
    from .pipeline import run_demo

    report = run_demo(args.out, seed=args.seed, progress=not args.quiet)
    print(f"report: {report.resolve()}")
    return 0


def _add_hotspots(sub) -> None:
    p = sub.add_parser(
        "hotspots", help="metabolic hotspots and their immune context (CD8 exclusion)",
        description="Find hotspots of metabolite maps of a result (Getis-Ord Gi* in the "
        "tissue, Benjamini-Hochberg FDR, connected regions) and classify each as inflamed, "
        "immune-excluded or immune-desert from the cell densities inside, in a rim outside "
        "its edge and in the rest of the annotated tissue, with exact Poisson rate-ratio "
        "intervals; undetermined (with the reason) when the evidence is too weak, the "
        "hotspot lies outside the annotated region or is not significant. "
        "Writes hotspots.csv, cell_densities.csv, "
        "distance_curves.csv, hotspots.geojson (QuPath annotations, annotation frame), "
        "hotspots_msi.geojson (MSI pixels), registration.json and a PNG per map into "
        "--out, and the hotspot labels into the result store.",
    )
    p.add_argument("result", metavar="RESULT.zarr", help="result store (path or s3:// URL)")
    p.add_argument("--cells", required=True, metavar="FILE",
                   help="cells: CSV/TSV (plain x,y,cell_type; QuPath; inForm; MCMICRO), "
                   "QuPath GeoJSON, or a label-mask TIFF (with --class-table)")
    reg = p.add_mutually_exclusive_group(required=True)
    reg.add_argument("--landmarks", metavar="CSV",
                     help="landmarks msi_x,msi_y,x,y (MSI pixel 0-based -> annotation frame)")
    reg.add_argument("--register", choices=("auto",),
                     help="auto: estimate rotation, scale and shift from the tissue and the "
                     "cell density, without landmarks")
    p.add_argument("--model", choices=("similarity", "affine"), default="similarity",
                   help="landmark transform model (default similarity)")
    p.add_argument("--maps", type=lambda t: [m.strip() for m in t.split(",") if m.strip()],
                   metavar="LIST", help="comma-separated maps: channel names, ratios A/B, "
                   "groups and presets kyn_trp, glu_gln, akg_succ, amp_atp, lipids (default: "
                   "those of lactate,kynurenine,kyn_trp,lipids the result allows)")
    p.add_argument("--cell-type", default="CD8", help="cell type whose exclusion is "
                   "assessed (default CD8)")
    p.add_argument("--rim-um", type=float, default=60.0,
                   help="rim width outside a hotspot's edge, um (default 60)")
    p.add_argument("--fdr", type=float, default=0.05,
                   help="Benjamini-Hochberg false discovery rate over pixels (default 0.05)")
    p.add_argument("--min-area-px", type=int, default=9, metavar="N",
                   help="smallest hotspot in pixels (default 9)")
    p.add_argument("--radius-px", type=int, default=1, metavar="R",
                   help="Gi* window: (2R+1)^2 pixels (default 1)")
    p.add_argument("--extent", type=float, default=0.5, help="trim each hotspot to pixels "
                   "at least this fraction of the way from the tissue median to its peak "
                   "(default 0.5, the half-maximum)")
    p.add_argument("--noise-floor", type=float, default=0.1, help="ratio maps: mask pixels "
                   "whose denominator is below this fraction of its tissue median (default 0.1)")
    p.add_argument("--scarce-ratio", type=float, default=0.5, help="the cell type is "
                   "scarce inside below this fraction of its tissue density (default 0.5)")
    p.add_argument("--rim-ratio", type=float, default=0.5, help="the cell type is present "
                   "at the rim from this fraction of its tissue density (default 0.5)")
    p.add_argument("--edge-guard-um", type=float, default=None, metavar="UM",
                   help="band inside the edge left out of the inside density (default half "
                   "an MSI pixel)")
    p.add_argument("--annotated-region", metavar="FILE",
                   help="where cells were annotated: GeoJSON polygons (histology pixels) or "
                   "a TIFF mask (MSI grid or histology pixels); hotspots outside it are "
                   "undetermined (default: the annotations of a QuPath cells GeoJSON, else "
                   "the hull of the cells)")
    p.add_argument("--min-expected", type=float, default=5.0, metavar="N",
                   help="undetermined when fewer cells of the type are expected inside (or "
                   "at the rim) under the tissue rate (default 5)")
    p.add_argument("--confidence", type=float, default=0.9,
                   help="confidence of the rate-ratio intervals that decide a class "
                   "(default 0.9: each one-sided call errs at most 5%%)")
    p.add_argument("--permutations", type=int, default=999, metavar="N",
                   help="permutations for the exclusion p-value (default 999)")
    p.add_argument("--seed", type=int, default=0, help="permutation seed (default 0)")
    p.add_argument("--cells-units", choices=("um", "px"), help="unit of the cell "
                   "coordinates (default: from the format; plain CSV is um)")
    p.add_argument("--cells-pixel-size-um", type=float, metavar="UM",
                   help="histology pixel size in um (cells in px; GeoJSON output in px)")
    p.add_argument("--phenotype-column", metavar="NAME",
                   help="cell table column holding the cell type (default: auto-detected)")
    p.add_argument("--class-table", metavar="CSV",
                   help="label mask: CSV of label value -> class")
    p.add_argument("--pixel-size-um", type=float, metavar="UM",
                   help="MSI pixel size in um when the result does not record it")
    p.add_argument("--no-labels", action="store_true",
                   help="do not write hotspot labels into the result store")
    p.add_argument("--no-png", action="store_true", help="skip the PNG overlays")
    _add_storage_option(p, "an s3:// result")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(run=_run_hotspots)


def _run_hotspots(args) -> int:
    from . import regions
    options = _storage_options(args)
    cells = regions.read_cells(args.cells, units=args.cells_units,
                               pixel_size_um=args.cells_pixel_size_um,
                               phenotype_column=args.phenotype_column,
                               class_table=args.class_table)
    run = regions.run_hotspots(
        args.result, cells, args.landmarks or args.register, args.out, maps=args.maps,
        cell_type=args.cell_type, rim_um=args.rim_um, fdr=args.fdr,
        min_area_px=args.min_area_px, radius_px=args.radius_px, extent=args.extent,
        noise_floor=args.noise_floor, scarce_ratio=args.scarce_ratio,
        rim_ratio=args.rim_ratio, edge_guard_um=args.edge_guard_um,
        n_permutations=args.permutations, seed=args.seed, model=args.model,
        annotated_region=args.annotated_region, min_expected=args.min_expected,
        confidence=args.confidence,
        pixel_size_um=args.pixel_size_um, write_labels=not args.no_labels,
        overlays=not args.no_png, storage_options=options,
    )
    print(regions.summary(run))
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser(
        "info", help="metadata of an imzML file",
        description="Read and validate an imzML file (local or s3://, .ibd beside it) and "
        "print its metadata: spectra, pixel grid (ny x nx), storage mode, spectrum type "
        "(detected when the file does not declare it), dtypes, polarity, pixel size in um, "
        "UUID and m/z range.",
    )
    p.add_argument("file", metavar="FILE", help=".imzML path or s3://bucket/key.imzML")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-cache", action="store_true",
                   help="parse the XML even if a metadata sidecar exists, and write none")
    _add_storage_option(p, "s3:// input")
    p.set_defaults(run=_run_info)


def _run_info(args) -> int:
    import json

    from .imzml import open_imzml
    options = _storage_options(args)
    with open_imzml(args.file, options, cache=not args.no_cache) as f:
        info = f.summary()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    def show(key: str, value) -> str:
        if value is None:
            return "-"
        if key == "shape":
            return f"{value[0]} x {value[1]} pixels (ny x nx)"
        if key == "pixel_size_um":
            return f"{value[0]:g} x {value[1]:g} um (x, y)"
        if key == "mz_range":
            return f"{value[0]:.4f} - {value[1]:.4f}"
        if key == "ibd_size":
            return f"{value:,} bytes"
        if key == "spectrum_type" and info["spectrum_type_detected"]:
            return f"{value} (detected; not declared in the file)"
        return str(value)

    table = Table(title=info["file"], show_header=False, title_justify="left")
    for key, value in info.items():
        if key not in ("file", "spectrum_type_detected"):
            table.add_row(key, show(key, value))
    Console().print(table)
    return 0


def _add_run(sub) -> None:
    p = sub.add_parser(
        "run", help="run a pipeline config over a folder of samples",
        description="Apply a TOML pipeline (see pipelines/) to every NAME.imzML (+ .ibd, "
        "optional NAME.cells.csv or NAME.cells.geojson and NAME.landmarks.csv) in --input "
        "(a folder or s3:// prefix). Writes OUTPUT/NAME/ (result.zarr, hotspots/, "
        "report.html) per sample, summary.csv and cohort.csv. A failing sample is recorded "
        "and the others go on; exit code 1 when any sample failed.",
    )
    p.add_argument("config", metavar="CONFIG", help="pipeline TOML, e.g. pipelines/tme-negative.toml")
    p.add_argument("--input", required=True, metavar="DIR", help="sample folder or s3:// prefix")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder (local)")
    _add_scheduler(p)
    p.add_argument("--resume", action="store_true",
                   help="skip complete samples and finish interrupted ones")
    _add_storage_option(p, "an s3:// input folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=_run_run)


def _run_run(args) -> int:
    from .pipeline import run_pipeline
    outcomes = run_pipeline(args.config, args.input, args.output, scheduler=args.scheduler,
                            resume=args.resume,
                            storage_options=_storage_options(args),
                            progress=not args.quiet)
    failed = [o for o in outcomes if o.status == "failed"]
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} samples complete; "
          f"summary in {args.output}/summary.csv")
    return 1 if failed else 0


_COMMANDS: tuple = (_add_convert, _add_synth, _add_demo, _add_hotspots, _add_info, _add_run)

if __name__ == "__main__":
    sys.exit(main())
