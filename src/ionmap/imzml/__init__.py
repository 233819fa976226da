"""Reading imzML: fast metadata parse, sidecar cache, coalesced batched reads.

``open_imzml(path_or_url)`` returns an :class:`ImzMLFile`; its ``read_batch`` and
``iter_batches`` give :class:`ionmap.batch.SpectrumBatch` objects for the kernels and the
engine.
"""
from .file import DEFAULT_BATCH_BYTES, ImzMLFile, open_imzml

__all__ = ["DEFAULT_BATCH_BYTES", "ImzMLFile", "open_imzml"]
