"""The error hierarchy.

Every problem with a user's input or environment is an :class:`IonmapError` whose message
is one line naming the file (or URL) and the problem. The CLI prints that line and exits
with code 2; it never shows a traceback for these.

The classes also derive from the matching builtins, so plain Python handlers work:
:class:`InputError` is a ``ValueError`` (every argument mistake, from the API, the CLI or
a config file, raises it), :class:`StorageError` an ``OSError`` and
:class:`MissingIbdError` a ``FileNotFoundError``.

>>> try:
...     raise InputError("targets.csv", "no name column")
... except ValueError as exc:
...     print(exc)
targets.csv: no name column
"""
from __future__ import annotations

import os


class IonmapError(Exception):
    """A problem with the user's input, output or settings, reported in one line."""

    def __init__(self, path: str | os.PathLike | None, problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(problem if self.path is None else f"{self.path}: {problem}")

    def __str__(self) -> str:  # never OSError's "[Errno ...]" form of the two arguments
        return self.problem if self.path is None else f"{self.path}: {self.problem}"

    def __reduce__(self):
        # Rebuild from (path, problem) so errors raised on Dask workers survive pickling.
        return type(self), (self.path, self.problem)


class IonmapWarning(UserWarning):
    """Input that gives a valid but probably unintended result (e.g. all images zero)."""


class InputError(IonmapError, ValueError):
    """Bad user input other than imzML: targets CSV, pipeline config, cell annotations."""


class StorageError(IonmapError, OSError):
    """Output cannot be written or an object store cannot be reached."""


class ImzMLError(IonmapError):
    """An imzML/ibd pair that cannot be read correctly."""


class ImzMLFormatError(ImzMLError):
    """Malformed or non-conforming imzML XML (missing required metadata, bad values)."""


class MissingIbdError(ImzMLError, FileNotFoundError):
    """No .ibd file beside the .imzML (looked up case-insensitively)."""


class UUIDMismatchError(ImzMLError):
    """The 16-byte UUID at the head of the .ibd differs from the XML's IMS:1000080."""


class TruncatedIbdError(ImzMLError):
    """A spectrum's offset + length reaches beyond the end of the .ibd."""


class UnsupportedImzMLError(ImzMLError):
    """Valid imzML that ionmap does not support (for example 3-D data, z > 1)."""


class SpectrumDataError(ImzMLError):
    """Spectrum values that would give a wrong image (unsorted m/z, NaN/inf intensities)."""
