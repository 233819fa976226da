"""Reading imzML: streaming metadata parse, sidecar cache, coalesced batched reads.

``open_imzml(path_or_url)`` returns an :class:`ImzMLFile`; its ``read_batch`` and
``iter_batches`` give :class:`ionmap.batch.SpectrumBatch` objects for the kernels and the
engine. Modules, one job each: :mod:`._cv` (vocabulary), :mod:`._numbers` and
:mod:`._reference` (the XML-parser reading), :mod:`._scanner` (the fast scan),
:mod:`._blocks` (streaming the spectrum list), :mod:`._xml` (the parse driver),
:mod:`._metadata` (frozen metadata), :mod:`._validate`, :mod:`._cache` (sidecar),
:mod:`._opener` (opening), :mod:`._file` (reading), :mod:`._binary` (byte ranges).
"""
from ._file import DEFAULT_BATCH_BYTES, ImzMLFile
from ._metadata import ImzMLMetadata
from ._opener import open_imzml

__all__ = ["DEFAULT_BATCH_BYTES", "ImzMLFile", "ImzMLMetadata", "open_imzml"]
