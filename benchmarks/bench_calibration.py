"""Calibration of the hotspot calls: false hotspots on null maps and power on planted niches.

Null: maps with no niche, inside an elliptical tissue mask, of four kinds: i.i.d. log-normal
noise; smooth Gaussian fields (correlation length 2-10 px); a TIC-like multiplicative field
(smooth ionisation x pixel scatter); and smooth + TIC combined. For each map the default
:func:`ionmap.regions.find_hotspots` is run and the significant hotspots are counted.
Power: a disc of radius r px at fold contrast c is planted into a smooth null map (length
4 px, log-SD 0.3) and into an i.i.d. one (log-SD 0.3); it is found when a significant
hotspot covers its centre. Seeds are fixed (the same maps in every run).

Target (issue 11): <= 0.05 false hotspots per null map on average; >= 95 % of niches with
r >= 3 px at 3x contrast found. Prints one table.

    python benchmarks/bench_calibration.py [--maps 50] [--shape 80 100]
"""
from __future__ import annotations

import argparse
import zlib

import numpy as np
from scipy import ndimage

from ionmap.regions import find_hotspots


def _tissue(shape: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - shape[0] / 2) / (0.45 * shape[0])) ** 2 + (
        (xx - shape[1] / 2) / (0.45 * shape[1])) ** 2 <= 1


def _smooth(shape, length, rng):
    f = ndimage.gaussian_filter(rng.normal(size=shape), length, mode="wrap")
    return f / f.std()


def null_map(kind: str, shape, rng) -> np.ndarray:
    """One positive null map of ``kind`` (no niche)."""
    if kind == "iid":
        return np.exp(0.3 * rng.normal(size=shape))
    if kind.startswith("smooth"):
        return np.exp(0.3 * _smooth(shape, float(kind[6:]), rng))
    tic = np.exp(0.3 * _smooth(shape, 8.0, rng) + 0.2 * rng.normal(size=shape))
    if kind == "tic":
        return tic * np.exp(0.05 * rng.normal(size=shape))
    return tic * np.exp(0.3 * _smooth(shape, 4.0, rng))  # combined


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maps", type=int, default=50, help="maps per kind and per niche cell")
    ap.add_argument("--shape", type=int, nargs=2, default=(80, 100))
    args = ap.parse_args()
    shape = tuple(args.shape)
    tissue = _tissue(shape)
    print(f"{'kind':<22} {'maps':>5} {'false hotspots/map':>19} {'maps with any':>14}")
    for kind in ("iid", "smooth2", "smooth5", "smooth10", "tic", "combined"):
        rng = np.random.default_rng(zlib.crc32(kind.encode()))
        counts = [len(find_hotspots(null_map(kind, shape, rng), tissue, seed=i).table)
                  for i in range(args.maps)]
        print(f"null {kind:<17} {args.maps:>5} {np.mean(counts):>19.3f} "
              f"{np.mean(np.array(counts) > 0):>14.3f}")
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx = shape[0] // 2, shape[1] // 2
    print(f"{'planted niche':<22} {'maps':>5} {'found (smooth 4 px)':>19} {'found (iid)':>14}")
    for radius in (3, 5, 10, 15):
        for contrast in (1.5, 2.0, 3.0):
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
            found = []
            for background in ("smooth4", "iid"):
                rng = np.random.default_rng([radius, int(contrast * 10), len(background)])
                found.append(np.mean([
                    find_hotspots(null_map(background, shape, rng) * np.where(disc, contrast, 1.0),
                                  tissue, seed=i).labels[cy, cx] > 0 for i in range(args.maps)]))
            print(f"r={radius:>2} px, {contrast:g}x{'':<11} {args.maps:>5} {found[0]:>19.3f} "
                  f"{found[1]:>14.3f}")


if __name__ == "__main__":
    main()
