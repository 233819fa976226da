"""Regions: co-registration, metabolite maps, hotspots and their immune context.

Plain arrays in, plain data out, so scripts can call every step without a result store::

    from ionmap import regions
    cells = regions.read_cells("sample.cells.csv")
    reg = regions.fit_landmarks("sample.landmarks.csv")          # or register_auto(...)
    maps = regions.build_maps(images, tissue, ["lactate", "kyn_trp"], groups, tic=tic)
    hs = regions.find_hotspots(maps["lactate"], tissue, fdr=0.05)
    ctx = regions.immune_context(hs.labels, reg.to_msi(cells.xy), cells.cell_type, tissue,
                                 pixel_size_um=25.0)

or everything at once, with every export: :func:`run_hotspots` (the ``ionmap hotspots``
command); its files are written by :mod:`ionmap.regions._export` (CSV, GeoJSON, PNG) and
described by :func:`ionmap.regions._run.run_summary`. Frames: MSI pixels are (x, y), 0-based,
pixel centres at integers; the annotation frame is that of the cell file (µm or histology
pixels, origin top-left).
"""
from ._cells import Cells, read_cells, read_class_table
from ._export import outlines as outlines
from ._export import write_csv as write_csv
from ._hotspots import Hotspots, bh_qvalues, find_hotspots, gi_star
from ._immune import CLASSES as CLASSES
from ._immune import COMPARTMENTS as COMPARTMENTS
from ._immune import ImmuneContext, classify, edge_distance, exclusion_score, immune_context
from ._maps import build_maps, ratio, resolve_map
from ._register import Registration, fit_landmarks, read_landmarks, register_auto
from ._run import HotspotRun, MSIData, run_hotspots
from ._run import label_name as label_name
from ._run import load_result as load_result
from ._run import run_summary as run_summary
from ._run import store_maps as store_maps
from ._tissue import read_tissue_mask, tissue_mask

__all__ = [
    "Cells", "read_cells", "read_class_table",
    "Registration", "fit_landmarks", "read_landmarks", "register_auto",
    "build_maps", "ratio", "resolve_map", "tissue_mask", "read_tissue_mask",
    "Hotspots", "find_hotspots", "gi_star", "bh_qvalues",
    "ImmuneContext", "immune_context", "classify", "exclusion_score", "edge_distance",
    "HotspotRun", "MSIData", "run_hotspots",
]
#: Also imported from here by the layers above (report, pipeline, cli) but not part of the
#: analysis API (plumbing between the store, the exports and the report).
_PLUMBING = ("outlines", "write_csv", "CLASSES", "COMPARTMENTS", "label_name", "run_summary",
             "load_result", "store_maps")
