"""When the readings agent moves its device states and offsets forward: a checkpoint.

Every batch is stored (PostgreSQL, exactly once by source position) and its scores
published as soon as it is processed. Writing every touched device's state to the
``device-state`` table after every batch, and acknowledging the batch, cost a fifth
of the worker's CPU (packing, RocksDB, one changelog message per device per
batch), so both happen together at a checkpoint, every
``CITYWATCH_CHECKPOINT_INTERVAL_S``:

    batch 1 --store, publish--> in memory ─┐
    batch 2 --store, publish--> in memory ─┼─ checkpoint: pack and write the states,
    batch 3 --store, publish--> in memory ─┘  flush the changelog, then acknowledge

Between checkpoints the live state objects are ahead of the table, and the
acknowledged offsets stay behind it: a crash, a restart or a rebalance reads the
unacknowledged batches again from the last checkpoint's state, and the sink
skips what it stored already (``stream_offsets``), so every reading is still
stored once and every score computed from the same state. Within a running
worker a failed batch loses the live objects, so the batches stored since the
checkpoint are processed again first (:attr:`Checkpoint.replay_needed`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["Checkpoint"]


class Checkpoint:
    """The readings agent's batches since its last checkpoint.

    Parameters
    ----------
    interval_s : float
        Longest time between checkpoints, from the first batch after the last
        one; 0 checkpoints after every batch.
    clock : callable
        Monotonic seconds (tests pass their own).
    """

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self.stored: list[Any] = []  # processed and stored: what a replay processes again
        self.settled: list[Any] = []  # stored, or stored as dead letters: acknowledged next
        self.replay_needed = False  # the live states were lost after ``stored`` moved them
        self.epoch = 0  # bumped by a rebalance: a batch begun before it must not count
        self.stream: Any = None  # the agent's stream, which acknowledges its events
        self._since: float | None = None

    def processed(self, epoch: int, events: list[Any]) -> bool:
        """A batch was stored and published; False if a rebalance came in between."""
        if epoch != self.epoch:
            return False
        self.stored.extend(events)
        return True

    def lost_live_states(self) -> None:
        """A batch failed after moving live states on: replay ``stored`` before the next."""
        self.replay_needed = bool(self.stored)

    def settle(self, events: list[Any]) -> None:
        """Containment settled these (stored or dead-lettered): acknowledge at the checkpoint."""
        if events and self._since is None:
            self._since = self._clock()
        self.settled.extend(events)

    def due(self) -> bool:
        """True when there is something to acknowledge and the interval has passed."""
        if not self.settled:
            return False
        return self._since is None or self._clock() - self._since >= self.interval_s

    def done(self) -> None:
        """The states are written and the settled events acknowledged."""
        self.stored.clear()
        self.settled.clear()
        self.replay_needed = False
        self._since = None

    def discard(self) -> None:
        """A rebalance: whoever owns the partitions next reads these batches again."""
        self.done()
        self.epoch += 1
