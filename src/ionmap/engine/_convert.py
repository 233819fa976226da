"""``ionmap.convert``: an imzML file to an OME-Zarr result store of ion images.

The work runs as Dask tasks, one per spatial band of image rows (see
:mod:`ionmap.engine._plan`); each task reads its spectra with coalesced range reads, runs the
compiled kernels and writes whole shards. The driver records finished bands in the store so
that an interrupted run can resume, and writes ``complete: true`` last.

Features picked from profile spectra into a local store take one pass over the imzML: the
band height depends on the number of features, so pass 1 runs over units of rows chosen
without them, reads and picks each spectrum once, spills what the bands need (window sums,
TIC, normaliser, mass errors, picked peaks; :mod:`ionmap.store._spill`) and feeds the axis;
each band then reads the one or two units its rows overlap. Object stores keep two passes
(the axis from the imzML, then the bands from it again).
"""
from __future__ import annotations

import os
import uuid as uuidlib
import warnings
from collections.abc import Mapping, Sequence
from concurrent import futures
from dataclasses import replace
from typing import Any

import dask
import numpy as np

from .. import __version__, annotate, chem, interference, kernels, recal
from .. import store as st
from .._files import open_input
from ..errors import InputError, IonmapError, IonmapWarning, StorageError
from ..kernels import MzAxisBuilder
from ..params import ConvertParams, RecalibrationParams, split_overrides, with_overrides
from ..store import Layout, Result, level_shapes, open_result
from ._compute import (
    Extraction,
    axis_part,
    compute_band,
    spill_unit,
    spilled_axis_part,
    spilled_band,
    window_bounds,
)
from ._plan import Band, choose_band_rows, plan_bands
from ._run import ProgressBar, check_scheduler, n_threads, run_tasks, scheduler_client
from ._spectrum import mean_spectrum

#: Spectrum payload per task of the m/z-axis pass (bytes).
AXIS_TASK_BYTES = 256 * 2**20


def convert(
    input: str | os.PathLike,
    output: str | os.PathLike,
    params: ConvertParams | None = None,
    *,
    recalibration: RecalibrationParams | None = None,
    scheduler: Any = None,
    workers: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    output_storage_options: Mapping[str, Any] | None = None,
    progress: bool = False,
    **overrides: Any,
) -> Result:
    """Convert an imzML file to ion images in an OME-Zarr (NGFF 0.5, Zarr v3) store.

    What is extracted is a :class:`~ionmap.params.ConvertParams` (``params``), with any of
    its fields (or of :class:`~ionmap.params.RecalibrationParams`) given as keywords
    replacing its values (``convert(a, b, ppm=5, recalibrate="none")``), e.g.:

    - ``panel`` / ``targets``: a built-in panel (default: the one matching the file's
      polarity), or a list of :class:`ionmap.chem.Target` or a targets CSV path;
    - ``ppm``: window half-width in ppm for targets without their own. A pixel's value is
      the sum of the intensities of its spectrum's points with m/z in
      [mz·(1 − ppm·1e-6), mz·(1 + ppm·1e-6)] (inclusive);
    - ``peaks`` / ``snr``: sum picked peaks instead of raw points (profile spectra);
    - ``features``: also build a dataset-wide m/z axis from picked peaks (of up to
      ``axis_sample`` spectra, keeping features seen in at least ``min_fraction`` of
      them) and write the feature cube (peaks binned within ``feature_ppm``, default
      ``ppm``, scaled by the ``analyzer`` peak-width law);
    - ``normalize``: 'none'; 'tic': each pixel's values × median TIC / the pixel's TIC;
      'rms': × median RMS / the pixel's RMS (RMS = sqrt(mean of squared intensities));
      medians over pixels with a non-zero normaliser; pixels whose normaliser is 0
      become 0. Applies to ion images and features, not to ``tic``.

    Args:
        input: ``.imzML`` path or URL (``s3://bucket/key.imzML``), the .ibd beside it.
        output: store path or URL (``s3://bucket/prefix.zarr``).
        recalibration: m/z recalibration (:class:`~ionmap.params.RecalibrationParams`):
            ``recalibrate="auto"`` (default; reference ions: the targets with their
            isotopes and the usual matrix ions of the polarity), ``"none"`` (the recorded
            m/z axis; images bit for bit as without recalibration) or the path of a
            lock-mass CSV (targets format; only those ions). The model δ(x, y, m) =
            a(x, y) + b·(m − m0)/1000 ppm (:mod:`ionmap.recal`) moves each spectrum's
            windows before extraction (and the picked peaks of the feature axis and cube);
            with too few reference ions the axis is kept and a warning says so.
        scheduler: None (``DASK_SCHEDULER_ADDRESS`` if set, else local threads), a
            ``distributed`` scheduler address with its port or a Client, or a Dask local
            scheduler name: ``"threads"``, ``"processes"``, ``"synchronous"``.
        workers: local threads (default: all cores).
        resume: continue an interrupted run into the same output, skipping finished bands.
        overwrite: replace an existing result at ``output``.
        storage_options: fsspec options for the input (and the output unless
            ``output_storage_options`` is given), e.g. ``{"endpoint_url": ...}``.
        progress: show a progress bar on stderr (the command line does; library calls
            stay quiet unless asked).

    Returns the opened :class:`ionmap.store.Result`. Bad parameters raise
    :class:`~ionmap.errors.InputError` naming them.
    """
    from ..imzml import open_imzml

    convert_over, recal_over = split_overrides(overrides, ConvertParams, RecalibrationParams)
    p = with_overrides(params, ConvertParams, convert_over)
    rp = with_overrides(recalibration, RecalibrationParams, recal_over)
    recalibrate = os.fspath(rp.recalibrate)
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise InputError(None, f"workers must be at least 1, not {workers}")
    ppm, peaks, features, normalize, snr = p.ppm, p.peaks, p.features, p.normalize, p.snr
    analyzer, feature_ppm, min_fraction = p.analyzer, p.feature_ppm, p.min_fraction
    axis_sample, band_rows = p.axis_sample, p.band_rows
    check_scheduler(scheduler)
    in_url, out_url = os.fspath(input), os.fspath(output)
    out_options = storage_options if output_storage_options is None else output_storage_options
    src = open_imzml(in_url, storage_options=storage_options)
    try:
        target_list, target_source = resolve_targets(p.panel, p.targets, src, storage_options)
        table = target_table(target_list, ppm)
        # windows may move by up to ±search_ppm once recalibrated
        _check_targets(table, src, 0.0 if recalibrate == "none" else rp.search_ppm)
        # a lock-mass list is read before anything is written: a bad path writes nothing
        locks = None if recalibrate in ("auto", "none") else recal.read_lock_masses(
            _read_text(recalibrate, storage_options, "lock masses"), recalibrate)
        pick = src.spectrum_type == "profile" and (peaks or features)
        parameters = {
            "targets_from": target_source, "ppm": float(ppm), "peaks": bool(peaks),
            "features": bool(features), "normalize": normalize,
            "snr": float(snr) if pick else None,
            "feature_ppm": float(feature_ppm or ppm) if features else None,
            "analyzer": analyzer if features else None,
            "min_fraction": float(min_fraction) if features else None,
            "axis_sample": axis_sample if features else None,
            "recalibration": rp.to_dict() if recalibrate != "none" else None,
        }
        source = {
            "path": in_url, "uuid": src.uuid, "size": int(src.ibd_size),
            "n_spectra": int(src.n_spectra), "mode": src.mode,
            "spectrum_type": src.spectrum_type, "polarity": src.polarity,
        }
        store, previous = st.prepare_output(out_url, out_options, resume=resume,
                                            overwrite=overwrite)
        if previous is not None:
            _check_same_run(out_url, previous, source, parameters, table)
            if previous.get("complete"):
                return open_result(out_url, out_options)

        lo, hi = window_bounds([t["mz"] for t in table], [t["ppm"] for t in table])
        ex = Extraction(lo=lo, hi=hi, peaks=bool(peaks), pick=pick, snr=float(snr),
                        feature_ppm=float(feature_ppm or ppm), analyzer=analyzer,
                        normalize=normalize, residual_ppm=rp.residual_ppm,
                        profile=src.spectrum_type != "centroid")
        token = uuidlib.uuid4().hex[:12]  # unique task keys per run
        # One pass over the imzML when features are picked from profile spectra into a
        # local store: pass 1 reads and picks every spectrum once, spills its values and
        # peaks under _work/spill and feeds the axis; the bands then read the spill.
        one_pass = pick and features and st.spill_root(out_url) is not None
        axis_options = dict(ppm=ex.feature_ppm, analyzer=analyzer,
                            min_fraction=float(min_fraction))
        with scheduler_client(scheduler) as client, ProgressBar(progress) as bar:
            src_d = dask.delayed(src, name=f"ionmap-source-{token}", traverse=False)
            # pass 0: recalibration model and lattice, deterministic (a resumed run fits the
            # same model again); first when a feature axis is built on the recalibrated m/z
            pass0 = None
            if features and (previous is None or previous.get("layout") is None):
                pass0 = _calibrate(src, recalibrate, rp, table, locks)
                ex = replace(ex, recal=pass0[0],
                             references=None if pass0[0] is None else pass0[0].ref_mz)
            # otherwise pass 0 runs in a driver thread while the store is laid out (inline
            # with the synchronous scheduler); its errors are raised once the store exists
            calibrating = None if pass0 is not None else _beside(
                client == "sync", lambda: _calibrate(src, recalibrate, rp, table, locks))
            # the mean spectrum needs neither the model nor a band: on the core pass 0 leaves
            spectrum_side = _beside(client == "sync", lambda: mean_spectrum(src))
            try:
                if previous is None or previous.get("layout") is None:
                    axis = None
                    attrs = previous or _root_attrs(source, parameters, table, src)
                    if one_pass:
                        axis = _spill_pass(src, src_d, ex, attrs, store, out_url, out_options, bar,
                                           client, workers, token, axis_sample, axis_options,
                                           band_rows or choose_band_rows(
                                               src.shape, len(table) + 3, int(src.ibd_size)),
                                           fresh=previous is None)
                    elif features:
                        axis = _build_axis(src, src_d, ex, bar, client, workers, token, axis_sample,
                                           axis_options)
                    n_planes = len(table) + 3 + (0 if axis is None else len(axis))
                    rows = band_rows or choose_band_rows(src.shape, n_planes, int(src.ibd_size))
                    layout = Layout(tuple(src.shape), int(rows))
                    attrs["layout"] = _layout_attrs(layout)
                    if axis is not None:
                        attrs["features"] = {"n_features": int(len(axis))}
                    st.create_result(store, attrs, layout, [t["name"] for t in table],
                                     src.pixel_size_um, normalized=normalize != "none", axis=axis,
                                     mass_error=recalibrate != "none", keep_work=one_pass)
                else:
                    attrs = previous
                    layout = Layout(tuple(attrs["shape"]), int(attrs["layout"]["band_rows"]))
                    axis = _stored_axis(out_url, store, attrs) if features else None
                model, attrs["recalibration"], lattice = pass0 or calibrating.result()
            except BaseException:  # the driver threads read the source, closed on leaving
                futures.wait([f for f in (calibrating, spectrum_side) if f is not None])
                raise
            _warn_outside(table, src, model)
            ex = replace(ex, axis=axis, recal=model,
                         references=None if model is None else model.ref_mz)
            # The annotation scores (of the lattice read in pass 0) need no band: a driver
            # thread computes them while the band tasks run (on a cluster the driver is idle
            # meanwhile); inline with the synchronous scheduler.
            side = _beside(client == "sync", lambda: (
                _annotate(src, lattice, model, table, rp, analyzer), spectrum_side.result()))
            checkpoint = st.Checkpoint(store, attrs)
            try:
                _run_bands(src, src_d, ex, layout, checkpoint, out_url, out_options, bar, client,
                           workers, token, attrs["progress"].get("spill_rows"),
                           pyramids=normalize == "none")
            except BaseException:
                futures.wait([side])  # nothing reads the source once convert has returned
                try:  # keep the bands finished so far; report the first failure, not this one
                    checkpoint.flush()
                except StorageError:
                    pass
                raise
            attrs["annotation"], spectrum = side.result()
            checkpoint.flush()
            if "spill_rows" in attrs["progress"]:  # every band is written: the spill goes
                _drop_spill(store, checkpoint, out_url, normalized=normalize != "none")
            if model is not None:
                hist = recal.error_histogram(st.read_mass_error(store))
                attrs["recalibration"]["histogram"] = hist
                before, after = hist["before_median_abs_ppm"], hist["after_median_abs_ppm"]
                if before is not None and after is not None and after > before:
                    warnings.warn(f"{src.url}: the recalibrated m/z axis is further from the "
                                  f"reference ions than the recorded one (median |error| "
                                  f"{before} -> {after} ppm): wrong panel or polarity? "
                                  "(--recalibrate none keeps the recorded axis)", IonmapWarning,
                                  stacklevel=2)
            st.write_mean_spectrum(store, *spectrum)
            _finish(store, layout, checkpoint, out_url, out_options, bar, client, workers, token,
                    features=axis is not None)
        return open_result(out_url, out_options)
    finally:  # the source's file handles; workers reopen their own
        src.close()


def _beside(inline: bool, fn) -> futures.Future:
    """``fn()`` running in a thread of its own (``inline``: run now) as a Future."""
    if not inline:
        pool = futures.ThreadPoolExecutor(1, thread_name_prefix="ionmap-driver")
        running = pool.submit(fn)
        pool.shutdown(wait=False)  # the thread ends with fn
        return running
    done: futures.Future = futures.Future()
    try:
        done.set_result(fn())
    except Exception as exc:  # noqa: BLE001 - raised where the result is taken
        done.set_exception(exc)
    return done


def _stored_axis(url: str, store: Any, attrs: dict) -> np.ndarray:
    try:
        return Result(url, store, attrs).features_mz
    except Exception:  # noqa: BLE001 - interrupted while the store was being created
        raise StorageError(url, "cannot resume: the store was interrupted while being "
                           "created; use overwrite=True to start again") from None


def _calibrate(src, recalibrate: str, rp: RecalibrationParams, table: list[dict],
               locks: recal.References | None
               ) -> tuple[recal.Model | None, dict, tuple[list, int]]:
    """Pass 0: (model or None when the axis is kept, its description, the lattice read:
    its batches and spacing in pixels). ``locks``: the lock masses when ``recalibrate``
    names a lock-mass CSV (read before the store was created)."""
    base = {"method": recalibrate, "applied": False, "model": recal.MODEL}
    coords = src.coordinates
    x, y = coords[:, 0].astype(np.intp) - 1, coords[:, 1].astype(np.intp) - 1
    step = recal.lattice_step(int(src.n_spectra), rp.max_sample)
    chosen = np.flatnonzero((x % step == 0) & (y % step == 0) & (src.intensity_lengths > 0))
    model, message = None, "recalibration: no reference ion in the m/z range; m/z axis " \
        "kept as recorded"
    # the lattice is read once: for the fit and for the annotation scores (bounded memory:
    # about max_sample spectra)
    batches = list(src.iter_batches(chosen, max_bytes=64 * 2**20)) if chosen.size else []
    lattice = (batches, step)
    if recalibrate == "none":
        return None, {**base, "message": "recalibration: off (recalibrate none)"}, lattice
    mz_range = None if src.mz_range is None else tuple(src.mz_range)
    if recalibrate == "auto":
        refs = recal.reference_ions(table, src.polarity, rp.resolving_power, mz_range)
    else:
        refs = locks
    if refs.mz.size and batches:
        # the references and their decoys in one pass over the lattice
        probe = np.concatenate([refs.mz, recal.decoy_masses(refs.mz, rp.search_ppm).ravel()])
        errs = [kernels.reference_errors(b, probe, rp.search_ppm,
                                         profile=src.spectrum_type != "centroid")
                for b in batches]
        err = np.concatenate([e for e, _, _ in errs])
        height = np.concatenate([h for _, h, _ in errs])
        r = refs.mz.size
        model, message = recal.fit_model(err[:, :r], height[:, :r], refs, x[chosen],
                                         y[chosen], tuple(src.shape), step, rp,
                                         err[:, r:], height[:, r:])
    if model is None:
        warnings.warn(f"{src.url}: {message}", IonmapWarning, stacklevel=3)
        return None, {**base, "message": message}, lattice
    return model, {**base, **model.summary(refs), "applied": True, "message": message,
                   "lattice_step": step}, lattice


def _annotate(src, lattice, model: recal.Model | None, table: list[dict],
              rp: RecalibrationParams, analyzer: str = "tof") -> dict:
    """MSM and target–decoy FDR per target on the lattice spectra (:mod:`ionmap.annotate`),
    windows moved by the mass error model like the images'; and per target the other ions
    inside its window and its window against the measured peak FWHM
    (:mod:`ionmap.interference`)."""
    batches, step = lattice
    ions = annotate.build_ions(table, rp.resolving_power)
    info = {"method": "METASPACE-style MSM and target-decoy FDR (ionmap.annotate)",
            "n_decoys": annotate.N_DECOYS, "resolving_power": rp.resolving_power}
    coords = src.coordinates
    target_mz = np.array([t["mz"] for t in table])
    # the peak apex is searched around the model's prediction, else within the drift range
    search = rp.search_ppm if model is None else rp.residual_ppm
    profile = src.spectrum_type != "centroid"
    sums, widths, gy, gx = [], [], [], []
    for b in batches:
        x, y = coords[b.index, 0].astype(np.intp) - 1, coords[b.index, 1].astype(np.intp) - 1
        shift = None if model is None else model.shift_at(x, y)
        if len(ions.target):
            sums.append(kernels.window_sums(b, ions.lo, ions.hi, shift=shift))
        widths.append(kernels.reference_errors(b, target_mz, search, profile=profile,
                                               shift=shift)[2])
        gy.append(y // step)
        gx.append(x // step)
    fwhm, _ = interference.measured_fwhm(
        np.concatenate(widths) if widths else np.empty((0, len(table))), rp.min_presence)
    peak = interference.window_vs_fwhm(table, fwhm, analyzer)
    inside = interference.interferences(table, src.polarity, rp.resolving_power)
    if not sums:  # nothing to score, or no spectrum at all
        rows = annotate.annotate(np.zeros((1, ions.lo.size)), ions,
                                 (np.zeros(1, int), np.zeros(1, int), (1, 1)), table,
                                 annotate.N_DECOYS)
        extra = {"n_spectra": 0}
    else:
        gy, gx = np.concatenate(gy), np.concatenate(gx)
        shape = (int(gy.max()) + 1, int(gx.max()) + 1)
        rows = annotate.annotate(np.concatenate(sums), ions, (gy, gx, shape), table,
                                 annotate.N_DECOYS)
        extra = {"n_spectra": int(len(gy)), "lattice_step": step}
    for row, w, near in zip(rows, peak, inside):
        row.update(window_vs_fwhm=w, interferences=near)
    return {**info, **extra, "targets": rows}


# -- targets ---------------------------------------------------------------------------------


def resolve_targets(
    panel: str | None, targets: Sequence[chem.Target] | str | os.PathLike | None, src: Any,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[list[chem.Target], str]:
    """(targets, description of where they came from) for a run on ``src``."""
    if targets is not None:
        if isinstance(targets, (str, os.PathLike)):
            path = os.fspath(targets)
            return chem.read_targets(_read_text(path, storage_options), source=path), path
        targets = list(targets)
        if not targets:
            raise InputError(None, "empty target list")
        return targets, "api"
    if panel is None:
        panel = "tme-positive" if src.polarity == "positive" else "tme-negative"
    return chem.panel(panel), f"panel {panel}"


def _read_text(path: str, storage_options: Mapping[str, Any] | None,
               what: str = "targets") -> str:
    try:
        with open_input(path, storage_options) as fh:
            return fh.read().decode("utf-8-sig")
    except IonmapError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read {what}: {getattr(exc, 'strerror', None) or exc}"
                         ) from None


def target_table(targets: Sequence[chem.Target], ppm: float) -> list[dict]:
    """JSON-ready target records: name, formula, adduct, mz (Th), ppm, group, window."""
    names = [t.name for t in targets]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(None, f"duplicate target names: {', '.join(dupes)}")
    table = []
    for t in targets:
        tp = float(t.ppm if t.ppm is not None else ppm)
        lo, hi = window_bounds([t.mz], [tp])
        table.append({"name": t.name, "formula": t.formula, "adduct": t.adduct,
                      "mz": float(t.mz), "ppm": tp, "group": t.group,
                      "window": [float(lo[0]), float(hi[0])]})
    return table


def _outside(table: list[dict], mz_range: tuple[float, float], shift_ppm) -> list[str]:
    """Names of the targets whose window lies outside the recorded ``mz_range`` (Th) for
    every mass shift in ``shift_ppm(mz)`` = (lowest, highest) ppm at the target's m/z:
    a recorded m/z is m·(1 + δ·1e-6), so the window moves with δ."""
    lo, hi = mz_range
    out = []
    for t in table:
        d_lo, d_hi = shift_ppm(t["mz"])
        if t["window"][1] * (1 + d_hi * 1e-6) < lo or t["window"][0] * (1 + d_lo * 1e-6) > hi:
            out.append(t["name"])
    return out


def _check_targets(table: list[dict], src: Any, tolerance_ppm: float) -> None:
    """Refuse targets that all lie outside the file's m/z range, even moved by up to
    ±``tolerance_ppm`` (what recalibration can move a window by); warn when no target is
    of the file's polarity (their images cannot show signal)."""
    if src.mz_range is None:
        warnings.warn(f"{src.url}: every spectrum is empty (all images are zero)",
                      IonmapWarning, stacklevel=3)
        return
    lo, hi = src.mz_range
    outside = _outside(table, (lo, hi), lambda _: (-tolerance_ppm, tolerance_ppm))
    if len(outside) == len(table):
        raise InputError(src.url, f"every target lies outside the file's m/z range "
                         f"{lo:.4f}-{hi:.4f} (wrong panel or polarity?); all images would "
                         "be zero")
    charges = {t["adduct"].strip()[-1] for t in table if t.get("adduct")}
    wanted = {"positive": "+", "negative": "-"}.get(src.polarity or "")
    if wanted and charges and wanted not in charges:
        warnings.warn(f"{src.url}: the file is {src.polarity} mode but no target is a "
                      f"{src.polarity} ion", IonmapWarning, stacklevel=3)


def _warn_outside(table: list[dict], src: Any, model: recal.Model | None) -> None:
    """Warn about targets outside the file's recorded m/z range once their windows are
    moved by the mass error model (a drifted file's range is shifted too: its ions are
    in range although their exact m/z is not)."""
    if src.mz_range is None:
        return
    a_lo, a_hi, b, m0 = (0.0, 0.0, 0.0, 0.0) if model is None else (
        float(model.a.min()), float(model.a.max()), model.b, model.m0)

    def shift(mz: float) -> tuple[float, float]:  # δ range (ppm) at mz over the section
        slope = b * (mz - m0) / 1000.0
        return a_lo + slope, a_hi + slope

    outside = _outside(table, tuple(src.mz_range), shift)
    if outside:
        lo, hi = src.mz_range
        warnings.warn(f"{src.url}: targets outside the file's m/z range {lo:.4f}-{hi:.4f} "
                      f"(their images are zero): {', '.join(outside)}", IonmapWarning,
                      stacklevel=3)


# -- run state -------------------------------------------------------------------------------


def _root_attrs(source: dict, parameters: dict, table: list[dict], src: Any) -> dict:
    """The root attrs of a new run; its ``layout`` is set once known (after the feature
    axis, which a one-pass feature run builds after it has started spilling)."""
    pixel = src.pixel_size_um
    return {
        "version": __version__, "format": st.FORMAT, "complete": False,
        "source": source, "parameters": parameters, "targets": table,
        "shape": list(src.shape),
        "pixel_size_um": None if pixel is None else [float(pixel[0]), float(pixel[1])],
        "mz_range": None if src.mz_range is None else [float(v) for v in src.mz_range],
        "layout": None,
        "progress": {"bands_done": [], "normalized": False},
    }


def _layout_attrs(layout: Layout) -> dict:
    return {"band_rows": layout.band_rows, "n_bands": layout.n_bands,
            "levels": len(level_shapes(layout.shape))}


def _check_same_run(url: str, previous: dict, source: dict, parameters: dict,
                    table: list[dict]) -> None:
    old = previous.get("source", {})
    if (old.get("uuid"), old.get("size"), old.get("n_spectra")) != (
            source["uuid"], source["size"], source["n_spectra"]):
        raise StorageError(url, "cannot resume: the store was made from a different input "
                           f"({old.get('path')}); use overwrite=True to start again")
    if previous.get("parameters") != parameters or previous.get("targets") != table:
        raise StorageError(url, "cannot resume: the store was made with different targets "
                           "or parameters; use overwrite=True to start again")


# -- passes ----------------------------------------------------------------------------------


def _build_axis(src, src_d, ex, bar, client, workers, token, sample, options) -> np.ndarray:
    """Pass 1: the feature m/z axis from the peaks of (a seeded sample of) the spectra."""
    chosen = _axis_sample(int(src.n_spectra), sample)
    # A few tasks per thread: each builder holds a grid over the whole m/z range, so
    # thousands of tiny tasks would cost more in merging than they gain in balance.
    payload = int(src.intensity_lengths[chosen].sum()) * src.intensity_dtype.itemsize
    n_groups = max(2 * n_threads(client, workers), -(-payload // AXIS_TASK_BYTES))
    groups = [g for g in np.array_split(chosen, min(len(chosen), n_groups)) if len(g)]
    bar.phase("m/z axis (spectra)", len(chosen))
    tasks = [dask.delayed(axis_part, pure=False)(src_d, g, ex, options,
                                                 dask_key_name=f"ionmap-axis-{token}-{i}")
             for i, g in enumerate(groups)]
    parts = run_tasks(tasks, lambda i, _: bar.advance(len(groups[i])), client=client,
                      workers=workers)
    builder = MzAxisBuilder(**options)
    for part in parts:
        builder.merge(part)
    return np.asarray(builder.finish(), dtype=np.float64)


def _axis_sample(n: int, sample: int | None) -> np.ndarray:
    """The sorted indices of the spectra whose peaks build the feature axis (seeded)."""
    if sample is not None and sample < n:
        return np.sort(np.random.default_rng(0).choice(n, int(sample), replace=False))
    return np.arange(n)


def _spill_task(src, unit: Band, ex: Extraction, url: str, sampled: np.ndarray,
                options: dict):
    return spill_unit(src, unit, ex, st.SpillWriter(url, unit.index), sampled, options)


def _spilled_axis_task(url: str, unit: int, sampled: np.ndarray, options: dict):
    return spilled_axis_part(st.read_spill(url, unit), sampled, options)


def _spill_pass(src, src_d, ex, attrs, store, url, out_options, bar, client, workers, token,
                sample, options, spill_rows: int, *, fresh: bool) -> np.ndarray:
    """Pass 1 of a one-pass feature run: every unit of ``spill_rows`` image rows read and
    picked once into the spill (units spilled before a resume are not read again), the
    feature m/z axis from the peaks of the sampled spectra. ``fresh``: create the root
    first, so that the spill progress has somewhere to go."""
    if fresh:
        attrs["progress"].update(spilled=[], spill_rows=int(spill_rows))
        st.create_root(store, attrs)
    spill_rows = int(attrs["progress"]["spill_rows"])
    spilled = st.Checkpoint(store, attrs, key="spilled")
    done = spilled.done
    sampled = _axis_sample(int(src.n_spectra), sample)
    units = plan_bands(src.coordinates, Layout(tuple(src.shape), spill_rows))
    todo = [u for u in units if u.index not in done]
    bar.phase("pick + spill (spectra)", int(sum(len(u.spectra) for u in todo)))
    ex_d = dask.delayed(ex, name=f"ionmap-extraction-{token}", traverse=False)
    sampled_d = dask.delayed(sampled, name=f"ionmap-sampled-{token}", traverse=False)
    tasks = [dask.delayed(_spill_task, pure=False)(
        src_d, u, ex_d, url, sampled_d, options, dask_key_name=f"ionmap-spill-{token}-{u.index}")
        for u in todo]
    tasks += [dask.delayed(_spilled_axis_task, pure=False)(
        url, u.index, sampled_d, options, dask_key_name=f"ionmap-spilled-{token}-{u.index}")
        for u in units if u.index in done]
    builder = MzAxisBuilder(**options)

    def on_done(i: int, part) -> None:
        builder.merge(part)
        if i < len(todo):
            spilled.band_done(todo[i].index)
            bar.advance(len(todo[i].spectra))

    try:
        # one axis part per unit, each a grid over the m/z range: merged and let go as they
        # come, so the driver holds one builder, not one part per unit of the file
        run_tasks(tasks, on_done, client=client, workers=workers, keep=False)
    finally:
        spilled.flush()
    return np.asarray(builder.finish(), dtype=np.float64)


def _drop_spill(store, checkpoint, url: str, *, normalized: bool) -> None:
    """Delete the spill (and ``_work`` unless a normalised run still needs it) before the
    run can be marked complete, then forget its progress."""
    st.delete_spill(url)
    if not normalized:
        st.delete_scratch(store)
    checkpoint.forget("spilled", "spill_rows")


def _band_task(src, band: Band, nx: int, ex: Extraction, url: str, options,
               units: list[int] | None = None) -> int:
    """Band ``band``: from the imzML, or with ``units`` from those spilled units."""
    if units is None:
        block = compute_band(src, band, nx, ex)
    else:
        block = spilled_band(src, band, nx, ex, [st.read_spill(url, u) for u in units])
    st.write_band(st.worker_store(url, options), band.y0, images=block.images, tic=block.tic,
                  mask=block.mask, norm=block.norm, features=block.features,
                  mass_error=block.mass_error)
    return len(band.spectra)


def _run_bands(src, src_d, ex, layout, checkpoint, url, options, bar, client, workers, token,
               spill_rows: int | None = None, *, pyramids: bool = False):
    """Pass 2: every band not yet done -> its shards, recorded as done when written;
    ``spill_rows``: the bands read the spilled units (of that height) they overlap;
    ``pyramids``: the pyramid levels are built in the same run, each part as soon as the
    rows it averages are written (images that are not normalised afterwards)."""
    done = checkpoint.done
    todo = [b for b in plan_bands(src.coordinates, layout) if b.index not in done]
    bar.phase("ion images (spectra)", int(sum(len(b.spectra) for b in todo)))
    ex_d = dask.delayed(ex, name=f"ionmap-extraction-{token}", traverse=False)
    nx = layout.shape[1]
    tasks = [dask.delayed(_band_task, pure=False)(
        src_d, b, nx, ex_d, url, options,
        None if spill_rows is None else list(range(b.y0 // spill_rows,
                                                   (b.y1 - 1) // spill_rows + 1)),
        dask_key_name=f"ionmap-band-{token}-{b.index}") for b in todo]

    def on_done(i: int, n: int) -> None:
        if i < len(todo):  # a band, not a pyramid part
            checkpoint.band_done(todo[i].index)
            bar.advance(n)

    after = {b.index: t for b, t in zip(todo, tasks)}
    extra = _pyramid_tasks(layout, url, options, token, after) if pyramids else []
    run_tasks(tasks + extra, on_done, client=client, workers=workers)


def _normalize_task(url, options, y0, y1, scale, features):
    st.normalize_band(st.worker_store(url, options), y0, y1, scale, features)


def _pyramid_task(url, options, group, level, y0, y1, *after):
    """``after``: the results of the tasks that write the rows averaged here."""
    st.pyramid_band(st.worker_store(url, options), group, level, y0, y1)


def _pyramid_tasks(layout: Layout, url, options, token, after: dict | None = None) -> list:
    """Tasks that build every pyramid level of the ion images and the TIC, band by band,
    each depending on the tasks that write the rows of the level below it averages:
    ``after`` maps a level-0 band index to its task (a band without one is written)."""
    tasks = []
    levels, rows = level_shapes(layout.shape), layout.band_rows
    for group in (st.ION, st.TIC):
        below, below_rows = after or {}, layout.shape[0]
        for level, shape in enumerate(levels[1:], start=1):
            lay = Layout(shape, rows)
            here = {}
            for b in range(lay.n_bands):
                y0, y1 = lay.band_range(b)
                # the bands of the level below holding its rows [2·y0, 2·y1)
                sources = range(2 * y0 // rows, -(-min(2 * y1, below_rows) // rows))
                here[b] = dask.delayed(_pyramid_task, pure=False)(
                    url, options, group, level, y0, y1, *(below[i] for i in sources if i in below),
                    dask_key_name=f"ionmap-pyramid-{token}-{group}-{level}-{b}")
            tasks += here.values()
            below, below_rows = here, shape[0]
    return tasks


def _finish(store, layout, checkpoint, url, options, bar, client, workers, token, *,
            features: bool) -> None:
    """Normalise and build the pyramids (if asked: images not normalised have their
    pyramids from :func:`_run_bands`), set viewer windows, mark complete."""
    attrs = checkpoint.attrs
    method = attrs["parameters"]["normalize"]
    pyramids = _pyramid_tasks(layout, url, options, token) if method != "none" else []
    n_steps = (layout.n_bands if method != "none" else 0) + len(pyramids)
    if n_steps:  # a small image has no pyramid level and nothing to normalise
        bar.phase("finishing (tasks)", n_steps)
    advance = lambda i, _: bar.advance(1)  # noqa: E731
    if method != "none" and not attrs["progress"].get("normalized"):
        norm = st.read_norm(store)
        positive = norm[norm > 0]
        scale = float(np.median(positive)) if positive.size else 1.0
        attrs["normalization"] = {
            "method": method, "scale": scale,
            "formula": f"value x scale / {method.upper()} of the pixel (0 where it is 0); "
                       f"scale = median {method.upper()} over pixels where it is > 0",
        }
        tasks = [dask.delayed(_normalize_task, pure=False)(
            url, options, *layout.band_range(b), scale, features,
            dask_key_name=f"ionmap-normalize-{token}-{b}") for b in range(layout.n_bands)]
        run_tasks(tasks, advance, client=client, workers=workers)
        checkpoint.set("normalized", True)
    if method != "none":
        st.delete_scratch(store)  # also after an interruption right after normalising
        run_tasks(pyramids, advance, client=client, workers=workers)
    st.write_display_ranges(store, [t["name"] for t in attrs["targets"]])
    checkpoint.finish()
