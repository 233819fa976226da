"""Peak picking: ionmap vs pyopenms PeakPickerHiRes vs scipy.signal.find_peaks, and the
scaling of every compiled kernel from one to two threads.

The same planted profile spectra (TOF-like axis, resolving power 20k, 6 points per FWHM,
Gaussian peaks of SNR 10 to 1000 on half-normal noise; tests/kernels/test_kernels_peaks.py
makes them and scores the picks) go through the three pickers:

- ionmap: ``pick_peaks_batch`` at its defaults, one call per batch;
- PeakPickerHiRes at signal_to_noise 3, one ``pickExperiment`` call (its fastest use; the
  MSExperiment is built outside the timing);
- scipy ``find_peaks`` per spectrum with the same threshold as ionmap (median + 3 sigma of
  MAD, prominence 3 sigma); its apex is the highest sample.

Speed is spectra per second per core (process CPU time, best of several runs, OpenMP and
BLAS pinned to one thread), so other load on the machine does not distort the ratios.
Accuracy: recall of planted peaks (nearest pick within FWHM/2), median and 99th percentile
of |apex error| in ppm over the peaks each method found, picks near no planted peak, and
picks on spectra of pure noise.

Second table: each kernel over the same batches on a ThreadPoolExecutor with 1 and 2
threads (wall time, best of several alternating runs); the kernels release the GIL. The
load average and the CPU/wall ratio of the 2-thread runs (2.0 = both threads ran all the
time) show whether other processes took cores during the measurement.

Per-call table (``--per-call``): what a script that picks spectrum by spectrum gets. A
Python loop calling ``ionmap.kernels.pick_peaks(mz, intensity)`` once per spectrum against a
loop calling ``PeakPickerHiRes.pick`` once per ``MSSpectrum`` (built outside the timing, and
also timed with ``set_peaks`` inside the loop, as a script starting from arrays needs), on the
same spectra of 2,000 and 31,000 points; ``pick_peaks_batch`` over all of them for
reference. Then the whole script: the same kind of spectra written to an imzML file, read
and picked one per call (``ImzMLFile.spectrum(i)`` + ``pick_peaks`` against pyimzML
``getspectrum(i)`` + ``set_peaks`` + ``PeakPickerHiRes.pick``). Microseconds per spectrum,
process CPU time, best of alternating runs.

Run: ``python benchmarks/bench_peaks.py`` (``--quick`` for a smaller, noisier run,
``--threads-only`` for the second table alone, ``--per-call`` for the per-call table alone).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyopenms as oms  # noqa: E402
from pyimzml.ImzMLParser import ImzMLParser  # noqa: E402
from pyimzml.ImzMLWriter import ImzMLWriter  # noqa: E402
from scipy.signal import find_peaks  # noqa: E402

import ionmap  # noqa: E402
from ionmap.batch import SpectrumBatch  # noqa: E402
from ionmap.kernels import (  # noqa: E402
    bin_to_axis,
    build_mz_axis,
    pick_peaks,
    pick_peaks_batch,
    window_sums,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "kernels"))
from test_kernels_peaks import openms_experiment, planted_spectra, score_picks  # noqa: E402


def cpu_best(fn, repeats: int) -> tuple[float, object]:
    """(smallest process CPU time of repeats calls, last result)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t)
    return best, out


def split(batch: SpectrumBatch, parts: int) -> list[SpectrumBatch]:
    """A continuous batch cut into ``parts`` batches sharing its m/z array."""
    out = []
    for idx in np.array_split(np.arange(len(batch)), parts):
        a, b = batch.offsets[idx[0]], batch.offsets[idx[-1] + 1]
        out.append(SpectrumBatch(batch.index[idx], batch.offsets[idx[0]:idx[-1] + 2] - a, batch.mz,
                                 batch.mz_starts[idx], batch.intensity[a:b]))
    return out


# --------------------------------------------------------------------------- pickers


def ionmap_picker(batch):
    peaks = pick_peaks_batch(batch)
    return lambda: [peaks.spectrum(k)[0] for k in range(len(peaks))], lambda: pick_peaks_batch(batch)


def openms_picker(batch):
    oms.LogConfigHandler.getInstance().setLogLevel("WARNING")
    picker = oms.PeakPickerHiRes()
    params = picker.getParameters()
    params.setValue("signal_to_noise", 3.0)
    picker.setParameters(params)
    exp = openms_experiment(batch)

    def run():
        return picker.pickExperiment(exp, False)

    def peaks():
        out = run()
        return [out.getSpectrum(k).get_peaks()[0] for k in range(out.getNrSpectra())]

    return peaks, run


def scipy_picker(batch):
    def run():
        picked = []
        for k in range(len(batch)):
            mz, y = batch.spectrum(k)
            med = np.median(y)
            sigma = 1.4826 * np.median(np.abs(y - med))
            idx, _ = find_peaks(y, height=med + 3 * sigma, prominence=3 * sigma)
            picked.append(mz[idx])
        return picked

    return run, run


PICKERS = {"ionmap": ionmap_picker, "PeakPickerHiRes": openms_picker, "scipy find_peaks": scipy_picker}


def picking_table(n_spectra: int, n_points: int, repeats: int) -> None:
    batch, truth = planted_spectra(n_spectra, n_points, peaks_per_spectrum=n_points // 100, seed=1)
    noise, _ = planted_spectra(n_spectra, n_points, peaks_per_spectrum=0, seed=2)
    print(f"\n## Peak picking: {n_spectra} spectra x {n_points} points, "
          f"{n_points // 100} planted peaks each (SNR 10-1000, R 20k)\n")
    head = ("method", "spectra/s/core", "vs HiRes", "recall SNR>=20", "recall all",
            "median ppm", "p99 ppm", "false/spectrum", "noise peaks/spectrum")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    rows, base = [], None
    for name, make in PICKERS.items():
        peaks, run = make(batch)
        seconds, _ = cpu_best(run, repeats)
        err, heights, n_false = score_picks(peaks(), truth)
        noise_peaks = sum(len(p) for p in make(noise)[0]())
        found = ~np.isnan(err)
        rate = n_spectra / seconds
        base = rate if name == "PeakPickerHiRes" else base
        rows.append((name, rate, found[heights >= 20].mean(), found.mean(),
                     np.median(np.abs(err[found])), np.percentile(np.abs(err[found]), 99),
                     n_false / n_spectra, noise_peaks / n_spectra))
    for name, rate, r20, rall, med, p99, fp, noise_fp in rows:
        print(f"| {name} | {rate:,.0f} | {rate / base:.1f}x | {r20:.4f} | {rall:.4f} | {med:.3f} | "
              f"{p99:.3f} | {fp:.3f} | {noise_fp:.4f} |")


# --------------------------------------------------------------------------- per call


def per_call_table(repeats: int, quick: bool) -> None:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    sizes = ((2000, 500 if quick else 2000), (31000, 40 if quick else 200))
    print(f"\n## One spectrum per call: a Python loop over the spectra, microseconds per spectrum "
          f"(CPU); load average before: {load} on {os.cpu_count()} cores\n")
    print("| points | spectra | ionmap `pick_peaks` | HiRes `pick` | HiRes `set_peaks` + `pick` | "
          "`pick_peaks_batch` | ionmap / HiRes per call | batch / HiRes |")
    print("|---|---|---|---|---|---|---|---|")
    oms.LogConfigHandler.getInstance().setLogLevel("WARNING")
    picker = oms.PeakPickerHiRes()
    params = picker.getParameters()
    params.setValue("signal_to_noise", 3.0)
    picker.setParameters(params)
    for n_points, n_spectra in sizes:
        per_call_row(picker, n_points, n_spectra, repeats)
    print("\nRead and pick, one spectrum per call, from an imzML file (continuous, float64 m/z, "
          "float32 intensities; written by pyimzML):\n")
    print("| points | spectra | ionmap `spectrum(i)` + `pick_peaks` | pyimzML `getspectrum(i)` + "
          "HiRes `set_peaks` + `pick` | ionmap / pyimzML + HiRes |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for n_points, n_spectra in sizes:
            script_row(picker, n_points, n_spectra, repeats, Path(work))


def best_cpu(loops: dict, repeats: int, n_spectra: int) -> dict:
    """Microseconds of CPU per spectrum of each loop: the best of ``repeats`` runs, the loops
    alternating so that other load hits all alike."""
    best = dict.fromkeys(loops, float("inf"))
    for _ in range(repeats):
        for name, fn in loops.items():
            best[name] = min(best[name], cpu_best(fn, 1)[0])
    return {name: t / n_spectra * 1e6 for name, t in best.items()}


def per_call_row(picker, n_points: int, n_spectra: int, repeats: int) -> None:
    batch, _ = planted_spectra(n_spectra, n_points, peaks_per_spectrum=n_points // 100, seed=4)
    spectra = [batch.spectrum(k) for k in range(n_spectra)]
    as_openms = [(mz.astype(np.float64), y.astype(np.float32)) for mz, y in spectra]
    experiment = openms_experiment(batch)
    built = [experiment.getSpectrum(k) for k in range(n_spectra)]

    def ionmap_loop():
        return [pick_peaks(mz, y)[0].size for mz, y in spectra]

    def openms_loop():
        out = oms.MSSpectrum()
        for spec in built:
            picker.pick(spec, out)

    def openms_from_arrays():
        spec, out = profile_spectrum(), oms.MSSpectrum()
        for peaks in as_openms:
            spec.set_peaks(peaks)
            picker.pick(spec, out)

    us = best_cpu({"ionmap": ionmap_loop, "hires": openms_loop, "hires+set": openms_from_arrays,
                   "batch": lambda: pick_peaks_batch(batch)}, repeats, n_spectra)
    assert sum(ionmap_loop()) == len(pick_peaks_batch(batch).mz), "per-call and batch picks differ"
    print(f"| {n_points:,} | {n_spectra} | {us['ionmap']:.1f} | {us['hires']:.1f} | "
          f"{us['hires+set']:.1f} | {us['batch']:.1f} | {us['hires'] / us['ionmap']:.1f}x | "
          f"{us['hires'] / us['batch']:.1f}x |")


def script_row(picker, n_points: int, n_spectra: int, repeats: int, work: Path) -> None:
    batch, _ = planted_spectra(n_spectra, n_points, peaks_per_spectrum=n_points // 100, seed=5)
    path = work / f"planted-{n_points}.imzML"
    with ImzMLWriter(str(path), mode="continuous", mz_dtype=np.float64,
                     intensity_dtype=np.float32, spec_type="profile") as w:
        for k in range(n_spectra):
            w.addSpectrum(batch.mz, batch.spectrum(k)[1].astype(np.float32), (k % 50 + 1, k // 50 + 1))
    f = ionmap.open_imzml(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parser = ImzMLParser(str(path))

    def ionmap_loop():
        return [pick_peaks(*f.spectrum(i))[0].size for i in range(n_spectra)]

    def openms_loop():
        spec, out = profile_spectrum(), oms.MSSpectrum()
        for i in range(n_spectra):
            mz, y = parser.getspectrum(i)  # read-only arrays: set_peaks needs copies
            spec.set_peaks((mz.copy(), y.copy()))
            picker.pick(spec, out)

    us = best_cpu({"ionmap": ionmap_loop, "hires": openms_loop}, repeats, n_spectra)
    parser.m.close()
    print(f"| {n_points:,} | {n_spectra} | {us['ionmap']:.1f} | {us['hires']:.1f} | "
          f"{us['hires'] / us['ionmap']:.1f}x |")


def profile_spectrum():
    spec = oms.MSSpectrum()
    spec.setType(oms.SpectrumSettings.SpectrumType.PROFILE)
    spec.setMSLevel(1)
    return spec


# --------------------------------------------------------------------------- threads


def thread_table(repeats: int, quick: bool) -> None:
    n_spec = 2000 if quick else 8000
    batch, _ = planted_spectra(n_spec, 2000, seed=3)
    profile = split(batch, 8)
    peaks = [pick_peaks_batch(b) for b in profile]
    axis = build_mz_axis(peaks, ppm=10.0, min_fraction=0.001)
    centres = np.linspace(batch.mz[50], batch.mz[-50], 100)
    lo, hi = centres * (1 - 20e-6), centres * (1 + 20e-6)
    work = {
        "pick_peaks_batch (profile)": (profile, lambda b: pick_peaks_batch(b)),
        "window_sums x100 (profile)": (profile, lambda b: window_sums(b, lo, hi)),
        "window_sums x100 (peaks)": (peaks, lambda b: window_sums(b, lo, hi)),
        f"bin_to_axis ({axis.size} features)": (peaks, lambda b: bin_to_axis(b, axis, ppm=10.0)),
    }
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\n## Threads: each kernel over 8 batches ({n_spec} spectra x 2000 points in all); "
          f"load average before: {load} on {os.cpu_count()} cores\n")
    print("| kernel | 1 thread (ms) | 2 threads (ms) | speed-up | CPU/wall, 2 threads |")
    print("|---|---|---|---|---|")
    for name, (batches, fn) in work.items():
        best = [(float("inf"), 0.0), (float("inf"), 0.0)]  # (wall, cpu) of the fastest run
        with ThreadPoolExecutor(1) as one, ThreadPoolExecutor(2) as two:
            for _ in range(repeats):  # alternate, so that other load hits both alike
                for i, pool in enumerate((one, two)):
                    wall, cpu = time.perf_counter(), time.process_time()
                    list(pool.map(fn, batches))
                    run = (time.perf_counter() - wall, time.process_time() - cpu)
                    best[i] = min(best[i], run)
        (t1, _), (t2, c2) = best
        print(f"| {name} | {t1 * 1e3:.1f} | {t2 * 1e3:.1f} | {t1 / t2:.2f}x | {c2 / t2:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer spectra and repeats")
    parser.add_argument("--threads-only", action="store_true",
                        help="only the thread table (rerun it when the machine is idle)")
    parser.add_argument("--per-call", action="store_true",
                        help="only the one-spectrum-per-call table")
    args = parser.parse_args()
    repeats = 3 if args.quick else 9
    if args.per_call:
        per_call_table(repeats, args.quick)
        return
    if not args.threads_only:
        picking_table(500 if args.quick else 2000, 2000, repeats)
        picking_table(50 if args.quick else 200, 20000, repeats)
    thread_table(repeats, args.quick)


if __name__ == "__main__":
    main()
