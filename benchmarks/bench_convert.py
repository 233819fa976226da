"""Conversion benchmark: ionmap.convert against what a user would write today, in one run.

Workloads (synthetic files from ionmap.synth, written once into WORKDIR and reused):

(a) many small spectra: processed-mode profile file (>= 1.5 GB, >= 100k spectra),
    ``tme-negative`` panel, raw-point windows. Baseline: pyimzML ``ImzMLParser`` + a Python
    loop over ``getspectrum`` + NumPy ``searchsorted`` on a cumulative sum per spectrum.
    Also: ionmap's total time against its own floor, XML parse (no metadata cache) plus a
    raw ``np.fromfile`` of the .ibd.
(b) long profile spectra: continuous-mode profile file (>= 1.5 GB, >= 20k points per
    spectrum) with ``peaks`` and ``features``. Baseline: the same loop with pyopenms
    ``PeakPickerHiRes`` per spectrum, ``searchsorted`` windows on the peaks, all peaks kept
    in memory, sorted and grouped within the ppm tolerance into an axis (features in at least
    1 % of spectra), then every spectrum's peaks binned to the axis.
(c) memory: peak RSS of the (a) conversion at two file sizes (subprocesses).
(d) scaling: the (a) conversion on a dask.distributed LocalCluster with 1 and 2 worker
    processes (one thread each).
(e) where the time goes: wall seconds per stage of the (a) and (b) conversions (open and
    XML scan, pass 0 recalibration and annotation scoring, feature axis, band tasks,
    mean spectrum, pyramids, the rest), summed over calls; with ``--before SRC`` the same
    jobs also run on the source tree SRC (e.g. ``git archive`` of an older commit, kernels
    built in it), alternating with this one, so both see the same load.

Every timed run is a fresh subprocess (its peak RSS comes from getrusage; module imports
are done before the clock starts); the files are in the page cache (warm) for all
contestants. ionmap's metadata sidecar is removed before each of its runs, so it parses the
XML every time as the baseline does; (a) is also shown with the sidecar in place (a
reconversion, e.g. with other targets), where the XML parse is skipped.

    python benchmarks/bench_convert.py                # full sizes (1.6 GB files)
    python benchmarks/bench_convert.py --quick        # small files, a minute or two
    python benchmarks/bench_convert.py --stages-only --before /tmp/old   # (e) only
    python benchmarks/bench_convert.py --only-b       # (b) only: ionmap and its baseline
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GB = 1e9


# -- jobs (each runs in its own subprocess) --------------------------------------------------


def _drop_metadata_cache(imzml: str) -> None:
    from ionmap.imzml import _cache as cache

    for path in cache.locations(imzml):
        Path(path).unlink(missing_ok=True)


def job_ionmap(imzml: str, out: str, options: dict, cluster_workers: int = 0,
               cached_metadata: bool = False) -> dict:
    import ionmap
    import ionmap.engine._convert  # noqa: F401 - imports (dask, zarr) are not timed

    if not cached_metadata:
        _drop_metadata_cache(imzml)
    cluster = None
    if cluster_workers:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=cluster_workers, threads_per_worker=1,
                               processes=True, dashboard_address=None)
        options = {**options, "scheduler": cluster.scheduler_address}
        with Client(cluster.scheduler_address) as c:  # worker imports are not timed
            c.run(lambda: __import__("ionmap.engine._convert"))
    start = time.perf_counter()
    res = ionmap.convert(imzml, out, overwrite=True, progress=False, **options)
    seconds = time.perf_counter() - start
    if cluster is not None:
        cluster.close()
    return {"seconds": seconds, "n_images": len(res.target_names),
            "n_features": (res.attrs.get("features") or {}).get("n_features")}


#: (module, function, stage) timed by job_stages; a function missing from the tree is skipped.
STAGES = [
    ("ionmap.imzml", "open_imzml", "open + XML scan"),
    ("ionmap.engine._convert", "_calibrate", "pass 0: recalibration"),
    ("ionmap.engine._convert", "_annotate", "pass 0: annotation scores"),
    ("ionmap.engine._convert", "_build_axis", "feature axis pass"),
    ("ionmap.engine._convert", "_spill_pass", "pick + spill + axis pass (one pass)"),
    ("ionmap.engine._convert", "_run_bands", "band tasks"),
    ("ionmap.engine._convert", "mean_spectrum", "mean spectrum"),
    ("ionmap.engine._convert", "_finish", "pyramids + finish"),
]


def job_stages(imzml: str, out: str, options: dict, cluster_workers: int = 0) -> dict:
    """job_ionmap with wall seconds per stage (wrappers around the engine's functions)."""
    import functools
    import importlib
    import threading

    import ionmap.engine._convert  # noqa: F401

    seconds: dict[str, float] = {}
    beside: list[str] = []  # stages that ran in another thread than the caller's

    def timed(fn, stage):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - start
                if threading.current_thread() is not threading.main_thread():
                    beside.append(stage)
        return run

    for module, name, stage in STAGES:
        mod = importlib.import_module(module)
        if hasattr(mod, name):
            setattr(mod, name, timed(getattr(mod, name), stage))
    result = job_ionmap(imzml, out, options, cluster_workers=cluster_workers)
    seconds["rest"] = result["seconds"] - sum(v for k, v in seconds.items() if k not in beside)
    return {**result, "stages": seconds, "beside": sorted(set(beside))}


def job_prime(imzml: str) -> dict:
    """Open the file once so that its metadata sidecar exists (a later open skips the XML)."""
    import ionmap

    ionmap.open_imzml(imzml)
    return {}


def job_floor(imzml: str) -> dict:
    """ionmap's XML parse (no cache) and a raw read of the whole .ibd."""
    import ionmap

    start = time.perf_counter()
    src = ionmap.open_imzml(imzml, cache=False)
    parse = time.perf_counter() - start
    parse_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ibd = src.ibd_url
    start = time.perf_counter()
    data = np.fromfile(ibd, dtype=np.uint8)
    read = time.perf_counter() - start
    return {"parse": parse, "read": read, "bytes": int(data.size), "parse_rss_mb": parse_rss,
            "n_spectra": int(src.n_spectra),
            "points": float(np.mean(src.intensity_lengths))}


def _parser(imzml: str):
    import warnings

    from pyimzml.ImzMLParser import ImzMLParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ImzMLParser(imzml)


def _windows(panel_name: str, ppm: float) -> tuple[np.ndarray, np.ndarray]:
    from ionmap.chem import panel

    mz = np.array([t.mz for t in panel(panel_name)])
    return mz * (1 - ppm * 1e-6), mz * (1 + ppm * 1e-6)


def _baseline_start(imzml: str, ppm: float):
    """What every baseline does first: parse with pyimzML, windows, empty images."""
    p = _parser(imzml)
    lo, hi = _windows("tme-negative", ppm)
    ny = int(p.imzmldict["max count of pixels y"])
    nx = int(p.imzmldict["max count of pixels x"])
    return p, lo, hi, np.zeros((len(lo), ny, nx), np.float32)


def job_baseline_a(imzml: str, ppm: float) -> dict:
    start = time.perf_counter()
    p, lo, hi, images = _baseline_start(imzml, ppm)
    for i, (x, y, _) in enumerate(p.coordinates):
        mz, intensity = p.getspectrum(i)
        cs = np.concatenate(([0.0], np.cumsum(intensity, dtype=np.float64)))
        images[:, y - 1, x - 1] = (cs[np.searchsorted(mz, hi, "right")]
                                   - cs[np.searchsorted(mz, lo, "left")])
    return {"seconds": time.perf_counter() - start}


def job_baseline_b(imzml: str, ppm: float, min_fraction: float = 0.01) -> dict:
    import pyopenms as oms

    start = time.perf_counter()
    p, lo, hi, images = _baseline_start(imzml, ppm)
    picker = oms.PeakPickerHiRes()
    peak_mz, peak_int, peak_pix = [], [], []
    for i, (x, y, _) in enumerate(p.coordinates):
        mz, intensity = p.getspectrum(i)
        spectrum = oms.MSSpectrum()
        spectrum.set_peaks((np.array(mz), np.array(intensity)))  # pyopenms needs writable
        picked = oms.MSSpectrum()
        picker.pick(spectrum, picked)
        pmz, pint = picked.get_peaks()
        cs = np.concatenate(([0.0], np.cumsum(pint, dtype=np.float64)))
        images[:, y - 1, x - 1] = (cs[np.searchsorted(pmz, hi, "right")]
                                   - cs[np.searchsorted(pmz, lo, "left")])
        peak_mz.append(pmz)
        peak_int.append(pint)
        peak_pix.append(np.full(len(pmz), i))
    # common axis: sort all peaks, split where neighbours are farther apart than the tolerance
    all_mz = np.concatenate(peak_mz)
    all_int = np.concatenate(peak_int)
    all_pix = np.concatenate(peak_pix)
    order = np.argsort(all_mz, kind="stable")
    smz, spix = all_mz[order], all_pix[order]
    group = np.concatenate(([0], np.cumsum(np.diff(smz) > smz[1:] * ppm * 1e-6)))
    n_groups = int(group[-1]) + 1 if len(group) else 0
    n_total = len(p.coordinates)
    spectra_per_group = np.bincount(np.unique(group * n_total + spix) // n_total,
                                    minlength=n_groups)
    peaks_per_group = np.bincount(group, minlength=n_groups)
    centres = np.bincount(group, weights=smz, minlength=n_groups) / np.maximum(peaks_per_group, 1)
    keep = spectra_per_group >= min_fraction * n_total
    axis = centres[keep]
    # bin every peak to the nearest kept feature within tolerance
    cube = np.zeros((len(axis), *images.shape[1:]), np.float32)
    if len(axis):
        idx = np.clip(np.searchsorted(axis, all_mz), 1, len(axis) - 1)
        left = np.where(np.abs(all_mz - axis[idx - 1]) <= np.abs(all_mz - axis[idx]), idx - 1, idx)
        ok = np.abs(all_mz - axis[left]) <= axis[left] * ppm * 1e-6
        coords = np.asarray(p.coordinates)
        np.add.at(cube, (left[ok], coords[all_pix[ok], 1] - 1, coords[all_pix[ok], 0] - 1),
                  all_int[ok])
    return {"seconds": time.perf_counter() - start, "n_features": int(len(axis))}


JOBS = {"ionmap": job_ionmap, "stages": job_stages, "prime": job_prime, "floor": job_floor,
        "baseline_a": job_baseline_a, "baseline_b": job_baseline_b}


def _anon_mb() -> float:
    """Anonymous (heap) resident memory in MB: RSS without file pages, such as the
    memory-mapped XML the parser scans, which the kernel can drop at any time."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(spec: str) -> None:
    import threading

    peak = [_anon_mb()]
    done = threading.Event()

    def sample() -> None:  # peak anonymous memory, sampled every 5 ms
        while not done.wait(0.005):
            peak[0] = max(peak[0], _anon_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    job = json.loads(spec)
    result = JOBS[job.pop("job")](**job)
    done.set()
    sampler.join()
    result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["anon_mb"] = max(peak[0], _anon_mb())
    print("RESULT " + json.dumps(result))


def run(job: str, src: str | None = None, **kwargs) -> dict:
    """Run ``job`` in a fresh subprocess; ``src``: import ionmap from that source tree."""
    spec = json.dumps({"job": job, **kwargs})
    env = None if src is None else {**os.environ, "PYTHONPATH": src}
    proc = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True,
                          text=True, check=False, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"job {job} failed (exit {proc.returncode})")
    return json.loads(lines[-1][len("RESULT "):])


# -- driver ----------------------------------------------------------------------------------


def sample(workdir: Path, name: str, size: float, **kwargs) -> Path:
    """The synthetic file ``name`` of about ``size`` bytes, made once and reused."""
    from ionmap.synth import make_sample

    imzml = workdir / f"{name}.imzML"
    truth = workdir / f"{name}.truth.json"
    if imzml.exists() and truth.exists():
        return imzml
    start = time.perf_counter()
    make_sample(workdir, name, seed=1, target_bytes=int(size), overwrite=True, **kwargs)
    print(f"  wrote {name} ({(workdir / f'{name}.ibd').stat().st_size / GB:.2f} GB) in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    return imzml


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*map(str, r)) for r in rows]
    return "\n".join(lines)


HEADER = ["workload", "file", "spectra", "baseline s", "ionmap s", "speed-up", "target",
          "ionmap RSS MB"]


def workload_b(args, b: Path, out: Path) -> list[str]:
    """(b): the baseline and ionmap ``--peaks --features`` on file ``b``; a table row."""
    print("(b) long profile spectra, peaks + features", flush=True)
    floor_b = run("floor", imzml=str(b))
    base_b = run("baseline_b", imzml=str(b), ppm=args.ppm)
    ion_b = run("ionmap", imzml=str(b), out=str(out),
                options={"ppm": args.ppm, "peaks": True, "features": True})
    print(f"    features: ionmap {ion_b['n_features']}, baseline {base_b['n_features']}; "
          f"ionmap anonymous peak {ion_b['anon_mb']:.0f} MB", flush=True)
    return ["(b) continuous, peaks+features", f"{floor_b['bytes'] / GB:.2f} GB",
            f"{floor_b['n_spectra']:,} x {floor_b['points']:.0f} pts",
            f"{base_b['seconds']:.1f}", f"{ion_b['seconds']:.2f}",
            f"{base_b['seconds'] / ion_b['seconds']:.1f}x", ">= 20x",
            f"{ion_b['maxrss_mb']:.0f}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, help="where the files live (default: a temp dir)")
    ap.add_argument("--quick", action="store_true", help="small files (0.1-0.2 GB)")
    ap.add_argument("--size-a", type=float, default=1.6, help="GB of file (a)")
    ap.add_argument("--size-b", type=float, default=1.6, help="GB of file (b)")
    ap.add_argument("--mem-small", type=float, default=0.4, help="GB of the small memory run")
    ap.add_argument("--ppm", type=float, default=10.0)
    ap.add_argument("--before", help="source tree of an earlier ionmap for (e) (its src dir)")
    ap.add_argument("--stages-only", action="store_true", help="only (e)")
    ap.add_argument("--only-b", action="store_true", help="only (b), ionmap and its baseline")
    ap.add_argument("--pairs", type=int, metavar="N",
                    help="only (a) against its baseline and (d) 2 workers against 1, each in N "
                    "alternating pairs (medians and the median of the pairwise ratios)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    if args.quick:
        args.size_a, args.size_b, args.mem_small = 0.2, 0.2, 0.05
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ionmap-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "out.zarr"
    print(f"files in {workdir} (cpu cores: {os.cpu_count()}, load average "
          f"{os.getloadavg()[0]:.2f}: other processes slow every contestant)", flush=True)

    b = sample(workdir, f"b-{args.size_b:g}GB", args.size_b * GB, mode="continuous",
               spectrum_type="profile")
    if args.only_b:
        print(table([workload_b(args, b, out)], HEADER))
        shutil.rmtree(out, ignore_errors=True)
        return
    a = sample(workdir, f"a-{args.size_a:g}GB", args.size_a * GB, mode="processed",
               spectrum_type="profile")
    a_small = sample(workdir, f"a-{args.mem_small:g}GB", args.mem_small * GB,
                     mode="processed", spectrum_type="profile")

    if args.stages_only:
        stages(args, a, b, out)
        return
    if args.pairs:
        paired(args, a, out)
        return
    rows = []
    print("(a) many small spectra", flush=True)
    floor = run("floor", imzml=str(a))
    base_a = run("baseline_a", imzml=str(a), ppm=args.ppm)
    ion_a = run("ionmap", imzml=str(a), out=str(out), options={"ppm": args.ppm})
    run("prime", imzml=str(a))
    warm_a = run("ionmap", imzml=str(a), out=str(out), options={"ppm": args.ppm},
                 cached_metadata=True)
    print(f"    baseline {base_a['seconds']:.1f} s, ionmap {ion_a['seconds']:.2f} s "
          f"(metadata cached: {warm_a['seconds']:.2f} s), floor "
          f"{floor['parse']:.2f} + {floor['read']:.2f} s", flush=True)
    floor_s = floor["parse"] + floor["read"]
    spectra_a = f"{floor['n_spectra']:,} x {floor['points']:.0f} pts"
    for label, res in (("(a) processed, panel", ion_a), ("(a) same, metadata cached", warm_a)):
        rows.append([label, f"{floor['bytes'] / GB:.2f} GB", spectra_a,
                     f"{base_a['seconds']:.1f}", f"{res['seconds']:.2f}",
                     f"{base_a['seconds'] / res['seconds']:.1f}x", ">= 10x",
                     f"{res['maxrss_mb']:.0f}"])
    rows.append(workload_b(args, b, out))
    print(table(rows, HEADER))

    print("\n(a) against ionmap's own floor (XML parse without cache + np.fromfile of .ibd)")
    print(table([[f"{floor['parse']:.2f}", f"{floor['read']:.2f}", f"{floor_s:.2f}",
                  f"{ion_a['seconds']:.2f}", f"{ion_a['seconds'] / floor_s:.2f}x", "<= 2x"]],
                ["parse s", "fromfile s", "floor s", "convert s", "convert/floor",
                 "target"]))

    print("\n(c) peak memory (RSS) of the (a) conversion at two file sizes")
    floor_small = run("floor", imzml=str(a_small))
    small = run("ionmap", imzml=str(a_small), out=str(out), options={"ppm": args.ppm})
    run("prime", imzml=str(a_small))
    small_warm = run("ionmap", imzml=str(a_small), out=str(out), options={"ppm": args.ppm},
                     cached_metadata=True)
    mem = [[f"{fl['bytes'] / GB:.2f} GB", f"{fl['n_spectra']:,}", f"{fl['parse_rss_mb']:.0f}",
            f"{cold['maxrss_mb']:.0f}", f"{cold['anon_mb']:.0f}", f"{warm['maxrss_mb']:.0f}"]
           for fl, cold, warm in ((floor_small, small, small_warm), (floor, ion_a, warm_a))]
    print(table(mem, ["file", "spectra", "XML parse alone MB", "convert RSS MB",
                      "convert anon MB", "convert, metadata cached RSS MB"]))
    print(f"    big/small: convert RSS {ion_a['maxrss_mb'] / small['maxrss_mb']:.2f}, anonymous "
          f"{ion_a['anon_mb'] / small['anon_mb']:.2f}, metadata cached RSS "
          f"{warm_a['maxrss_mb'] / small_warm['maxrss_mb']:.2f} (file ratio "
          f"{floor['bytes'] / floor_small['bytes']:.1f}); target <= 1024 MB and flat. RSS "
          "includes the memory-mapped XML's file pages; anon is the heap.")

    print("\n(d) dask.distributed LocalCluster (processes, 1 thread each), (a) conversion, "
          "metadata cached")
    one = run("ionmap", imzml=str(a), out=str(out), options={"ppm": args.ppm},
              cluster_workers=1, cached_metadata=True)
    two = run("ionmap", imzml=str(a), out=str(out), options={"ppm": args.ppm},
              cluster_workers=2, cached_metadata=True)
    print(table([["1 worker", f"{one['seconds']:.2f}", "1.00x"],
                 ["2 workers", f"{two['seconds']:.2f}",
                  f"{one['seconds'] / two['seconds']:.2f}x"]],
                ["cluster", "convert s", "speed-up (target 2 workers >= 1.8x)"]))
    stages(args, a, b, out)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    shutil.rmtree(out, ignore_errors=True)


def paired(args, a: Path, out: Path) -> None:
    """(a) and (d) in ``args.pairs`` alternating pairs: on a shared machine the load drifts
    over minutes, so each ratio is taken within a pair and the median of them reported."""
    convert = {"imzml": str(a), "out": str(out), "options": {"ppm": args.ppm}}
    contests = [
        ("(a) pyimzML loop / ionmap, fresh file",
         lambda: run("baseline_a", imzml=str(a), ppm=args.ppm), lambda: run("ionmap", **convert),
         ">= 10x"),
        ("(d) 1 distributed worker / 2 (sidecar)",
         lambda: run("ionmap", cluster_workers=1, cached_metadata=True, **convert),
         lambda: run("ionmap", cluster_workers=2, cached_metadata=True, **convert), ">= 1.8x"),
    ]
    rows = []
    for label, slow, fast, target in contests:
        print(f"{label}: {args.pairs} pairs", flush=True)
        times = [(slow()["seconds"], fast()["seconds"]) for _ in range(args.pairs)]
        ratios = [x / y for x, y in times]
        print("    " + ", ".join(f"{x:.2f}/{y:.2f}" for x, y in times), flush=True)
        rows.append([label, f"{statistics.median(x for x, _ in times):.2f}",
                     f"{statistics.median(y for _, y in times):.2f}",
                     f"{statistics.median(ratios):.2f}x",
                     f"{min(ratios):.2f}-{max(ratios):.2f}x", target])
    print(table(rows, ["contest", "first s (median)", "second s (median)",
                       "median pairwise ratio", "range", "target"]))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    shutil.rmtree(out, ignore_errors=True)


def stages(args, a: Path, b: Path, out: Path) -> None:
    """(e): seconds per stage, this tree and (``--before``) an earlier one, alternating."""
    trees = [("this tree", None)] + ([("before", args.before)] if args.before else [])
    runs = [("(a)", a, {"ppm": args.ppm}, 0), ("(b)", b, {"ppm": args.ppm, "peaks": True,
                                                         "features": True}, 0),
            ("(a) 1 worker", a, {"ppm": args.ppm}, 1), ("(a) 2 workers", a, {"ppm": args.ppm}, 2)]
    print(f"\n(e) seconds per stage (load average {os.getloadavg()[0]:.2f})", flush=True)
    for label, path, options, workers in runs:
        got = {}
        for name, src in trees[::-1]:  # the earlier tree first, then this one
            got[name] = run("stages", src=src, imzml=str(path), out=str(out), options=options,
                            cluster_workers=workers)
        names = [s for _, _, s in STAGES] + ["rest"]
        rows = []
        for stage in names + ["total"]:
            secs = [got[t]["seconds"] if stage == "total" else got[t]["stages"].get(stage)
                    for t, _ in trees]
            if all(v is None for v in secs):
                continue
            row = [stage] + ["-" if v is None else f"{v:.2f}" + (
                " *" if stage in got[t].get("beside", []) else "") for v, (t, _) in zip(secs, trees)]
            if args.before:
                now, then = secs
                row.append(f"{then / now:.2f}x" if now and then and now > 0.005 else "")
            rows.append(row)
        print(f"{label} (* ran beside the band tasks, in a driver thread):")
        print(table(rows, ["stage"] + [t for t, _ in trees] + (["before/now"] if args.before
                                                               else [])), flush=True)


if __name__ == "__main__":
    main()
