"""Renderings of stored results: the per-sample HTML report, the hotspot overlay PNGs and
the class palette they share with the GeoJSON and label exports."""
from ._html import render_report, write_overlays, write_report
from ._palette import CLASS_RGB

__all__ = ["CLASS_RGB", "render_report", "write_overlays", "write_report"]
