"""ionmap against the other Python imzML readers, as whole processes on the same files.

Installs nothing. pyimzML (a dependency) is always run as the baseline; imzy, bioio-imzml,
thyra and massflow run when importable (``pip install -e ".[bench]"`` in a separate virtual
environment, as thyra pins an older dask; massflow is not on PyPI), else are reported
as skipped. Tasks, each a fresh process measured from outside (wall time, peak RssAnon and
RssFile, see ``_measure.py``), with the files in the page cache:

- open (cold): parse the metadata with no cache of the tool's own present (ionmap: no
  sidecar);
- open (warm): the same again, the tool's own cache (if any) now present;
- read all: every spectrum, in file order;
- ion images: the ``tme-negative`` panel, +-10 ppm windows, from a fresh process.

Every tool's ion images are checked against a brute-force reference (every spectrum read
with pyimzML, a boolean mask of the inclusive window, summed in float64): the largest
relative difference is printed; a tool whose windows are defined differently shows it there.

    python benchmarks/bench_peers.py [WORKDIR] [--size 0.1GB]
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import centroid_sample, drop_sidecar, run_measured, table  # noqa: E402

PPM = 10.0
PANEL = "tme-negative"

# Each job: argv = imzml, task (open|read|images), output .npy (images); prints JSON.
_COMMON = """
import json, sys, time
import numpy as np
path, task, out = sys.argv[1], sys.argv[2], sys.argv[3]
import ionmap.chem
targets = np.array([t.mz for t in ionmap.chem.panel("%s")])
lo, hi = targets * (1 - %r * 1e-6), targets * (1 + %r * 1e-6)
""" % (PANEL, PPM, PPM)

JOBS = {
    "ionmap": _COMMON + """
import ionmap
if task == "images":
    import ionmap.engine._convert  # noqa: F401
t = time.perf_counter()
if task == "open":
    f = ionmap.open_imzml(path)
elif task == "read":
    f = ionmap.open_imzml(path)
    total = 0.0
    for b in f.iter_batches():
        total += float(b.intensity.sum(dtype=np.float64))
else:
    res = ionmap.convert(path, out + ".zarr", targets=[ionmap.chem.Target(f"t{i}", float(m), %r)
                         for i, m in enumerate(targets)], overwrite=True, progress=False)
    images = np.asarray(res.ion_images)
    np.save(out, images)
print(json.dumps({"s": time.perf_counter() - t}))
""" % PPM,
    "pyimzML": _COMMON + """
import warnings
warnings.simplefilter("ignore")
from pyimzml.ImzMLParser import ImzMLParser
t = time.perf_counter()
p = ImzMLParser(path)
if task == "read":
    total = 0.0
    for i in range(len(p.coordinates)):
        total += float(p.getspectrum(i)[1].sum(dtype=np.float64))
elif task == "images":
    xy = np.array(p.coordinates)[:, :2]
    images = np.zeros((len(targets), xy[:, 1].max(), xy[:, 0].max()))
    for i, (x, y) in enumerate(xy):
        mz, it = p.getspectrum(i)
        c = np.concatenate([[0.0], np.cumsum(it, dtype=np.float64)])
        images[:, y - 1, x - 1] = (c[np.searchsorted(mz, hi, side="right")]
                                   - c[np.searchsorted(mz, lo, side="left")])
    np.save(out, images)
print(json.dumps({"s": time.perf_counter() - t}))
""",
    "imzy": _COMMON + """
from imzy import get_reader
t = time.perf_counter()
r = get_reader(path)
if task == "read":
    total = 0.0
    for mz, it in r.spectra_iter():
        total += float(np.sum(it, dtype=np.float64))
elif task == "images":
    images = np.stack([r.reshape(r.get_ion_image(float(m), ppm=%r)) for m in targets])
    np.save(out, images)
print(json.dumps({"s": time.perf_counter() - t}))
""" % PPM,
}
#: importable module of each peer; peers without a job here are reported, not run
PEERS = {"imzy": "imzy", "bioio-imzml": "bioio_imzml", "thyra": "thyra", "massflow": "massflow"}

REFERENCE = _COMMON + """
import warnings
warnings.simplefilter("ignore")
from pyimzml.ImzMLParser import ImzMLParser
p = ImzMLParser(path)
xy = np.array(p.coordinates)[:, :2]
images = np.zeros((len(targets), xy[:, 1].max(), xy[:, 0].max()))
for i, (x, y) in enumerate(xy):
    mz, it = p.getspectrum(i)
    for k in range(len(targets)):
        images[k, y - 1, x - 1] = it[(mz >= lo[k]) & (mz <= hi[k])].sum(dtype=np.float64)
np.save(out, images)
print(json.dumps({}))
"""


def agreement(images: np.ndarray, reference: np.ndarray) -> float:
    """Largest difference relative to the reference image's maximum, over channels. The
    reference covers the pixels that have spectra; a tool's grid may be larger (the
    declared max count of pixels), where its images must be zero."""
    if images.ndim != 3 or len(images) != len(reference) or any(
            a < b for a, b in zip(images.shape[1:], reference.shape[1:])):
        return float("inf")
    padded = np.zeros(images.shape)
    padded[:, : reference.shape[1], : reference.shape[2]] = reference
    reference = padded
    scale = np.maximum(reference.reshape(len(reference), -1).max(axis=1), 1e-30)
    diff = np.abs(images - reference).reshape(len(reference), -1).max(axis=1)
    return float((diff / scale).max())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workdir", nargs="?", default="/tmp/ionmap-bench-peers")
    ap.add_argument("--size", default="0.1GB", help="synthetic .ibd size (ionmap synth --size)")
    args = ap.parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    imzml = centroid_sample(work, args.size)
    for p in (imzml, imzml.with_suffix(".ibd")):
        p.read_bytes()  # page cache warm for everyone
    ref_path = work / "reference.npy"
    run_measured(REFERENCE, str(imzml), "images", str(ref_path))
    reference = np.load(ref_path)

    tools = ["ionmap", "pyimzML"]
    skipped = []
    for name, module in PEERS.items():
        if importlib.util.find_spec(module) is None:
            skipped.append(f"{name} (not installed)")
        elif name not in JOBS:
            skipped.append(f"{name} (installed; no job written for it yet)")
        else:
            tools.append(name)
    results: dict[tuple[str, str], dict] = {}
    checks: dict[str, float] = {}
    for tool in tools:
        drop_sidecar(imzml)
        out = str(work / f"images-{tool}.npy")
        try:
            results[tool, "open (cold)"] = run_measured(JOBS[tool], str(imzml), "open", out)
            results[tool, "open (warm)"] = run_measured(JOBS[tool], str(imzml), "open", out)
            results[tool, "read all"] = run_measured(JOBS[tool], str(imzml), "read", out)
            drop_sidecar(imzml)
            results[tool, "ion images (cold)"] = run_measured(JOBS[tool], str(imzml), "images", out)
            results[tool, "ion images (warm)"] = run_measured(JOBS[tool], str(imzml), "images", out)
            checks[tool] = agreement(np.load(out), reference)
        except RuntimeError as exc:
            skipped.append(f"{tool} (failed: {str(exc).splitlines()[-1][:120]})")
    rows = []
    for (tool, task), res in results.items():
        base = results.get(("pyimzML", task))
        ratio = f"{base['wall_s'] / res['wall_s']:.1f}x" if base else ""
        rows.append([tool, task, f"{res['s']:.2f}", f"{res['wall_s']:.2f}", ratio,
                     f"{res['anon_mb']:.0f}", f"{res['file_mb']:.0f}"])
    print(f"file: {imzml} ({imzml.stat().st_size / 1e9:.2f} GB XML, "
          f"{imzml.with_suffix('.ibd').stat().st_size / 1e9:.2f} GB ibd)")
    print(table(rows, ["tool", "task", "in-process s", "process s", "pyimzML/tool",
                       "anon MB", "file MB"]))
    print("images vs brute-force reference (max |diff| / channel max): "
          + ", ".join(f"{t} {v:.1e}" for t, v in checks.items()))
    print("skipped: " + (", ".join(skipped) if skipped else "none"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
