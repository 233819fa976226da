"""Cost of recalibration + annotation scoring against the rest of a conversion, in one run.

Workload: bench_convert's (a), a processed-mode profile file (``tme-negative`` panel, raw
point windows) of ``--size`` bytes (default 1.6 GB; ``--quick``: 60 MB), written once into
WORKDIR with ionmap.synth (with a +10 ppm drift and a 10 ppm gradient, so the model is
applied). Timed in this process, warm page cache:

- convert with recalibration and scoring (default settings);
- pass 0 alone (lattice read, reference errors, model fit, isotope + decoy windows, MSM
  and FDR), by calling the same functions the conversion calls.

Prints the ratio pass 0 / (convert − pass 0), the quantity the issue bounds by 20 %.

    nice python benchmarks/bench_annotation.py [--quick] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--size", type=float, default=1.6e9, help="bytes of the .ibd")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    size = 6e7 if args.quick else args.size
    import ionmap
    from ionmap.engine import _convert as cv
    from ionmap.params import RecalibrationParams
    from ionmap.synth import make_sample

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-annotation-"))
    name = f"a-{int(size)}"
    imzml = work / f"{name}.imzML"
    if not imzml.exists():
        make_sample(work, name, seed=1, mode="processed", spectrum_type="profile",
                    target_bytes=int(size), drift_ppm=10.0, drift_gradient_ppm=10.0)
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    res = ionmap.convert(imzml, work / "out.zarr", overwrite=True)
    total = time.perf_counter() - start
    src = ionmap.open_imzml(str(imzml))
    rp = RecalibrationParams()
    start = time.perf_counter()
    model, _, lattice = cv._calibrate(src, "auto", rp, res.attrs["targets"], None)
    cv._annotate(src, lattice, model, res.attrs["targets"], rp)
    part = time.perf_counter() - start
    rest = total - part
    print(f"file {imzml.name}: {src.n_spectra} spectra, {src.ibd_size / 1e9:.2f} GB")
    print(f"{'step':<44}{'seconds':>10}")
    print(f"{'convert (recalibration + scoring included)':<44}{total:>10.2f}")
    print(f"{'  of which pass 0 (recalibration + scoring)':<44}{part:>10.2f}")
    print(f"{'  the rest (bands, pyramid, finishing)':<44}{rest:>10.2f}")
    print(f"ratio pass 0 / rest of convert: {part / rest:.3f} (bound: 0.20)")


if __name__ == "__main__":
    main()
