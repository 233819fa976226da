"""The ``ionmap`` command. Thin: parse arguments, call the API, map errors to exit codes.

Exit codes: 0 success, 1 some work failed (bulk runs), 2 bad input or usage (one line on
stderr naming the file and the problem, no traceback), 130 interrupted (Ctrl-C), 143
terminated (SIGTERM). Errors of the Python API name keyword arguments (``overwrite=True``);
the command line shows them as its flags (``--overwrite``).
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import signal
import sys
import threading
import types
import typing
import warnings
from collections.abc import Sequence
from typing import Any

from . import __version__
from .errors import IonmapError
from .params import SECTIONS, HotspotParams, Params, field_help


class _Parser(argparse.ArgumentParser):
    """argparse with usage mistakes in one line (exit 2) that points at ``--help`` instead
    of printing the whole usage; subcommand parsers inherit it."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ionmap",
        description="Spatial metabolomics: imzML to OME-Zarr ion images and immune-excluded "
        "metabolic hotspots.",
    )
    parser.add_argument("--version", action="version", version=f"ionmap {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM, so that it unwinds like Ctrl-C: progress bars
    restore the cursor and an interrupted conversion records the bands it finished."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ionmap`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main else None
    try:
        with warnings.catch_warnings():  # every command: one line per warning, no source
            warnings.showwarning = lambda msg, *a, **k: print(
                f"ionmap: warning: {cli_wording(str(msg))}", file=sys.stderr)
            return int(args.run(args) or 0)
    except IonmapError as exc:
        print(f"ionmap: error: {cli_wording(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        how = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"ionmap: {how}{_resume_hint(args)}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


_KEYWORD = re.compile(r"\b([a-z][a-z0-9_]*)=(?:True|\.\.\.)")


def cli_wording(message: str) -> str:
    """An API error message with keyword arguments (``overwrite=True``,
    ``pixel_size_um=...``) named as the command line's flags (``--overwrite``)."""
    return _KEYWORD.sub(lambda m: "--" + m.group(1).replace("_", "-"), message)


def _resume_hint(args) -> str:
    """What an interrupted command leaves behind and how to finish it."""
    if args.command == "convert":
        return (f"; {args.output} is incomplete (never taken for a finished result): run the "
                "same command with --resume to finish it")
    if args.command == "run":
        return "; run the same command with --resume to finish the remaining samples"
    return ""


# Each command is a pair: _add_NAME(subparsers) declares it and sets ``run`` to _run_NAME.


def _command(sub, name: str, run, help: str, description: str) -> argparse.ArgumentParser:
    """A subcommand ``name`` that calls ``run(args)``."""
    p = sub.add_parser(name, help=help, description=description)
    p.set_defaults(run=run)
    return p


def _stage(p: argparse.ArgumentParser, section: str, *, exclusive: Sequence[str] = ()) -> None:
    """An option for every field of the ``[section]`` parameter object (see
    :data:`ionmap.params.SECTIONS`), in a group of ``--help`` named by the section; the
    fields in ``exclusive`` are mutually exclusive."""
    cls = SECTIONS[section]
    group = p.add_argument_group(f"[{section}] parameters (also a section of a pipeline TOML)")
    either = group.add_mutually_exclusive_group() if exclusive else None
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.metadata["cli"]:
            _param(either if f.name in exclusive else group, cls, f.name)


def _param(p, cls: type[Params], name: str) -> None:
    """The option of field ``name`` of a parameter object: flag (``--name-with-dashes``
    unless the field names one), default, type, choices, metavar and help all from the
    field (see :func:`ionmap.params.param`). A field that may be None takes ``none``; a
    tuple of strings is given comma-separated."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    hint = typing.get_type_hints(cls, localns={"Target": object})[name]
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    args = [a for a in typing.get_args(hint) if a is not type(None)] if union else [hint]
    optional = len(args) < len(typing.get_args(hint))
    kind, help = args[0], field_help(cls, name)
    kwargs: dict[str, Any] = {"dest": name, "default": f.default}
    if hint is bool:
        kwargs["action"] = "store_false" if f.default else "store_true"
    elif typing.get_origin(kind) is typing.Literal:
        kwargs["choices"] = typing.get_args(kind)
    elif typing.get_origin(kind) is tuple:
        kwargs["type"] = _text_to(_comma_list, optional)
        help = "comma-separated " + help
    elif kind in (int, float, str):
        kwargs["type"] = _text_to(kind, optional)
    kwargs["help"] = help.replace("%", "%%")
    if f.metadata["metavar"]:
        kwargs["metavar"] = f.metadata["metavar"]
    p.add_argument(f.metadata["flag"] or "--" + name.replace("_", "-"), **kwargs)


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip())


def _text_to(kind, optional: bool):
    """An argparse ``type``: ``kind(text)``, and ``none`` for None where the field allows it
    (argparse names ``kind`` when it raises ValueError)."""
    if not optional:
        return kind

    def convert(text: str):
        return None if text.lower() == "none" else kind(text)
    convert.__name__ = getattr(kind, "__name__", "value").lstrip("_")
    return convert


def _params(section: str, args: argparse.Namespace) -> Any:
    """The parameter object of ``[section]`` from the options that :func:`_stage` declared."""
    cls = SECTIONS[section]
    return cls(**{n: getattr(args, n) for n in cls.names() if hasattr(args, n)})


def _switch(p: argparse.ArgumentParser, flag: str, help: str) -> None:
    """An on/off option, off unless given."""
    p.add_argument(flag, action="store_true", help=help)


def _add_result(p: argparse.ArgumentParser) -> None:
    p.add_argument("result", metavar="RESULT.zarr", help="result store (path or s3:// URL)")


def _add_storage_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--storage-option", action="append", metavar="KEY=VALUE",
                   help=f"fsspec option for {what}, e.g. endpoint_url=http://127.0.0.1:8333 "
                   "(repeatable; credentials otherwise from the AWS_* variables)")


def _storage_options(args) -> dict | None:
    from ._files import parse_storage_options

    return parse_storage_options(args.storage_option or ()) or None


def _add_scheduler(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheduler", metavar="ADDRESS", help="dask.distributed scheduler "
                   "address with its port (tcp://HOST:8786), or a local scheduler: threads, "
                   "processes, synchronous (default: $DASK_SCHEDULER_ADDRESS, else threads)")


def _add_convert(sub) -> None:
    p = _command(
        sub, "convert", _run_convert, help="imzML -> OME-Zarr ion images (local or s3://, Dask)",
        description="Convert an imzML file (local or s3://, .ibd beside it) to an OME-Zarr "
        "(NGFF 0.5, Zarr v3) store of ion images: one channel per target, each pixel the sum "
        "of its spectrum's intensities with m/z within +-ppm of the target (inclusive).",
    )
    p.add_argument("input", metavar="INPUT", help=".imzML path or s3://bucket/key.imzML")
    p.add_argument("output", metavar="OUTPUT", help="store path or s3://bucket/prefix.zarr")
    _add_scheduler(p)
    p.add_argument("--workers", type=int, metavar="N", help="local threads (default: all cores)")
    _switch(p, "--resume", "continue an interrupted run in OUTPUT, skipping finished bands")
    _switch(p, "--overwrite", "replace an existing result")
    _add_storage_option(p, "s3:// input and output")
    _switch(p, "--quiet", "no progress bar")
    _stage(p, "convert", exclusive=("panel", "targets"))
    _stage(p, "recalibration")


def _run_convert(args) -> int:
    import time

    from . import convert
    options = _storage_options(args)
    start = time.perf_counter()
    result = convert(
        args.input, args.output, _params("convert", args),
        recalibration=_params("recalibration", args), scheduler=args.scheduler,
        workers=args.workers, resume=args.resume, overwrite=args.overwrite,
        storage_options=options, progress=not args.quiet,
    )
    ny, nx = result.shape
    n_features = result.attrs.get("features", {}).get("n_features")
    extra = f", {n_features} features" if n_features is not None else ""
    print(f"{result.url}: {len(result.target_names)} ion images of {ny} x {nx} pixels{extra} "
          f"({time.perf_counter() - start:.1f} s)")
    scored = [t for t in result.targets if t.get("msm") is not None]
    if scored:
        print(f"{'target':<24} {'MSM':>6} {'FDR':>6}  spectral spatial  chaos")
        for t in scored:
            flag = ("" if t["fdr"] <= HotspotParams.annotation_fdr
                    else "  not confidently annotated")
            print(f"{t['name']:<24} {t['msm']:6.3f} {t['fdr']:6.3f}  {t['rho_spectral']:8.3f} "
                  f"{t['rho_spatial']:7.3f} {t['rho_chaos']:6.3f}{flag}")
    checked = [t for t in result.targets if t.get("window_vs_fwhm")]
    if checked:
        from .interference import describe

        print(f"{'target':<24} {'window ppm':>10} {'FWHM ppm':>8}  {'window vs peak':<24} "
              "other ions in the window")
        for t in checked:
            w = t["window_vs_fwhm"]
            fwhm = "-" if w["fwhm_ppm"] is None else f"{w['fwhm_ppm']:.1f}"
            print(f"{t['name']:<24} {w['window_ppm']:10.1f} {fwhm:>8}  {w['verdict']:<24} "
                  f"{describe(t['interferences'])}")
    rec = result.recalibration or {}
    if rec.get("applied"):
        hist = rec.get("histogram", {})
        before, after = (hist.get(f"{k}_median_abs_ppm") for k in ("before", "after"))
        if before is None or after is None:  # no reference measured in any pixel
            print(f"{rec['message']}; no reference ion measured pixel by pixel")
        else:
            print(f"{rec['message']}; median |error| of the reference ions {before} ppm "
                  f"before, {after} ppm after")
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
    p = _command(
        sub, "synth", _run_synth,
        help="write a synthetic tumour section (imzML, cells, landmarks, truth)",
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
    _switch(p, "--overwrite", "replace the files of an earlier sample NAME in OUTDIR")
    p.add_argument("--drift-ppm", type=float, default=0.0, metavar="PPM",
                   help="calibration error added to every peak (default 0)")
    p.add_argument("--drift-gradient-ppm", type=float, default=0.0, metavar="PPM",
                   help="calibration gradient: change of the error from one edge of the "
                   "grid to the other, seeded direction (default 0)")


def _run_synth(args) -> int:
    import time

    from . import synth

    start = time.perf_counter()
    sample = synth.make_sample(
        args.outdir, args.name, seed=args.seed, mode=args.mode,
        spectrum_type=args.spectrum_type, mz_dtype=args.mz_dtype,
        intensity_dtype=args.intensity_dtype, polarity=args.polarity, shape=args.shape,
        pixel_size_um=args.pixel_size, cells_format=args.cells_format,
        target_bytes=args.size, off_tissue=args.off_tissue, overwrite=args.overwrite,
        drift_ppm=args.drift_ppm, drift_gradient_ppm=args.drift_gradient_ppm,
    )
    print(synth.sample_summary(sample))
    print(f"({time.perf_counter() - start:.1f} s)")
    return 0


def _add_demo(sub) -> None:
    p = _command(
        sub, "demo", _run_demo, help="the whole job on a synthetic tumour section, with a report",
        description="Synthesize a tumour section with planted metabolic niches and immune "
        "cells into DIR/input, convert it, find immune-excluded metabolic hotspots and "
        "write DIR/output/demo/report.html.",
    )
    p.add_argument("--out", default="ionmap-demo", metavar="DIR",
                   help="output folder (default ./ionmap-demo)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _switch(p, "--overwrite", "replace an earlier demo in DIR")
    _switch(p, "--quiet", "no progress bars")


def _run_demo(args) -> int:
    from .pipeline import run_demo

    report = run_demo(args.out, seed=args.seed, overwrite=args.overwrite,
                      progress=not args.quiet)
    print(f"report: {report.resolve()}")
    return 0


def _add_hotspots(sub) -> None:
    p = _command(
        sub, "hotspots", _run_hotspots,
        help="metabolic hotspots and their immune context (CD8 exclusion)",
        description="Find hotspots of metabolite maps of a result (clusters of local "
        "contrast over several scales in the tissue, each tested against surrogate maps "
        "with the map's own spatial "
        "autocorrelation; Benjamini-Hochberg q-values over the clusters of all maps) and "
        "classify each significant one as inflamed, immune-excluded or immune-desert from "
        "the cell densities inside, in a rim outside its edge and in the rest of the "
        "annotated tissue, with exact Poisson rate-ratio intervals; undetermined (with the "
        "reason) when the evidence is too weak or the hotspot lies outside the annotated "
        "region. "
        "Writes hotspots.csv, cell_densities.csv, "
        "distance_curves.csv, hotspots.geojson (QuPath annotations, annotation frame), "
        "hotspots_msi.geojson (MSI pixels), registration.json and a PNG per map into "
        "--out, and the hotspot labels into the result store.",
    )
    _add_result(p)
    p.add_argument("--cells", required=True, metavar="FILE",
                   help="cells: CSV/TSV (plain x,y,cell_type; QuPath; inForm; MCMICRO), "
                   "QuPath GeoJSON, or a label-mask TIFF (with --class-table)")
    reg = p.add_mutually_exclusive_group(required=True)
    reg.add_argument("--landmarks", metavar="CSV",
                     help="landmarks msi_x,msi_y,x,y (MSI pixel 0-based -> annotation frame)")
    reg.add_argument("--register", choices=("auto",),
                     help="auto: estimate rotation, scale and shift from the tissue and the "
                     "cell density, without landmarks")
    p.add_argument("--annotated-region", metavar="FILE",
                   help="where cells were annotated: GeoJSON polygons (histology pixels) or "
                   "a TIFF mask (MSI grid or histology pixels); hotspots outside it are "
                   "undetermined (default: the annotations of a QuPath cells GeoJSON, else "
                   "the hull of the cells)")
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
    _switch(p, "--no-labels", "do not write hotspot labels into the result store")
    _switch(p, "--no-png", "skip the PNG overlays (drawn from the stored labels, so "
            "--no-labels skips them too)")
    _add_storage_option(p, "an s3:// result")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    _stage(p, "registration")
    _stage(p, "hotspots")
    _stage(p, "immune")


def _run_hotspots(args) -> int:
    from . import regions
    from .regions import run_summary
    from .report import CLASS_RGB, write_overlays
    options = _storage_options(args)
    cells = regions.read_cells(args.cells, units=args.cells_units,
                               pixel_size_um=args.cells_pixel_size_um,
                               phenotype_column=args.phenotype_column,
                               class_table=args.class_table)
    run = regions.run_hotspots(
        args.result, cells, args.landmarks or args.register, args.out,
        _params("hotspots", args), _params("immune", args), model=args.model,
        annotated_region=args.annotated_region, pixel_size_um=args.pixel_size_um,
        write_labels=not args.no_labels, colors=CLASS_RGB, storage_options=options,
    )
    if not args.no_png and not args.no_labels:
        run.files += write_overlays(args.result, args.out, storage_options=options)
    print(run_summary(run))
    return 0


def _add_info(sub) -> None:
    p = _command(
        sub, "info", _run_info, help="metadata of an imzML file",
        description="Read and validate an imzML file (local or s3://, .ibd beside it) and "
        "print its metadata: spectra, pixel grid (ny x nx), storage mode, spectrum type "
        "(detected when the file does not declare it), dtypes, polarity, pixel size in um, "
        "UUID and m/z range.",
    )
    p.add_argument("file", metavar="FILE", help=".imzML path or s3://bucket/key.imzML")
    _switch(p, "--json", "print one JSON object")
    _switch(p, "--no-cache", "parse the XML even if a metadata sidecar exists, and write none")
    _add_storage_option(p, "s3:// input")


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
    p = _command(
        sub, "run", _run_run, help="run a pipeline config over a folder of samples",
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
    _switch(p, "--resume", "skip complete samples and finish interrupted ones")
    _add_storage_option(p, "an s3:// input folder")
    _switch(p, "--quiet", "no progress bars")


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


def _add_export(sub) -> None:
    p = _command(
        sub, "export", _run_export, help="AnnData tables of a result for scanpy/squidpy",
        description="Export a result store as AnnData (.h5ad): --anndata writes pixels x "
        "ion images (obs: x, y, tic, tissue, hotspot ids; var: target metadata; "
        "obsm['spatial'] in um); --cells-table writes cells x ion images, each cell given "
        "the value of the MSI pixel it falls in, with its type and, per map, hotspot id, "
        "class and compartment (inside, rim, outside; needs ionmap hotspots first).",
    )
    _add_result(p)
    p.add_argument("--anndata", metavar="OUT.h5ad", help="pixels x ion images")
    _switch(p, "--features", "--anndata: pixels x the feature cube instead of the ion images")
    p.add_argument("--cells-table", metavar="OUT.h5ad", help="cells x ion images")
    _add_storage_option(p, "an s3:// result")


def _run_export(args) -> int:
    from .errors import InputError
    from .report import scverse

    if not (args.anndata or args.cells_table):
        raise InputError(args.result, "nothing to export: give --anndata and/or "
                         "--cells-table")
    options = _storage_options(args)
    if args.anndata:
        adata = scverse.pixel_table(args.result, features=args.features,
                                    storage_options=options)
        path = scverse.write_h5ad(adata, args.anndata)
        print(f"{path}: {adata.n_obs} pixels x {adata.n_vars} "
              f"{'features' if args.features else 'ion images'}")
    if args.cells_table:
        adata = scverse.cell_table(args.result, storage_options=options)
        path = scverse.write_h5ad(adata, args.cells_table)
        print(f"{path}: {adata.n_obs} cells x {adata.n_vars} ion images")
    return 0


_COMMANDS: tuple = (_add_convert, _add_synth, _add_demo, _add_hotspots, _add_info, _add_run,
                    _add_export)

if __name__ == "__main__":
    sys.exit(main())
