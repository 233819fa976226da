"""Cost of recalibration + annotation scoring (pass 0) against a whole conversion, in one run.

Workload: bench_convert's (a), the same file (``ionmap.synth`` seed 1, processed-mode
profile spectra, ``--size-a`` GB, default 1.6; ``--quick``: 0.2), the same targets
(``tme-negative``, the default panel of a negative file) and ``--ppm`` (10), written once
into WORKDIR (shared with bench_convert: the same name). Every timed step is a fresh
process (imports before the clock; warm page cache), so no cache of one step helps another:

- convert with the default settings (recalibration auto and scoring), the metadata sidecar
  removed first (as bench_convert's (a) row) and present (a reconversion: the stricter
  ratio, since the XML parse is skipped);
- pass 0 alone: the lattice read, reference errors, model fit, isotope and decoy windows,
  MSM and FDR, by calling the functions the conversion calls.

Prints pass 0 / convert, the quantity the issue bounds by 0.20.

    nice python benchmarks/bench_annotation.py [--quick] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import run_measured, table  # noqa: E402
from bench_convert import GB, run, sample  # noqa: E402 - its workload (a) and convert job

PASS0 = """
import json, sys, time, warnings
import ionmap, ionmap.engine._convert as cv
from ionmap.params import RecalibrationParams
warnings.simplefilter("ignore")
imzml, ppm = sys.argv[1], float(sys.argv[2])
src = ionmap.open_imzml(imzml)
table = cv.target_table(ionmap.chem.panel("tme-negative"), ppm)
rp = RecalibrationParams()
start = time.perf_counter()
model, _, lattice = cv._calibrate(src, "auto", rp, table, None)
calibrated = time.perf_counter()
cv._annotate(src, lattice, model, table, rp)
end = time.perf_counter()
print(json.dumps({"seconds": end - start, "calibrate": calibrated - start,
                  "annotate": end - calibrated, "n_spectra": int(src.n_spectra),
                  "lattice": sum(len(b.index) for b in lattice[0])}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, help="where the files live (default: a temp dir)")
    ap.add_argument("--quick", action="store_true", help="a 0.2 GB file")
    ap.add_argument("--size-a", type=float, default=1.6, help="GB of file (a)")
    ap.add_argument("--ppm", type=float, default=10.0)
    args = ap.parse_args()
    size = 0.2 if args.quick else args.size_a
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-annotation-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"files in {work} (cpu cores: {os.cpu_count()}, load average "
          f"{os.getloadavg()[0]:.2f}: other processes slow every step)", flush=True)
    imzml = str(sample(work, f"a-{size:g}GB", size * GB, mode="processed",
                       spectrum_type="profile"))
    out = str(work / "annotation-out.zarr")
    options = {"ppm": args.ppm}
    run("ionmap", imzml=imzml, out=out, options=options)  # page cache and sidecar warm
    part = run_measured(PASS0, imzml, str(args.ppm))
    rows = []
    for label, cached in (("(a), metadata sidecar removed", False),
                          ("(a), metadata sidecar present", True)):
        conv = run("ionmap", imzml=imzml, out=out, options=options, cached_metadata=cached)
        rows.append([label, f"{conv['seconds']:.2f}", f"{part['seconds']:.2f}",
                     f"{part['seconds'] / conv['seconds']:.3f}", "<= 0.20"])
    print(f"file {Path(imzml).name}: {part['n_spectra']:,} spectra, pass 0 reads a lattice of "
          f"{part['lattice']:,}; pass 0 = recalibration {part['calibrate']:.2f} s + scoring "
          f"{part['annotate']:.2f} s (a fresh process, cold caches)")
    print(table(rows, ["convert (recalibrate auto, scoring)", "convert s", "pass 0 s",
                       "pass 0 / convert", "bound"]))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
