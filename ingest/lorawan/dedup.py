"""Merge copies of one LoRaWAN frame into a single uplink.

Where duplicates come from
--------------------------
ChirpStack and The Things Stack already merge the gateways that heard a frame
into one event (``rxInfo[]`` / ``rx_metadata[]``). Copies still reach the bridge:
MQTT QoS 1 redelivers after a reconnect, a device may be fed by two
integrations (MQTT and webhook), several network-server instances may share
a broker, and the simulator emits one event per simulated gateway. A copy has
the same DevEUI and frame counter; its gateway list may differ.

Design: hold, then emit merged
------------------------------
The Kafka reading has to carry the best RSSI/SNR and the gateway count, so a
frame is held for a short window (``window_s``, default 200 ms, like
ChirpStack's own deduplication delay) while copies are merged, then
:meth:`FrameDeduplicator.flush` returns it. The cost is ``window_s`` of added
latency per reading, irrelevant next to LoRa uplink intervals of minutes.
With ``window_s=0`` the first copy is returned immediately by
:meth:`~FrameDeduplicator.offer` and later copies are only counted: lowest
latency, but the gateway statistics reflect the first copy only.

After emission a frame's identity is remembered for ``memory_s`` so a late
copy (a redelivery minutes later) is dropped and counted, not published twice.
Memory is bounded by time and by ``max_frames``; a frame pushed out by the
size bound while still held is emitted, never lost.

Counter resets
--------------
After a rejoin (or an ABP device reboot) the frame counter restarts at 0, so
``(dev_eui, f_cnt)`` alone would wrongly match an old frame still in memory.
A copy must therefore also carry the same fPort and payload, must not belong
to a different session (DevAddr or The Things Stack ``session_key_id``), and
must have a network-server reception time within ``max_skew_s`` of the
original. Anything else with the same key is a new frame and is counted in
``stats.counter_resets``.

The deduplicator is not thread-safe; the MQTT bridge owns one per process.
Its clock is caller-supplied (``now``) or ``time.monotonic``; it must never
go backwards.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ingest.lorawan.uplink import GatewayRx, Uplink

__all__ = ["DedupStats", "FrameDeduplicator", "merge_uplinks"]

_Key = tuple[str, int]


@dataclass
class DedupStats:
    """Counters since construction; cheap to export as pipeline metrics.

    Attributes
    ----------
    offered : int
        Uplinks passed to ``offer``.
    emitted : int
        Frames returned by ``offer``/``flush``/``drain``.
    merged : int
        Copies merged into a held frame.
    late : int
        Copies that arrived after their frame was emitted (dropped).
    counter_resets : int
        Uplinks whose (DevEUI, FCnt) matched a remembered frame but were
        judged a new frame (rejoin, reboot, different payload).
    forced : int
        Held frames emitted early because memory hit ``max_frames``.
    """

    offered: int = 0
    emitted: int = 0
    merged: int = 0
    late: int = 0
    counter_resets: int = 0
    forced: int = 0


@dataclass
class _Frame:
    first_seen: float
    identity: tuple  # what tells a copy from a new frame; see _identity
    uplink: Uplink | None  # the first copy while held; None once emitted
    copies: list[Uplink] | None = None  # later copies, merged once at emission
    held: bool = True


def _identity(uplink: Uplink) -> tuple:
    # A time taken at ingest says nothing about the frame: two copies differ in it.
    at = None if uplink.time_source == "ingest" else uplink.received_at
    return (uplink.f_port, uplink.payload, uplink.dev_addr, uplink.session_id, at)


def _best_rx(a: GatewayRx, b: GatewayRx) -> GatewayRx:
    if a.rssi is None or (b.rssi is not None and b.rssi > a.rssi):
        return b
    return a


def merge_uplinks(first: Uplink, other: Uplink) -> Uplink:
    """Merge the gateway receptions of two copies of the same frame.

    Gateways are united by id, keeping the stronger reception of a gateway
    reported twice; ``copies`` adds up; every other field comes from ``first``
    (``decoded`` from whichever copy has one).
    """
    by_gateway: dict[str, GatewayRx] = {}
    for rx in (*first.rx, *other.rx):
        seen = by_gateway.get(rx.gateway_id)
        by_gateway[rx.gateway_id] = rx if seen is None else _best_rx(seen, rx)
    return dataclasses.replace(
        first,
        rx=tuple(by_gateway.values()),
        decoded=first.decoded if first.decoded is not None else other.decoded,
        copies=first.copies + other.copies,
    )


class FrameDeduplicator:
    """Turn a stream of uplink copies into one uplink per frame.

    Parameters
    ----------
    window_s : float
        How long a frame is held for copies before ``flush`` emits it. ``0``
        emits the first copy straight from ``offer``.
    memory_s : float
        How long an emitted frame is remembered to drop late copies.
    max_skew_s : float
        Largest difference in network-server reception time between two
        copies of one frame. Copies of a frame share it to within a second;
        a counter reset comes at least a join procedure later.
    max_frames : int
        Upper bound on remembered frames (memory bound under floods).
    clock : callable
        Monotonic clock used when ``now`` is not passed.

    Examples
    --------
    >>> dedup = FrameDeduplicator(window_s=0.2)
    >>> dedup.offer(uplink_from_gw1, now=0.0)   # doctest: +SKIP
    >>> dedup.offer(uplink_from_gw2, now=0.05)  # doctest: +SKIP
    >>> [u.gateway_count for u in dedup.flush(now=0.3)]  # doctest: +SKIP
    [2]
    """

    def __init__(
        self,
        window_s: float = 0.2,
        memory_s: float = 600.0,
        max_skew_s: float = 30.0,
        max_frames: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_s < 0 or memory_s < window_s or max_skew_s < 0 or max_frames < 1:
            raise ValueError(
                "need window_s >= 0, memory_s >= window_s, max_skew_s >= 0, max_frames >= 1"
            )
        self.window_s = window_s
        self.memory_s = memory_s
        self.max_skew_s = max_skew_s
        self.max_frames = max_frames
        self._clock = clock
        # Insertion order is first-seen order (the clock never goes back), so
        # the oldest frame is always at the front of both dicts.
        self._frames: OrderedDict[_Key, _Frame] = OrderedDict()
        self._held: OrderedDict[_Key, _Frame] = OrderedDict()
        self._ready: list[Uplink] = []
        self._stats = DedupStats()

    @property
    def stats(self) -> DedupStats:
        """Running counters (a live object; copy it to snapshot)."""
        return self._stats

    def __len__(self) -> int:
        """Frames currently remembered (held or emitted)."""
        return len(self._frames)

    @property
    def pending(self) -> int:
        """Frames held and not yet emitted."""
        return len(self._held) + len(self._ready)

    def next_deadline(self) -> float | None:
        """Clock time at which ``flush`` will next have a frame to emit.

        None when nothing is held; ``-inf`` when frames are already due.
        """
        if self._ready:
            return -math.inf
        if not self._held:
            return None
        return next(iter(self._held.values())).first_seen + self.window_s

    def _is_copy(self, seen: tuple, new: Uplink) -> bool:
        f_port, payload, dev_addr, session_id, received_at = seen
        if f_port != new.f_port or payload != new.payload:
            return False
        for a, b in ((dev_addr, new.dev_addr), (session_id, new.session_id)):
            if a is not None and b is not None and a.lower() != b.lower():
                return False
        if received_at is None or new.time_source == "ingest":
            return True
        skew = abs((received_at - new.received_at).total_seconds())
        return skew <= self.max_skew_s

    def _emit(self, frame: _Frame, out: list[Uplink]) -> None:
        frame.held = False
        uplink = frame.uplink
        assert uplink is not None
        # Merging once here, not per copy in offer, keeps offer cheap on the hot path.
        for copy in frame.copies or ():
            uplink = merge_uplinks(uplink, copy)
        out.append(uplink)
        # Only the identity is needed from now on; drop the bulky parts.
        frame.uplink = frame.copies = None
        self._stats.emitted += 1

    def _evict(self, now: float) -> None:
        while self._frames:
            key, frame = next(iter(self._frames.items()))
            expired = frame.first_seen + self.memory_s <= now
            if not expired and len(self._frames) <= self.max_frames:
                break
            del self._frames[key]
            if frame.held:
                # Never lose a frame to the memory bound: emit it early.
                del self._held[key]
                self._stats.forced += 1
                self._emit(frame, self._ready)

    def offer(self, uplink: Uplink, now: float | None = None) -> Uplink | None:
        """Take one uplink copy.

        Parameters
        ----------
        uplink : Uplink
            A parsed uplink.
        now : float, optional
            Current clock time; defaults to ``clock()``.

        Returns
        -------
        Uplink or None
            With ``window_s=0``, the uplink if it is a new frame. Otherwise
            always None: frames come out of :meth:`flush`.
        """
        now = self._clock() if now is None else now
        self._stats.offered += 1
        key = (uplink.device, uplink.f_cnt)
        frame = self._frames.get(key)
        if frame is not None:
            remembered = frame.first_seen + self.memory_s > now
            if remembered and self._is_copy(frame.identity, uplink):
                if frame.held:
                    if frame.copies is None:
                        frame.copies = []
                    frame.copies.append(uplink)
                    self._stats.merged += 1
                else:
                    self._stats.late += 1
                return None
            if remembered:
                self._stats.counter_resets += 1
            if frame.held:
                # A different frame under the same key: the held one is done.
                del self._held[key]
                self._emit(frame, self._ready)
            del self._frames[key]
        frame = _Frame(first_seen=now, identity=_identity(uplink), uplink=uplink)
        self._frames[key] = frame
        result = None
        if self.window_s == 0:
            out: list[Uplink] = []
            self._emit(frame, out)
            result = out[0]
        else:
            self._held[key] = frame
        self._evict(now)
        return result

    def flush(self, now: float | None = None) -> list[Uplink]:
        """Return the frames whose hold window has closed, oldest first.

        Call after every ``offer`` and on a timer (see :meth:`next_deadline`),
        so a frame with no later traffic still goes out.
        """
        now = self._clock() if now is None else now
        out, self._ready = self._ready, []
        while self._held:
            key, frame = next(iter(self._held.items()))
            if frame.first_seen + self.window_s > now:
                break
            del self._held[key]
            self._emit(frame, out)
        self._evict(now)
        return out

    def forget(self, dev_eui: str, f_cnt: int) -> None:
        """Forget an emitted frame whose output was never delivered, so a retry is new again.

        A frame still held is kept: it has not been handed out yet.
        """
        frame = self._frames.get((dev_eui, f_cnt))
        if frame is not None and not frame.held:
            del self._frames[(dev_eui, f_cnt)]

    def drain(self) -> list[Uplink]:
        """Emit every held frame now, regardless of its window (for shutdown)."""
        out, self._ready = self._ready, []
        for frame in self._held.values():
            self._emit(frame, out)
        self._held.clear()
        return out
