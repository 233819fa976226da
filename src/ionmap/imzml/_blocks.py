"""The spectrum list read as a stream of blocks of whole spectra, through one reusable
buffer: memory (anonymous and file-backed alike) is bounded by the block size, whatever
the file size; nothing is memory-mapped.

The source is anything with ``readinto`` (a local file opened unbuffered reads with
plain ``read`` system calls into the buffer; fsspec files and ``io.BytesIO`` work alike),
or a bytes-like object, read through :class:`BufferReader`.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

_LIST = b"<spectrumList"
_LIST_END = b"</spectrumList"
_SPECTRUM_END = b"</spectrum>"


class BufferReader:
    """``readinto`` over a bytes-like object (bytes, memory map, ...), without copying it."""

    def __init__(self, data: Any):
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def readinto(self, out: memoryview) -> int:
        n = min(len(out), len(self._view) - self._pos)
        out[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n

    def seek(self, pos: int) -> None:
        self._pos = pos


def advise_sequential(fh: Any) -> None:
    """Tell the kernel a local file is read once, front to back (read-ahead)."""
    try:
        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
    except (AttributeError, OSError, ValueError):
        pass


class SpectrumBlocks:
    """Header bytes, the ``<spectrumList ...>`` tag, then blocks of whole spectra.

    ``error(problem)`` makes the exception for a file that ends too early. Blocks are
    memoryviews of the one buffer, valid until the next block is requested.
    """

    def __init__(self, stream: Any, block_bytes: int, error: Callable[[str], Exception]):
        self._stream = stream
        self._block = max(1, int(block_bytes))
        self._error = error
        # grown (doubling) to about 2 blocks as a file needs: small files stay small
        self._buf = bytearray(min(2 * self._block, 2**20))
        self._filled = 0
        self._searched = 0  # self._buf[:searched] holds no end of the spectrum list
        self.header, self.list_tag = self._read_header()

    def _read(self) -> int:
        """Read more after what the buffer holds (growing it when full); bytes read."""
        if self._filled == len(self._buf):
            self._buf.extend(bytes(len(self._buf)))
        with memoryview(self._buf) as view:
            n = self._stream.readinto(view[self._filled :])
        n = n or 0
        self._filled += n
        return n

    def _read_header(self) -> tuple[bytes, bytes]:
        at = -1
        while True:
            got = self._read()
            if at < 0:
                at = self._buf.find(_LIST, 0, self._filled)
            if at >= 0:
                end = self._buf.find(b">", at, self._filled)
                if end >= 0:
                    break
            if not got:
                raise _NoSpectrumList(bytes(self._buf[: self._filled]))
        header = bytes(self._buf[:at])
        tag = bytes(self._buf[at : end + 1])
        self._drop(end + 1)
        return header, tag

    def _drop(self, n: int) -> None:
        """Forget the first ``n`` bytes of the buffer."""
        rest = self._filled - n
        self._buf[:rest] = self._buf[n : self._filled]  # same size: never reallocates
        self._filled = rest
        self._searched = max(0, self._searched - n)

    def _lend(self, n: int) -> Iterator[memoryview]:
        """The first ``n`` bytes as a view, released when the consumer asks for more."""
        with memoryview(self._buf) as view, view[:n] as block:
            yield block

    def __iter__(self) -> Iterator[memoryview]:
        while True:
            # the end tag may straddle what was searched before
            start = max(0, self._searched - len(_LIST_END))
            stop = self._buf.find(_LIST_END, start, self._filled)
            if stop >= 0:
                if stop:
                    yield from self._lend(stop)
                return
            self._searched = self._filled
            if self._filled >= self._block:
                cut = self._buf.rfind(_SPECTRUM_END, 0, self._filled)
                if cut >= 0:
                    cut += len(_SPECTRUM_END)
                    yield from self._lend(cut)
                    self._drop(cut)
                    continue
            if not self._read():
                raise self._error("the XML ends inside the spectrum list (truncated file?)")


class _NoSpectrumList(Exception):
    """The stream ended before a ``<spectrumList ...>`` tag; ``args[0]``: what was read."""
