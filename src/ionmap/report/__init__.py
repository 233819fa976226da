"""The per-sample report: one self-contained HTML file with every picture embedded."""
from .html import write_report

__all__ = ["write_report"]
