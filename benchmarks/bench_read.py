"""Benchmark: reading imzML with ionmap vs pyimzML and a raw read of the .ibd.

Writes (or reuses) a 100k-spectrum imzML file with pyimzML's ImzMLWriter in WORKDIR, then
times, in one run:

1. metadata: ionmap XML parse (``open_imzml(cache=False)``) vs pyimzML ``ImzMLParser``;
2. reopen: ionmap with its metadata sidecar vs pyimzML ``ImzMLParser`` again;
3. all spectra: ionmap ``iter_batches`` (and a loop of ``spectrum(i)``, one call per
   spectrum) vs a pyimzML ``getspectrum`` loop vs
   ``np.fromfile`` of the whole .ibd (the floor: bytes off the page cache, no decoding),
   and the peak memory allocated while iterating (bounded by the batch size).

Files are read once before timing so every contender reads from the page cache. Each
ionmap step is the best of ``--repeat`` runs; the baselines run once (they are slow).

``--per-call`` prints only the one-spectrum-per-call table: a bare loop of
``ImzMLFile.spectrum(i)`` against a bare loop of pyimzML ``getspectrum(i)`` over every
spectrum (what a script reading spectrum by spectrum does), in file order and in a random
order, microseconds per call in process CPU time, best of ``--repeat`` alternating runs (so
other load hits both alike), after checking once that both return the same arrays;
``iter_batches`` per spectrum beside them.

    python benchmarks/bench_read.py /tmp/ionmap-bench [--spectra 100000] [--points 1000]
        [--mode processed|continuous] [--per-call]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np


def write_file(path: Path, n: int, points: int, mode: str, seed: int = 0) -> None:
    """n spectra on a square-ish grid: centroid peak lists of ``points`` peaks on average
    (0.5x to 1.5x, processed) or profile spectra of ``points`` values on one shared axis
    (continuous); float64 m/z, float32 intensities."""
    from pyimzml.ImzMLWriter import ImzMLWriter

    rng = np.random.default_rng(seed)
    nx = int(np.ceil(np.sqrt(n)))
    axis = np.linspace(100.0, 1000.0, points)
    tmp = path.with_name("partial-" + path.name)
    kind = "centroid" if mode == "processed" else "profile"
    with ImzMLWriter(str(tmp), mz_dtype=np.float64, intensity_dtype=np.float32, mode=mode,
                     spec_type=kind, polarity="negative") as w:
        for i in range(n):
            if mode == "processed":
                mz = np.sort(rng.uniform(100.0, 1000.0, int(rng.integers(points // 2,
                                                                        3 * points // 2))))
            else:
                mz = axis
            w.addSpectrum(mz, rng.random(len(mz), dtype=np.float32), (i % nx + 1, i // nx + 1))
    tmp.with_suffix(".ibd").replace(path.with_suffix(".ibd"))
    tmp.replace(path)


def timed(fn, repeat: int = 1):
    """(best wall time in s, last result)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def per_call(path: Path, repeat: int) -> int:
    """The one-spectrum-per-call table (see the module docstring)."""
    from pyimzml.ImzMLParser import ImzMLParser

    import ionmap

    f = ionmap.open_imzml(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parser = ImzMLParser(str(path))
    n = f.n_spectra
    for i in range(0, n, max(1, n // 1000)):  # the same arrays, checked outside the timing
        for mine, theirs in zip(f.spectrum(i), parser.getspectrum(i)):
            assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs), "readers disagree"

    shuffled = np.random.default_rng(0).permutation(n).tolist()

    def loop(read, order):
        def run():
            for i in order:
                read(i)
        return run

    def batches():
        for _ in f.iter_batches():
            pass

    loops = {("file order", "ionmap"): loop(f.spectrum, range(n)),
             ("file order", "pyimzml"): loop(parser.getspectrum, range(n)),
             ("random order", "ionmap"): loop(f.spectrum, shuffled),
             ("random order", "pyimzml"): loop(parser.getspectrum, shuffled),
             ("batches", "ionmap"): batches}
    best = dict.fromkeys(loops, float("inf"))
    for _ in range(repeat):  # alternate, so that other load hits all alike
        for name, fn in loops.items():
            start = time.process_time()
            fn()
            best[name] = min(best[name], time.process_time() - start)
    us = {name: t / n * 1e6 for name, t in best.items()}
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\n{path.name}: {n} spectra ({f.mode}, {int(f.intensity_lengths.mean())} points "
          f"on average); load average {load} on {os.cpu_count()} CPUs; CPU time per spectrum, "
          f"best of {repeat}; iter_batches {us['batches', 'ionmap']:.2f} µs per spectrum\n")
    print("| order | ionmap `spectrum(i)` loop | pyimzML `getspectrum(i)` loop | ionmap / pyimzML |")
    print("|---|---|---|---|")
    for order in ("file order", "random order"):
        mine, theirs = us[order, "ionmap"], us[order, "pyimzml"]
        print(f"| {order} | {mine:.2f} µs | {theirs:.2f} µs | {theirs / mine:.2f}x |")
    parser.m.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workdir", nargs="?", default="/tmp/ionmap-bench-read",
                    help="folder for the test file (reused when present)")
    ap.add_argument("--spectra", type=int, default=100_000)
    ap.add_argument("--points", type=int, default=1000, help="points per spectrum")
    ap.add_argument("--mode", choices=("processed", "continuous"), default="processed")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each ionmap step (best)")
    ap.add_argument("--per-call", action="store_true",
                    help="only the one-spectrum-per-call table (spectrum(i) vs getspectrum(i))")
    args = ap.parse_args(argv)

    from pyimzml.ImzMLParser import ImzMLParser

    import ionmap
    from ionmap.imzml import _cache as cache

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"bench-{args.mode}-{args.spectra}x{args.points}.imzML"
    ibd = path.with_suffix(".ibd")
    if not (path.exists() and ibd.exists()):
        print(f"writing {path} ...", file=sys.stderr)
        t, _ = timed(lambda: write_file(path, args.spectra, args.points, args.mode))
        print(f"  written in {t:.1f} s", file=sys.stderr)
    for p in cache.locations(str(path)):
        if os.path.exists(p):
            os.unlink(p)

    # warm the page cache for everyone
    path.read_bytes()
    np.fromfile(ibd, np.uint8)

    if args.per_call:
        return per_call(path, max(args.repeat, 5))

    rows = []
    t_xml, f = timed(lambda: ionmap.open_imzml(path, cache=False), args.repeat)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_py, parser = timed(lambda: ImzMLParser(str(path)))
    rows.append(("open: XML parse", t_xml, "pyimzML ImzMLParser", t_py))

    ionmap.open_imzml(path)  # writes the sidecar
    t_re, g = timed(lambda: ionmap.open_imzml(path), max(5, args.repeat))
    rows.append(("reopen with metadata sidecar", t_re, "pyimzML ImzMLParser", t_py))

    def ionmap_all():
        total, n = 0.0, 0
        for batch in g.iter_batches():
            total += float(batch.intensity.sum(dtype=np.float64))
            n += len(batch)
        return total, n

    def pyimzml_all():
        total = 0.0
        for i in range(len(parser.coordinates)):
            _, it = parser.getspectrum(i)
            total += float(it.sum(dtype=np.float64))
        return total, len(parser.coordinates)

    def ionmap_loop():  # the same loop a script would write: one spectrum per call
        total = 0.0
        for i in range(g.n_spectra):
            _, it = g.spectrum(i)
            total += float(it.sum(dtype=np.float64))
        return total, g.n_spectra

    t_read, (s_ionmap, n_ionmap) = timed(ionmap_all, args.repeat)
    t_loop, (s_loop, _) = timed(ionmap_loop)
    tracemalloc.start()  # separate, untimed pass: memory stays near one batch
    ionmap_all()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    t_pyread, (s_py, n_py) = timed(pyimzml_all)
    t_raw, raw = timed(lambda: np.fromfile(ibd, np.uint8), args.repeat)
    assert n_ionmap == n_py == f.n_spectra and np.isclose(s_ionmap, s_py), "readers disagree"
    rows.append(("read all spectra: iter_batches", t_read, "pyimzML getspectrum loop", t_pyread))
    rows.append(("read all spectra: iter_batches", t_read, "np.fromfile of the .ibd", t_raw))
    assert np.isclose(s_loop, s_py), "readers disagree"
    rows.append(("read all spectra: spectrum(i) loop", t_loop, "pyimzML getspectrum loop",
                 t_pyread))

    xml_mb = path.stat().st_size / 1e6
    ibd_mb = raw.nbytes / 1e6
    print(f"\n{path.name}: {f.n_spectra} spectra ({f.mode}, {f.spectrum_type}), "
          f"XML {xml_mb:.0f} MB, .ibd {ibd_mb:.0f} MB; {os.cpu_count()} CPUs\n")
    head = f"{'step':<32} {'ionmap s':>9}   {'baseline':<26} {'baseline s':>10} {'speed-up':>9}"
    print(head)
    print("-" * len(head))
    for step, mine, name, base in rows:
        print(f"{step:<32} {mine:>9.3f}   {name:<26} {base:>10.3f} {base / mine:>8.1f}x")
    print(f"\nionmap read throughput {ibd_mb / t_read:.0f} MB/s "
          f"(raw np.fromfile {ibd_mb / t_raw:.0f} MB/s); XML parse {xml_mb / t_xml:.0f} MB/s")
    print(f"peak memory allocated while iterating all batches: {peak / 1e6:.0f} MB "
          f"(batches of {ionmap.imzml.DEFAULT_BATCH_BYTES / 2**20:.0f} MiB; .ibd {ibd_mb:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
