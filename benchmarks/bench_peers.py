"""ionmap against the other Python imzML readers, as whole processes on the same files.

Installs nothing. pyimzML (a dependency) is always run as the baseline; imzy, thyra,
bioio-imzml, msiverse and massflow run when importable by the peer interpreter
(``--peer-python``, default this one; they live best in a separate virtual environment, as
thyra pins an older dask and massflow needs Python >= 3.12), else are reported as skipped.
Peer jobs need only the peer and NumPy: the panel's m/z values and the window reach them on
the command line. Tasks, each a fresh process measured from outside (wall time, peak
RssAnon and RssFile, see ``_measure.py``), with the files in the page cache:

- open (cold): parse the metadata with no cache of the tool's own present (ionmap: no
  sidecar; imzy: no ``.icache``);
- open (warm): the same again, the tool's own cache (if any) now present;
- read all: every spectrum, in file order, through the tool's per-spectrum API ("n/a" for a
  tool that has none);
- ion images (cold / warm): the ``tme-negative`` panel, +-10 ppm windows, from a fresh
  process; cold with no cache of the tool's own, warm with the cache the cold run left
  (ionmap: the sidecar; imzy: ``.icache``; thyra: the SpatialData store its conversion
  wrote, read back). Each tool through its own documented entry point for many images
  at once, in memory (ionmap ``ionmap.kernels.ion_images``: the recorded axis, as the
  peers; ``ionmap.convert`` also recalibrates, scores and writes a store;
  imzy ``get_ion_images``, bioio-imzml ``mz=`` channels, msiverse
  ``bin_spectra(ref=...)``, thyra ``convert_msi`` then columns of the table).

Every tool's ion images are checked against a brute-force reference (every spectrum read
with pyimzML, a boolean mask of the inclusive window, summed in float64): the largest
relative difference is printed; a tool whose windows are defined differently shows it there.
A task that fails is reported as "failed: <last line of its error>", the rest go on.

    python benchmarks/bench_peers.py [WORKDIR] [--size 0.1GB] [--peer-python PATH] [--repeat N]
                                     [--peers imzy,thyra,...]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import centroid_sample, drop_sidecar, run_measured, table  # noqa: E402

PPM = 10.0
PANEL = "tme-negative"
TASKS = ("open (cold)", "open (warm)", "read all", "ion images (cold)", "ion images (warm)")

# Each job: argv = imzml, task (open|read|images), output .npy (images), targets (JSON list
# of m/z), ppm; prints one JSON object: {"s": in-process seconds} or {"na": why not}.
_COMMON = """
import json, sys, time
import numpy as np
path, task, out = sys.argv[1], sys.argv[2], sys.argv[3]
targets, ppm = np.array(json.loads(sys.argv[4])), float(sys.argv[5])
lo, hi = targets * (1 - ppm * 1e-6), targets * (1 + ppm * 1e-6)
"""

JOBS = {
    "ionmap": _COMMON + """
import ionmap
if task == "images":
    import ionmap.kernels
t = time.perf_counter()
if task == "open":
    f = ionmap.open_imzml(path)
elif task == "read":
    f = ionmap.open_imzml(path)
    total = 0.0
    for b in f.iter_batches():
        total += float(b.intensity.sum(dtype=np.float64))
else:  # in memory, as the peers give them (ionmap.convert also recalibrates and stores)
    np.save(out, ionmap.kernels.ion_images(path, targets, ppm, fill=0.0))
print(json.dumps({"s": time.perf_counter() - t}))
""",
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
    for mz, it in r.spectra_iter(silent=True):
        total += float(np.sum(it, dtype=np.float64))
elif task == "images":
    np.save(out, r.get_ion_images(targets, ppm=ppm, fill_value=0.0, silent=True))
print(json.dumps({"s": time.perf_counter() - t}))
""",
    "thyra": _COMMON + """
import logging
from pathlib import Path
logging.disable(logging.WARNING)
errors = []  # thyra logs why a conversion failed and returns False
handler = logging.Handler(logging.ERROR)
handler.emit = lambda record: errors.append(record.getMessage().split(". ")[0])
logging.getLogger("thyra").addHandler(handler)
t = time.perf_counter()
if task == "open":  # the spectrum index (preview_msi reads the header only)
    from thyra.readers.imzml import ImzMLReader
    ImzMLReader(Path(path)).n_spectra
elif task == "read":
    from thyra.readers.imzml import ImzMLReader
    r = ImzMLReader(Path(path))
    total = 0.0
    for coords, mz, it in r.iter_spectra():
        total += float(np.sum(it, dtype=np.float64))
    r.close()
else:
    store = Path(out + ".zarr")
    if not store.exists():  # cold: thyra converts; warm: its store is read back
        import thyra
        if not thyra.convert_msi(path, str(store)):
            raise RuntimeError(errors[0] if errors else "convert_msi returned False")
    import spatialdata as sd
    table = sd.read_zarr(store).tables["msi_dataset_z0"]
    mz = table.var["mz"].to_numpy()
    x, y = table.obs["x"].to_numpy(int), table.obs["y"].to_numpy(int)
    X = table.X.tocsc()
    images = np.zeros((len(targets), y.max() + 1, x.max() + 1))
    for k in range(len(targets)):
        cols = np.flatnonzero((mz >= lo[k]) & (mz <= hi[k]))
        images[k, y, x] = np.asarray(X[:, cols].sum(axis=1)).ravel()
    np.save(out, images)
print(json.dumps({"s": time.perf_counter() - t}))
""",
    "bioio-imzml": _COMMON + """
import bioio_imzml
t = time.perf_counter()
if task == "read":
    print(json.dumps({"na": "no per-spectrum API (an image reader: m/z channels)"}))
    raise SystemExit
r = bioio_imzml.Reader(path, mz=targets, mz_tolerance_relative=ppm * 1e-6)
if task == "images":
    data = np.asarray(r.data)[0, :, 0]  # (C, Y, X), channels in ascending m/z
    np.save(out, data[np.argsort(np.argsort(targets))].astype(np.float64))
print(json.dumps({"s": time.perf_counter() - t}))
""",
    "msiverse": _COMMON + """
import msiverse.io
t = time.perf_counter()
a = msiverse.io.read_imzml(path)
if task == "read":
    total = 0.0
    for mz, it in zip(a.mz, a.intensity):
        total += float(np.sum(it, dtype=np.float64))
elif task == "images":
    ad = msiverse.io.bin_spectra(a, ref=targets, method="sum", tolerance=ppm, units="ppm")
    xy = np.asarray(a.coordinates)[:, :2].astype(int)  # imzML's, 1-based
    images = np.zeros((len(targets), xy[:, 1].max(), xy[:, 0].max()))
    images[:, xy[:, 1] - 1, xy[:, 0] - 1] = np.asarray(ad.X.todense()).T
    np.save(out, images)
print(json.dumps({"s": time.perf_counter() - t}))
""",
    "massflow": _COMMON + """
import logging
logging.disable(logging.WARNING)
from massflow.data_manager import MSDataManagerImzML
t = time.perf_counter()
dm = MSDataManagerImzML(filepath=path, max_threads=2)
dm.load_head_data()
if task == "read":
    total = 0.0
    for mz, it, lengths, coords in dm.flat_generator(include_mz=True, max_threads=2):
        total += float(np.sum(it, dtype=np.float64))
elif task == "images":
    from massflow.tools.plot_ion_image import read_ion_image
    np.save(out, np.stack([read_ion_image(dm, mz=float(m), mz_tolerance=float(m) * ppm * 1e-6)
                           for m in targets]))
print(json.dumps({"s": time.perf_counter() - t}))
""",
}
#: importable module and distribution of each peer; peers without a job are reported, not run
PEERS = {"imzy": ("imzy", "imzy"), "thyra": ("thyra", "thyra"),
         "bioio-imzml": ("bioio_imzml", "bioio-imzml"), "msiverse": ("msiverse", "msiverse"),
         "massflow": ("massflow", "massflow")}

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
print(json.dumps({"spectra": len(xy)}))
"""

_PROBE = """
import importlib.metadata, importlib.util, json, sys
found = {}
for module, dist in json.loads(sys.argv[1]):
    if importlib.util.find_spec(module) is not None:
        try:
            found[module] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[module] = "?"
print(json.dumps(found))
"""


def peer_versions(python: str) -> dict[str, str]:
    """The peers importable by ``python``: module name -> installed version."""
    out = subprocess.run([python, "-c", _PROBE, json.dumps(list(PEERS.values()))],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def agreement(images: np.ndarray, reference: np.ndarray) -> float:
    """Largest difference relative to the reference image's maximum, over channels. The
    reference covers the pixels that have spectra; a tool's grid may be larger (the
    declared max count of pixels), where its images must be zero."""
    if images.ndim != 3 or len(images) != len(reference) or any(
            a < b for a, b in zip(images.shape[1:], reference.shape[1:])):
        return float("inf")
    padded = np.zeros(images.shape)
    padded[:, : reference.shape[1], : reference.shape[2]] = reference
    scale = np.maximum(padded.reshape(len(padded), -1).max(axis=1), 1e-30)
    diff = np.abs(np.nan_to_num(images) - padded).reshape(len(padded), -1).max(axis=1)
    return float((diff / scale).max())


def drop_caches(imzml: Path, out: str) -> None:
    """Remove what a tool keeps between runs (ionmap's sidecar, imzy's ``.icache``, the
    SpatialData store thyra's images job converts to), so that its next run is cold."""
    drop_sidecar(imzml)
    imzml.with_suffix(".icache").unlink(missing_ok=True)
    shutil.rmtree(out + ".zarr", ignore_errors=True)


def measure(tool: str, task: str, imzml: Path, out: str, extra: list[str], python: str,
            repeat: int) -> dict:
    """Median over ``repeat`` runs of one task of one tool (wall, in-process seconds and
    both RSS peaks, each its own median), the tool's caches dropped before every run of a
    cold task; ``{"failed": line}`` or ``{"na": why}`` instead when the job says so."""
    kind = task.split(" (")[0].split()[0]  # "open", "read", "ion" -> job task name
    runs = []
    for _ in range(repeat):
        if task.endswith("(cold)"):
            drop_caches(imzml, out)
        try:
            runs.append(run_measured(JOBS[tool], str(imzml), "images" if kind == "ion" else kind,
                                     out, *extra, python=python, cwd=imzml.parent))
        except RuntimeError as exc:
            return {"failed": str(exc).strip().splitlines()[-1][:150]}
        if "na" in runs[-1]:
            return {"na": runs[-1]["na"]}
    return {k: statistics.median(r[k] for r in runs) for k in ("s", "wall_s", "anon_mb", "file_mb")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workdir", nargs="?", default="/tmp/ionmap-bench-peers")
    ap.add_argument("--size", default="0.1GB", help="synthetic .ibd size (ionmap synth --size)")
    ap.add_argument("--peer-python", default=sys.executable,
                    help="interpreter of the peers' environment (ionmap and pyimzML run here)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per task; medians are shown")
    ap.add_argument("--peers", help="comma-separated peers to run (default: every importable one)")
    args = ap.parse_args(argv)
    wanted = set(args.peers.split(",")) if args.peers else set(PEERS)
    load = os.getloadavg()
    work = Path(args.workdir).resolve()  # the jobs run in it (massflow writes logs/ there)
    work.mkdir(parents=True, exist_ok=True)
    imzml = centroid_sample(work, args.size)
    for p in (imzml, imzml.with_suffix(".ibd")):
        p.read_bytes()  # page cache warm for everyone
    import ionmap.chem

    targets = [t.mz for t in ionmap.chem.panel(PANEL)]
    extra = [json.dumps(targets), repr(PPM)]
    ref_path = work / "reference.npy"
    spectra = run_measured(REFERENCE, str(imzml), "images", str(ref_path), *extra)["spectra"]
    reference = np.load(ref_path)

    versions = peer_versions(args.peer_python)
    tools, skipped = ["ionmap", "pyimzML"], []
    for name, (module, _) in PEERS.items():
        if name not in wanted:
            skipped.append(f"{name} (not asked for)")
        elif module not in versions:
            skipped.append(f"{name} (not importable by {args.peer_python})")
        elif name not in JOBS:
            skipped.append(f"{name} {versions[module]} (installed; no job written for it)")
        else:
            tools.append(name)
    results: dict[tuple[str, str], dict] = {}
    checks: dict[str, str] = {}
    for tool in tools:
        python = sys.executable if tool in ("ionmap", "pyimzML") else args.peer_python
        out = str(work / f"images-{tool}.npy")
        Path(out).unlink(missing_ok=True)
        for task in TASKS:
            print(f"{tool}: {task}", file=sys.stderr, flush=True)
            results[tool, task] = measure(tool, task, imzml, out, extra, python, args.repeat)
        checks[tool] = (f"{agreement(np.load(out), reference):.1e}" if Path(out).exists()
                        else "no images")
        drop_caches(imzml, out)

    rows = []
    for (tool, task), res in results.items():
        if "wall_s" not in res:
            why = f"failed: {res['failed']}" if "failed" in res else f"n/a: {res['na']}"
            rows.append([tool, task, why, "", "", "", "", ""])
            continue
        own = results.get(("ionmap", task), {}).get("wall_s")
        base = results.get(("pyimzML", task), {}).get("wall_s")
        rows.append([tool, task, f"{res['s']:.2f}", f"{res['wall_s']:.2f}",
                     f"{res['wall_s'] / own:.1f}x" if own else "",
                     f"{base / res['wall_s']:.1f}x" if base else "",
                     f"{res['anon_mb']:.0f}", f"{res['file_mb']:.0f}"])
    print(f"file: {imzml} ({spectra:,} spectra, {imzml.stat().st_size / 1e9:.2f} GB XML, "
          f"{imzml.with_suffix('.ibd').stat().st_size / 1e9:.2f} GB ibd); "
          f"{len(targets)} targets +-{PPM:g} ppm; medians of {args.repeat}; load average "
          f"{load[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    print("peers: " + (", ".join(f"{m} {v}" for m, v in versions.items()) or "none")
          + f" (under {args.peer_python})")
    print(table(rows, ["tool", "task", "in-process s", "process s", "tool/ionmap",
                       "pyimzML/tool", "anon MB", "file MB"]))
    print("images vs brute-force reference (max |diff| / channel max): "
          + ", ".join(f"{t} {v}" for t, v in checks.items()))
    print("skipped: " + (", ".join(skipped) if skipped else "none"))
    print(targets_met(results))
    return 0


def targets_met(results: dict[tuple[str, str], dict]) -> str:
    """Issue 14's targets on process time: >= 3x imzy on the warm tasks, >= 20x every peer
    on the cold ones; each as ``peer task ratio met|not met``."""
    lines = []
    for (tool, task), res in results.items():
        own = results.get(("ionmap", task), {}).get("wall_s")
        want = 20.0 if task.endswith("(cold)") else 3.0 if (
            tool == "imzy" and task.endswith("(warm)")) else None
        if tool in ("ionmap", "pyimzML") or want is None or not own:
            continue
        got = f"{res['wall_s'] / own:.1f}x" if "wall_s" in res else "no figure"
        met = "wall_s" in res and res["wall_s"] / own >= want
        lines.append(f"  {tool} {task}: {tool}/ionmap {got} (target >= {want:g}x): "
                     + ("met" if met else "not met"))
    return "targets (process time):\n" + ("\n".join(lines) if lines else "  no peer ran")


if __name__ == "__main__":
    raise SystemExit(main())
