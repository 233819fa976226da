"""XML scan throughput: ionmap's metadata parse against bare passes over the same bytes,
in one run.

On a processed centroid file (``ionmap synth --type centroid``, generated once into
WORKDIR: about 2.3 kB of XML per spectrum), from the page cache (the file is read once
before timing), best of ``--repeat`` runs, CPU seconds of this process and wall seconds:

- ``read()``: the file read through an 8 MB buffer (the copy out of the page cache);
- ``mmap + bytes.count('<')``: one pass over the mapped file in 64 MB slices, no parsing;
- ``ionmap parse``: ``open_imzml(path, cache=False)``, the whole XML to per-spectrum
  columns (the sidecar is neither read nor written).

Throughput is XML bytes per CPU second (the machine is shared: wall time depends on the
load, shown beside it); the ratios say how far the parse is from a bare pass.

    python benchmarks/bench_xmlscan.py [WORKDIR] [--size 0.4] [--repeat 5]
"""
from __future__ import annotations

import argparse
import mmap
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import table  # noqa: E402
from bench_scale import sample, warm  # noqa: E402


def best(job, repeat: int) -> tuple[float, float]:
    """The smallest (CPU s, wall s) of ``repeat`` runs of ``job()``."""
    runs = []
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        job()
        runs.append((time.process_time() - cpu, time.perf_counter() - wall))
    return min(r[0] for r in runs), min(r[1] for r in runs)


def read_all(path: Path) -> None:
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(8 * 2**20)
        while fh.readinto(buf):
            pass


def count_mapped(path: Path) -> int:
    """``bytes.count(b"<")`` over the mapped file, one 64 MB slice (a copy) at a time."""
    step, total = 64 * 2**20, 0
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
        for at in range(0, len(m), step):
            total += m[at : at + step].count(b"<")
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workdir", nargs="?", default="/tmp/ionmap-bench-scale")
    ap.add_argument("--size", type=float, default=0.4, help=".ibd size in GB")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    import ionmap.imzml

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    imzml = sample(work, args.size)
    nbytes = os.path.getsize(imzml)
    warm(imzml)
    jobs = [("read() 8 MB buffer", lambda: read_all(imzml)),
            ("mmap + bytes.count('<')", lambda: count_mapped(imzml)),
            ("ionmap parse", lambda: ionmap.imzml.open_imzml(str(imzml), cache=False))]
    got = {name: best(job, args.repeat) for name, job in jobs}
    parse_cpu = got["ionmap parse"][0]
    rows = [[name, f"{cpu:.3f}", f"{wall:.3f}", f"{nbytes / cpu / 1e9:.2f}",
             f"{parse_cpu / cpu:.2f}"] for name, (cpu, wall) in got.items()]
    print(f"{imzml}: {nbytes / 1e9:.2f} GB XML; load average {os.getloadavg()[0]:.1f}")
    print(table(rows, ["pass", "CPU s", "wall s", "GB/s (CPU)", "parse / this"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
