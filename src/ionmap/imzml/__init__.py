"""Reading imzML: streaming metadata parse, sidecar cache, coalesced batched reads.

``open_imzml(path_or_url)`` returns an :class:`ImzMLFile`; its ``read_batch`` and
``iter_batches`` give :class:`ionmap.batch.SpectrumBatch` objects for the kernels and the
engine. Modules, one job each: :mod:`.cv` (vocabulary), :mod:`.numbers` and
:mod:`.reference` (the XML-parser reading), :mod:`.scanner` (the fast scan),
:mod:`.blocks` (streaming the spectrum list), :mod:`.xml` (the parse driver),
:mod:`.metadata` (frozen metadata), :mod:`.validate`, :mod:`.cache` (sidecar),
:mod:`.opener` (opening), :mod:`.file` (reading), :mod:`.binary` (byte ranges).
"""
from .file import DEFAULT_BATCH_BYTES, ImzMLFile
from .metadata import ImzMLMetadata
from .opener import open_imzml

__all__ = ["DEFAULT_BATCH_BYTES", "ImzMLFile", "ImzMLMetadata", "open_imzml"]
