"""The spectrum list read as a stream of blocks of whole spectra: memory (anonymous and
file-backed alike) is bounded by the block size, whatever the file size.

A local file (an unbuffered ``io.FileIO`` on a regular file) is memory-mapped one span
of about two blocks at a time, each span unmapped before the next is mapped: the
scan then reads the page cache in place instead of copying it (a ``read`` copy costs
more than the scan itself). Any other source with ``readinto`` (fsspec files,
``io.BytesIO``), or a bytes-like object read through :class:`BufferReader`, is read into
one reusable buffer of about two blocks.
"""
from __future__ import annotations

import io
import mmap
import os
import stat
from collections.abc import Callable, Iterator
from typing import Any

from .._xmlscan import find

_LIST = b"<spectrumList"
_LIST_END = b"</spectrumList"
_SPECTRUM_END = b"</spectrum>"
_SEQUENTIAL = getattr(mmap, "MADV_SEQUENTIAL", None)  # read-ahead hint, where there is one


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
        self._fd = _mappable(stream)

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
        if self._fd is not None:
            yield from self._mapped(self._fd)
            return
        while True:
            # the end tag may straddle what was searched before
            start = max(0, self._searched - len(_LIST_END))
            stop = find(self._buf, _LIST_END, start, self._filled)
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
                raise self._truncated()

    def _truncated(self) -> Exception:
        return self._error("the XML ends inside the spectrum list (truncated file?)")

    def _mapped(self, fd: int) -> Iterator[memoryview]:
        """The blocks of a local file, from spans mapped one at a time."""
        size = os.fstat(fd).st_size
        pos = self._stream.tell() - self._filled  # file offset of what follows the list tag
        self._buf = bytearray()  # what the header read left is mapped again
        self._filled = self._searched = 0
        span = 2 * self._block
        while True:
            base = pos - pos % mmap.ALLOCATIONGRANULARITY
            start = pos - base
            length = min(size - base, start + span)
            if length <= start:
                raise self._truncated()
            with mmap.mmap(fd, length, offset=base, access=mmap.ACCESS_READ) as mapped:
                if _SEQUENTIAL is not None:
                    mapped.madvise(_SEQUENTIAL)
                with memoryview(mapped) as view:
                    stop = cut = find(view, _LIST_END, start, length)
                    if stop < 0:
                        if base + length == size:
                            raise self._truncated()
                        cut = mapped.rfind(_SPECTRUM_END, start, length)
                        cut = cut + len(_SPECTRUM_END) if cut >= 0 else -1
                    if cut > start:
                        with view[start:cut] as block:
                            yield block
            if stop >= 0:
                return
            if cut < 0:
                span *= 2  # one spectrum larger than the span: map more at once
            else:
                pos = base + cut


class _NoSpectrumList(Exception):
    """The stream ended before a ``<spectrumList ...>`` tag; ``args[0]``: what was read."""


def _mappable(stream: Any) -> int | None:
    """The descriptor of a stream that is an unbuffered local regular file (mapped in
    spans), else None (read through the buffer)."""
    if not isinstance(stream, io.FileIO):
        return None
    try:
        return stream.fileno() if stat.S_ISREG(os.fstat(stream.fileno()).st_mode) else None
    except OSError:
        return None
