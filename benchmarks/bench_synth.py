"""Large synthetic files: speed and memory of ``ionmap.synth.make_sample(target_bytes=...)``.

Claim: a >= 1.5 GB imzML is written in about a minute, block-vectorised generation costs
little next to pyimzML's own writer, and peak memory does not follow the .ibd size.

For each (mode, size) the script runs, in a fresh process each:
  synth      make_sample(..., target_bytes=size): generation + pyimzML writer, end to end;
  writer     pyimzML's ImzMLWriter alone, fed ready-made arrays of the same count and
             lengths (the floor: what writing costs without generating anything);
  naive      the obvious generator, one spectrum at a time with a loop over peaks
             (timed on 300 spectra, extrapolated to the file), same writer cost excluded.
and prints a table with rates, the ratios synth/writer and naive/synth-generation, and
peak RSS. Run:  python benchmarks/bench_synth.py [--sizes 0.4GB,1.6GB] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASES = [("processed", "profile"), ("continuous", "profile")]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_synth(out: Path, mode: str, spectrum_type: str, size: int) -> dict:
    from ionmap.synth import make_sample

    start = time.perf_counter()
    s = make_sample(out, "bench", mode=mode, spectrum_type=spectrum_type, target_bytes=size,
                    overwrite=True)
    dt = time.perf_counter() - start
    t = s.truth_dict
    return {"seconds": dt, "ibd_bytes": t["ibd_bytes"], "n_spectra": t["n_spectra"],
            "points": t["points_per_spectrum_mean"], "rss_mb": _rss_mb(),
            "xml_mb": s.imzml.stat().st_size / 1e6}


def child_writer(out: Path, mode: str, spectrum_type: str, n: int, points: int) -> dict:
    from pyimzml.ImzMLWriter import ImzMLWriter

    mz = np.linspace(70.0, 950.0, points)
    it = np.random.default_rng(0).random(points).astype(np.float32)
    start = time.perf_counter()
    with ImzMLWriter(str(out / "writer.imzML"), mode=mode, spec_type=spectrum_type,
                     polarity="negative") as w:
        for i in range(n):
            w.addSpectrum(mz, it, (i % 1000 + 1, i // 1000 + 1))
    return {"seconds": time.perf_counter() - start, "rss_mb": _rss_mb()}


def child_naive(mode: str, spectrum_type: str, n: int) -> dict:
    """Per-spectrum generation (no writing): heights, then one Gaussian per peak."""
    from ionmap.chem import panel
    from ionmap.synth._spectra import KEEP_SNR, Renderer, make_peaks, mz_range

    targets = panel("tme-negative")
    lo, hi = mz_range(targets, "negative")
    n_bg = 450 if mode == "continuous" else 40
    peaks = make_peaks(targets, "negative", 20000.0, lo, hi, n_bg, np.random.default_rng(0))
    r = Renderer(peaks, mode, spectrum_type, 20000.0, lo, hi)
    rng = np.random.default_rng(1)
    sigma = peaks.mz / (20000.0 * 2.3548)
    start = time.perf_counter()
    for _ in range(n):
        spec = np.zeros(len(r.axis))
        shift = 1 + rng.normal(0, 2e-6)
        for m, s, w in zip(peaks.mz, sigma, peaks.weight):
            a, b = np.searchsorted(r.axis, [m - 4 * s, m + 4 * s])
            h = w * np.exp(rng.normal(0, 0.12))
            spec[a:b] += h * np.exp(-0.5 * ((r.axis[a:b] - m * shift) / s) ** 2)
        spec = np.abs(spec + np.sqrt(spec + r.noise ** 2) * rng.standard_normal(len(spec)))
        if mode == "processed":
            keep = spec > KEEP_SNR * r.noise
            _ = r.axis[keep], spec[keep]
    return {"seconds_per_spectrum": (time.perf_counter() - start) / n}


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="0.4GB,1.6GB", help="comma-separated .ibd sizes")
    ap.add_argument("--out", default=None, help="scratch folder (default: a temp folder)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, out, mode, st, *rest = args.child
        if kind == "synth":
            res = child_synth(Path(out), mode, st, int(rest[0]))
        elif kind == "writer":
            res = child_writer(Path(out), mode, st, int(rest[0]), int(rest[1]))
        else:
            res = child_naive(mode, st, int(rest[0]))
        print(json.dumps(res))
        return

    from ionmap.synth import parse_size

    sizes = [parse_size(s) for s in args.sizes.split(",")]
    root = Path(args.out or tempfile.mkdtemp(prefix="bench_synth_"))
    rows = []
    for mode, st in CASES:
        naive = run_child("naive", str(root), mode, st, "300")["seconds_per_spectrum"]
        for size in sizes:
            work = root / f"{mode}_{size}"
            work.mkdir(parents=True, exist_ok=True)
            syn = run_child("synth", str(work), mode, st, str(size))
            n, pts = syn["n_spectra"], int(round(syn["points"]))
            shutil.rmtree(work)
            work.mkdir()
            wr = run_child("writer", str(work), mode, st, str(n), str(pts))
            shutil.rmtree(work)
            gen = max(syn["seconds"] - wr["seconds"], 1e-9)  # generation share of synth
            rows.append((mode, st, syn["ibd_bytes"] / 1e9, n, pts, syn["seconds"],
                         syn["ibd_bytes"] / syn["seconds"] / 1e6, wr["seconds"],
                         syn["seconds"] / wr["seconds"], naive * n, naive * n / gen,
                         syn["rss_mb"], syn["xml_mb"]))
    if not args.out:
        shutil.rmtree(root, ignore_errors=True)
    head = ("mode", "type", "ibd GB", "spectra", "pts/spec", "synth s", "MB/s", "writer s",
            "synth/writer", "naive gen s", "naive/ours gen", "peak RSS MB", "XML MB")
    print(" | ".join(f"{h:>12}" for h in head))
    for r in rows:
        print(" | ".join(f"{v:>12.3g}" if isinstance(v, float) else f"{v!s:>12}" for v in r))


if __name__ == "__main__":
    main()
