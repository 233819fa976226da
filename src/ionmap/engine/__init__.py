"""The conversion engine: imzML spectra -> OME-Zarr ion images, as Dask tasks over bands.

- :mod:`~ionmap.engine._plan`: spectra -> spatial bands aligned to the store's shards;
- :mod:`~ionmap.engine._compute`: one band's spectra -> its output block (kernels);
- :mod:`~ionmap.engine._run`: local threaded or distributed execution with progress.

It writes through :mod:`ionmap.store`. The public entry points are :func:`ionmap.convert`
and :func:`ionmap.open_result`; the pipeline imports :func:`convert`, :func:`resolve_targets`,
:func:`check_scheduler` and :func:`scheduler_client` from here.
"""
from ._convert import convert, resolve_targets
from ._run import check_scheduler, scheduler_client

__all__ = ["convert", "resolve_targets", "check_scheduler", "scheduler_client"]
