"""Keeping the cyclic garbage collector off the worker's live device states.

Every device's state is a few dozen Python containers (windows, sums, baselines)
that live as long as the worker. CPython's full collection walks every tracked
object, and one runs each time the long-lived objects grew by a quarter: while a
city's devices are first seen, that was 25 full collections taking 12.4 s of a
49 s `bench worker --city` run (gc.callbacks). After each checkpoint
:meth:`HeapFreezer.after_checkpoint` collects what the interval built (the
messages just acknowledged included) and freezes the survivors
(:func:`gc.freeze`) into a generation the collector ignores, so no collection
walks a device's state twice. Frozen objects are still freed by reference
counting; only cyclic garbage that was frozen while alive waits, until the heap
is thawed and collected whole once every ``full_every_s``.
:func:`collect_on_schedule` makes the automatic full collections rare, so this
schedule is the one that counts.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

__all__ = ["HeapFreezer", "collect_on_schedule"]

# Full collections after this many young-generation collections (CPython's default
# is 10, tempered by the 25 % growth rule): about 7 million net allocations.
RARE_FULL_COLLECTIONS = 1000


def collect_on_schedule() -> None:
    """Freeze what start-up built and leave full collections to :class:`HeapFreezer`."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, RARE_FULL_COLLECTIONS)


class HeapFreezer:
    """Freeze the heap after each checkpoint; a full collection every ``full_every_s``."""

    def __init__(
        self, full_every_s: float = 600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.full_every_s = full_every_s
        self._clock = clock
        self._last_full = clock()

    def after_checkpoint(self) -> None:
        """Call when the worker's long-lived objects have just been written out."""
        if self._clock() - self._last_full >= self.full_every_s:
            gc.unfreeze()  # garbage frozen while it was alive is collected now
            self._last_full = self._clock()
        # Walks only what is not frozen: what the last checkpoint interval built,
        # including the messages it just acknowledged and let go.
        gc.collect()
        gc.freeze()
