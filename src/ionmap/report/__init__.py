"""Renderings of stored results: the per-sample HTML report, the hotspot overlay PNGs and
the class palette they share with the GeoJSON and label exports, and the napari reader of
a result store (:func:`napari_layers`)."""
from ._html import render_report, write_overlays, write_report
from ._napari import napari_layers
from ._palette import CLASS_RGB

__all__ = ["CLASS_RGB", "napari_layers", "render_report", "write_overlays", "write_report"]
