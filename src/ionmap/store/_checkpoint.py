"""Progress checkpoints and the completion marker of a result store.

A store is complete only once ``attrs["ionmap"]["complete"]`` is true, written last; an
interrupted run leaves it false, so its output is never mistaken for a finished one.
"""
from __future__ import annotations

import time
from typing import Any

from ._backend import Store, update_root_attrs


class Checkpoint:
    """Records finished bands in the root attrs so that ``--resume`` can skip them.

    Only the driver process writes (no races); writes are throttled to one per
    ``interval`` seconds, and :meth:`flush` writes the rest. A band is recorded only after
    its task returned, i.e. after its data was written. ``key``: the progress list it keeps
    (``bands_done``, or ``spilled`` for the units of a one-pass feature run); checkpoints of
    one run share ``attrs``, and each write carries all of it.
    """

    def __init__(self, store: Store, attrs: dict, interval: float = 1.0,
                 key: str = "bands_done"):
        self.store = store
        self.attrs = attrs
        self.interval = interval
        self.key = key
        self._done = set(attrs["progress"][key])
        self._written = time.monotonic()
        self._dirty = False

    @property
    def done(self) -> set[int]:
        return set(self._done)

    def band_done(self, band: int) -> None:
        self._done.add(int(band))
        self._dirty = True
        if time.monotonic() - self._written >= self.interval:
            self.flush()

    def set(self, key: str, value: Any) -> None:
        """Record a progress flag (e.g. ``axis``, ``normalized``) and write it now."""
        self.attrs["progress"][key] = value
        self._dirty = True
        self.flush()

    def forget(self, *keys: str) -> None:
        """Drop progress entries (e.g. those of a deleted spill) and write now."""
        for key in keys:
            self.attrs["progress"].pop(key, None)
        self._dirty = True
        self.flush()

    def finish(self) -> None:
        """Write ``complete: true`` (the last write of a run)."""
        self.attrs["complete"] = True
        self._dirty = True
        self.flush()

    def flush(self) -> None:
        if not self._dirty:
            return
        self.attrs["progress"][self.key] = sorted(self._done)
        update_root_attrs(self.store, self.attrs)
        self._written = time.monotonic()
        self._dirty = False
