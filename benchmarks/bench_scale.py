"""Scale benchmark: does memory stay flat as the file grows? Time, throughput and both
resident-memory figures (anonymous and file-backed) per file size, in one run.

Files: ``ionmap synth --type centroid --size S`` (processed centroid spectra, as a
high-resolution instrument writes them), generated once into WORKDIR and reused. Per size,
each step a fresh process measured from outside (see ``_measure.py``):

- parse: ``open_imzml(cache=False)``, the XML metadata only (XML MB per CPU second:
  on a shared machine the wall time depends on the load, printed with the table);
- convert (first): ``ionmap.convert`` with the metadata sidecar removed (parses the XML);
- convert (reopen): the same with the sidecar in place (the XML is skipped).

The files are read once before timing (page cache warm for every step). Default sizes
0.4 and 1.6 GB; ``--big`` adds the 8 GB (about 5 M spectra) file, about 20 GB of disk.

    python benchmarks/bench_scale.py [WORKDIR] [--sizes 0.4,1.6] [--big]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import centroid_sample, drop_sidecar, run_measured, table  # noqa: E402

GB = 1e9

PARSE = """
import json, sys, time
import ionmap.imzml
t, c = time.perf_counter(), time.process_time()
f = ionmap.imzml.open_imzml(sys.argv[1], cache=False)
print(json.dumps({"s": time.perf_counter() - t, "cpu": time.process_time() - c,
                  "n": f.n_spectra}))
"""

CONVERT = """
import json, sys, time
import ionmap, ionmap.engine._convert
t, c = time.perf_counter(), time.process_time()
ionmap.convert(sys.argv[1], sys.argv[2], overwrite=True, progress=False, workers=1)
print(json.dumps({"s": time.perf_counter() - t, "cpu": time.process_time() - c}))
"""


def sample(workdir: Path, size: float) -> Path:
    """The synthetic file of ``size`` GB (.ibd), written once."""
    return centroid_sample(workdir, f"{size:g}GB")


def warm(path: Path) -> None:
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(2**24)
        while fh.readinto(buf):
            pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workdir", nargs="?", default="/tmp/ionmap-bench-scale")
    ap.add_argument("--sizes", default="0.4,1.6", help="comma-separated .ibd sizes in GB")
    ap.add_argument("--big", action="store_true", help="add the 8 GB (~5 M spectra) file")
    args = ap.parse_args(argv)
    sizes = [float(s) for s in args.sizes.split(",") if s] + ([8.0] if args.big else [])
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in sizes:
        imzml = sample(work, size)
        ibd = imzml.with_suffix(".ibd")
        xml_bytes = os.path.getsize(imzml)
        warm(imzml)
        warm(ibd)
        out = str(work / f"out-{size:g}.zarr")
        parse = run_measured(PARSE, str(imzml))
        drop_sidecar(imzml)
        first = run_measured(CONVERT, str(imzml), out)
        again = run_measured(CONVERT, str(imzml), out)
        for name, res in (("parse", parse), ("convert (first)", first),
                          ("convert (reopen)", again)):
            rate = (f"{xml_bytes / res['cpu'] / 1e6:,.0f} MB/s XML per CPU s" if name == "parse"
                    else f"{os.path.getsize(ibd) / res['s'] / 1e6:,.0f} MB/s ibd")
            rows.append([f"{size:g} GB", f"{parse['n']:,}", f"{xml_bytes / GB:.2f} GB", name,
                         f"{res['s']:.2f}", f"{res['cpu']:.2f}", rate, f"{res['anon_mb']:.0f}",
                         f"{res['file_mb']:.0f}"])
        rows.append([f"{size:g} GB", "", "", "first / reopen", f"{first['s'] / again['s']:.2f}x",
                     f"{first['cpu'] / again['cpu']:.2f}x", "", "", ""])
        shutil.rmtree(out, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(table(rows, ["ibd", "spectra", "XML", "step", "time s", "CPU s", "throughput",
                       "anon MB", "file MB"]))
    print("anon/file MB: peak RssAnon / RssFile of the whole process (sampled every 10 ms).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
