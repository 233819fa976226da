"""Benchmark of the region module on a 1000 × 1000-pixel result with 1 M cells.

Prints time and memory per stage (peak resident memory above the stage's start, sampled
every 2 ms; the process's RSS high-water mark at the end), and compares Gi* with the way a general spatial
statistics library computes it: a sparse queen-contiguity weights matrix (as libpysal
builds) times the value vector, one row per pixel. Data are planted (seeded): soft-edged
niches on a noisy tissue map; cells in a rotated, scaled, shifted µm frame, CD8 excluded
from half of the niches.

    python benchmarks/bench_regions.py                  # 1000 x 1000, 1 M cells
    python benchmarks/bench_regions.py --size 300 --cells 100000   # quick
"""
from __future__ import annotations

import argparse
import math
import resource
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psutil
from scipy import sparse, special

from ionmap.regions import (
    Cells,
    MSIData,
    Registration,
    bh_qvalues,
    build_maps,
    find_hotspots,
    fit_landmarks,
    gi_star,
    immune_context,
    read_cells,
    register_auto,
    run_hotspots,
)
from ionmap.regions._export import hotspots_geojson
from ionmap.report._figures import overlay

ROWS: list[tuple[str, float, float, str]] = []


class RssPeak:
    """Peak resident memory of this process, sampled every 2 ms by a thread (psutil,
    which distributed already requires); unlike tracemalloc it does not slow the code."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = 0
        self.running = False

    def _poll(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __enter__(self):
        self.start = self.peak = self.proc.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


@contextmanager
def stage(name: str, note: str = ""):
    with RssPeak() as mem:
        t0 = time.perf_counter()
        yield
        dt = time.perf_counter() - t0
    peak = (mem.peak - mem.start) / 2**20
    ROWS.append((name, dt, peak, note))
    print(f"  {name:<34} {dt:8.3f} s {peak:9.1f} MiB  {note}", flush=True)


def planted(size: int, n_cells: int, n_niches: int, seed: int):
    """Images, tissue, niches and cells (annotation frame, µm) of one synthetic section."""
    rng = np.random.default_rng(seed)
    ny = nx = size
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    theta = np.arctan2(yy - ny / 2, xx - nx / 2)
    r = 1 + 0.1 * np.cos(3 * theta + 0.7) + 0.06 * np.cos(2 * theta)
    tissue = np.hypot((xx - nx / 2) / (0.45 * nx), (yy - ny / 2) / (0.42 * ny)) < r
    del theta, r
    lactate = np.ones((ny, nx), np.float32)
    niches = []
    scale = size / 1000
    while len(niches) < n_niches:
        cx, cy = rng.uniform(0.2, 0.8, 2) * [nx, ny]
        rad = rng.uniform(6, 20) * max(scale, 0.3)
        if not tissue[int(cy), int(cx)] or any(
                math.hypot(cx - a, cy - b) < rad + c + 10 for a, b, c in niches):
            continue
        niches.append((cx, cy, rad))
        lo = (max(int(cy - rad - 4), 0), max(int(cx - rad - 4), 0))
        hi = (min(int(cy + rad + 5), ny), min(int(cx + rad + 5), nx))
        d = np.hypot(xx[lo[0]:hi[0], lo[1]:hi[1]] - cx, yy[lo[0]:hi[0], lo[1]:hi[1]] - cy)
        lactate[lo[0]:hi[0], lo[1]:hi[1]] += 2.0 * 0.5 * (1 - np.tanh((d - rad) / 1.2))
    del xx, yy
    tic = rng.uniform(0.8, 1.2, (ny, nx)).astype(np.float32) * 1e5
    noise = rng.lognormal(0, 0.2, (ny, nx)).astype(np.float32)
    images = {"lactate": np.where(tissue, 100 * lactate * noise * tic / 1e5, 0),
              "tryptophan": np.where(tissue, 150 * tic / 1e5, 0).astype(np.float32),
              "kynurenine": np.where(tissue, 80 * noise * tic / 1e5, 0).astype(np.float32)}
    # cells: uniform over the tissue; CD8 (15 %) removed inside every other niche
    xy = rng.uniform(-0.5, [nx - 0.5, ny - 0.5], (int(n_cells * tissue.size / tissue.sum()), 2))
    xy = xy[tissue[np.rint(xy[:, 1]).astype(int), np.rint(xy[:, 0]).astype(int)]][:n_cells]
    types = np.where(rng.uniform(size=len(xy)) < 0.15, "CD8", "Tumor")
    for cx, cy, rad in niches[::2]:
        inside = np.hypot(xy[:, 0] - cx, xy[:, 1] - cy) < rad
        types[inside & (types == "CD8")] = "Tumor"
    m = np.array([[25 * math.cos(0.3), -25 * math.sin(0.3), 40000.0],
                  [25 * math.sin(0.3), 25 * math.cos(0.3), 2000.0], [0, 0, 1]])
    ann = xy @ m[:2, :2].T + m[:2, 2]
    cells = Cells(ann[:, 0], ann[:, 1], types, "um")
    return images, tissue, tic, niches, cells, m


def gi_star_sparse(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Baseline: Gi* with an explicit sparse weights matrix (queen contiguity + self)."""
    ny, nx = values.shape
    idx = np.full(values.shape, -1, dtype=np.int64)
    valid = mask & np.isfinite(values)
    idx[valid] = np.arange(valid.sum())
    rows, cols = [], []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            a = idx[max(dy, 0):ny + min(dy, 0), max(dx, 0):nx + min(dx, 0)]
            b = idx[max(-dy, 0):ny + min(-dy, 0), max(-dx, 0):nx + min(-dx, 0)]
            ok = (a >= 0) & (b >= 0)
            rows.append(a[ok])
            cols.append(b[ok])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    n = int(valid.sum())
    w = sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    x = values[valid].astype(np.float64)
    xbar, s = x.mean(), x.std()
    wsum = np.asarray(w.sum(axis=1)).ravel()
    z = (w @ x - xbar * wsum) / (s * np.sqrt((n * wsum - wsum**2) / (n - 1)))
    out = np.full(values.shape, np.nan)
    out[valid] = z
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1000, help="grid side in pixels (1000)")
    ap.add_argument("--cells", type=int, default=1_000_000, help="number of cells (1 M)")
    ap.add_argument("--niches", type=int, default=30, help="planted niches (30)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="output folder for the full run (default: a temp dir)")
    args = ap.parse_args()

    print(f"region benchmark: {args.size} x {args.size} px, {args.cells:,} cells, "
          f"{args.niches} niches")
    with stage("plant data (not ionmap)"):
        images, tissue, tic, niches, cells, truth = planted(args.size, args.cells,
                                                            args.niches, args.seed)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-regions-"))
    out.mkdir(parents=True, exist_ok=True)
    table = out / "cells.csv"
    with table.open("w") as f:
        f.write("Class,Centroid X µm,Centroid Y µm\n")
        for t in np.unique(cells.cell_type):
            sel = cells.cell_type == t
            np.savetxt(f, np.column_stack([cells.x[sel], cells.y[sel]]), fmt=f"{t},%.2f,%.2f")
    with stage("read_cells (QuPath CSV)", f"{len(cells):,} rows"):
        read_cells(table)
    px = (25.0, 25.0)
    groups = {"lactate": "glycolysis", "tryptophan": "kynurenine_pathway",
              "kynurenine": "kynurenine_pathway"}
    with stage("build_maps (lactate, kyn_trp)"):
        maps = build_maps(images, tissue, ["lactate", "kyn_trp"], groups, tic=tic)
    values = maps["lactate"]
    with stage("gi_star (uniform filters)"):
        z = gi_star(values, tissue)
    with stage("gi_star baseline (sparse W @ x)"):
        z_ref = gi_star_sparse(values, tissue)
    assert np.allclose(z[tissue], z_ref[tissue], atol=1e-8)
    with stage("BH over all pixels"):
        bh_qvalues(special.ndtr(-z[tissue]))
    with stage("find_hotspots (Gi*, BH, regions)"):
        hs = find_hotspots(values, tissue)
    found = sum(any(math.hypot(h["centroid_x"] - cx, h["centroid_y"] - cy) < r
                    for h in hs.table) for cx, cy, r in niches)
    lm = np.array([[x, y] for x in (50, args.size / 2, args.size - 50)
                   for y in (50, args.size - 50)], dtype=float)
    with stage("fit_landmarks (6 points)"):
        reg = fit_landmarks((lm, lm @ truth[:2, :2].T + truth[:2, 2]))
    with stage("cells to MSI pixels"):
        cells_msi = reg.to_msi(cells.xy)
    with stage("immune_context (1 map)"):
        ctx = immune_context(hs.labels, cells_msi, cells.cell_type, tissue, px)
    # every other niche (0, 2, ...) had its CD8 removed: not inflamed; the others inflamed
    right = 0
    for h, row in zip(hs.table, ctx.table):
        i = next((i for i, (cx, cy, r) in enumerate(niches)
                  if math.hypot(h["centroid_x"] - cx, h["centroid_y"] - cy) < r), None)
        right += i is not None and (row["class"] == "inflamed") == (i % 2 == 1)
    with stage("register_auto"):
        auto = register_auto(tissue, cells, pixel_size_um=px)
    yy, xx = np.nonzero(tissue[::10, ::10])
    pts = np.column_stack([xx, yy]) * 10.0
    auto_err = np.linalg.norm(auto.to_msi(pts @ truth[:2, :2].T + truth[:2, 2]) - pts,
                              axis=1).max()
    rows = [{"id": t["label"], "map": "lactate", "class": c["class"], **t}
            for t, c in zip(hs.table, ctx.table)]
    with stage("GeoJSON outlines"):
        hotspots_geojson({"lactate": hs.labels}, rows, matrix=reg.matrix)
    with stage("PNG overlay (CD8 cells)"):
        png = overlay(values, hs.labels, rows, cells_msi[cells.cell_type == "CD8"],
                      unit="TIC-normalised", pixel_size_um=px[0], title="lactate",
                      cell_label="CD8")
        (out / "overlay.png").write_bytes(png)
    data = MSIData(images, tissue, tic, px, groups)
    with stage("run_hotspots, 2 maps, all outputs", "landmarks"):
        run_hotspots(data, cells, Registration(reg.matrix, "matrix"), out,
                     maps=["lactate", "kyn_trp"])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = dict((name, dt) for name, dt, _, _ in ROWS)
    print()
    print(f"{'stage':<36}{'time (s)':>10}{'+RSS (MiB)':>12}")
    for name, dt, peak, _ in ROWS:
        print(f"{name:<36}{dt:>10.3f}{peak:>12.1f}")
    print()
    print(f"Gi* speed-up over the sparse-weights baseline: "
          f"{t['gi_star baseline (sparse W @ x)'] / t['gi_star (uniform filters)']:.1f}x")
    print(f"planted niches found: {found}/{len(niches)}; hotspots: {len(hs)}; "
          f"inflamed vs CD8-depleted right: {right}/{len(niches)}")
    print(f"automatic registration: max error {auto_err:.2f} MSI px over the tissue")
    inputs = sum(a.nbytes for a in (*images.values(), tissue, tic, cells.x, cells.y,
                                     cells.cell_type)) / 2**20
    print(f"process RSS high-water mark: {rss:.0f} MiB (the input arrays: {inputs:.0f} MiB)")


if __name__ == "__main__":
    main()
