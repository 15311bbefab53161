"""The simulator's live run loop, and a thin Kafka producer for it.

:func:`run_simulation` paces a :class:`~ingest.simulator.FleetSimulator` in
wall-clock time and hands each encoded reading to a ``send(key, value)``
callable; :class:`ReadingProducer` is the Kafka implementation of that
callable. Keeping them apart lets tests (and other sinks) run the loop with a
list and a fake clock.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kafka import KafkaProducer
from tqdm import tqdm

from .faults import FaultInjector
from .sim_records import FailureEvent, maintenance_bytes, reading_bytes
from .simulator import FleetSimulator

__all__ = ["ReadingProducer", "SimulationStats", "run_simulation"]

log = logging.getLogger(__name__)


class ReadingProducer:
    """Send encoded readings to one Kafka topic, keyed by device id.

    Delivery guarantee: at-least-once. ``acks="all"`` plus retries means a
    broker hiccup can duplicate a message, never lose an acknowledged one;
    the worker's duplicate check absorbs the repeats. One request in flight
    per connection keeps each device's readings in order across retries.

    Parameters
    ----------
    bootstrap_servers : str or list of str
        ``host:port[,host:port...]``.
    topic : str, default="readings"
        Full topic name (apply any prefix before passing it).
    api_version : tuple of int, optional
        Broker API version; ``None`` lets kafka-python probe the broker.
    client_id : str, default="citywatch-simulator"
    linger_ms : int, default=5
        How long to wait to fill a batch; a few ms buys large batches.
    batch_size : int, default=262144
        Bytes per partition batch.
    retries : int, default=5
    enable_idempotence : bool, default=False
        Off by default: Tansu, the embedded broker, does not implement
        InitProducerId, which the idempotent producer needs.
    **config
        Further ``kafka.KafkaProducer`` settings, passed through unchanged.

    Attributes
    ----------
    sent : int
        Messages handed to the client by :meth:`send`.
    failed : int
        Messages the client later reported as not delivered.
    """

    def __init__(
        self,
        bootstrap_servers: str | list[str],
        topic: str = "readings",
        *,
        api_version: tuple[int, ...] | None = None,
        client_id: str = "citywatch-simulator",
        linger_ms: int = 5,
        batch_size: int = 256 * 1024,
        retries: int = 5,
        enable_idempotence: bool = False,
        **config: Any,
    ) -> None:
        self.topic = topic
        self.sent = 0
        self.failed = 0
        settings: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "client_id": client_id,
            "acks": "all",
            "linger_ms": linger_ms,
            "batch_size": batch_size,
            "retries": retries,
            "enable_idempotence": enable_idempotence,
            "max_in_flight_requests_per_connection": 1,
        }
        if api_version is not None:
            settings["api_version"] = api_version
        settings.update(config)
        self._producer = KafkaProducer(**settings)

    def send(self, key: bytes, value: bytes) -> None:
        """Queue one message.

        Delivery errors reported later are counted in ``failed`` and logged,
        not raised. ``kafka.errors.KafkaTimeoutError`` is raised here if the
        broker stays unreachable for ``max_block_ms`` (kafka-python's default 60 s).
        """
        future = self._producer.send(self.topic, key=key, value=value)
        future.add_errback(self._on_error)
        self.sent += 1

    def flush(self, timeout: float | None = None) -> None:
        """Block until every queued message is acknowledged (or failed)."""
        self._producer.flush(timeout=timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush, then release the connection."""
        self._producer.flush(timeout=timeout)
        self._producer.close(timeout=timeout)

    def __enter__(self) -> ReadingProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_error(self, exc: BaseException) -> None:
        self.failed += 1
        if self.failed == 1 or self.failed % 1000 == 0:
            log.warning(
                "readings not delivered to %s (%d so far): %s", self.topic, self.failed, exc
            )


@dataclass
class SimulationStats:
    """What a simulation run produced.

    ``produced == valid + sum(bad_by_reason.values()) + maintenance`` always holds.

    Attributes
    ----------
    produced : int
        Messages handed to ``send``, bad ones and maintenance events included.
    valid : int
        Messages the validator should accept.
    bad_by_reason : dict of str to int
        Injected bad messages, by the dead-letter reason they should get.
    maintenance : int
        Maintenance events sent (one before each device's first reading after a repair).
    failures : list of FailureEvent
        Ground-truth failures that completed during the run.
    ticks : int
        Simulator ticks run.
    elapsed_s : float
        Run time by the loop's clock.
    """

    produced: int = 0
    valid: int = 0
    bad_by_reason: dict[str, int] = field(default_factory=dict)
    maintenance: int = 0
    failures: list[FailureEvent] = field(default_factory=list)
    ticks: int = 0
    elapsed_s: float = 0.0

    @property
    def bad(self) -> int:
        """All injected bad messages."""
        return sum(self.bad_by_reason.values())

    @property
    def rate(self) -> float:
        """Achieved messages per second."""
        return self.produced / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


def run_simulation(
    fleet: FleetSimulator,
    send: Callable[[bytes, bytes], None],
    *,
    rate: float,
    duration_s: float,
    faults: FaultInjector | None,
    on_failure: Callable[[FailureEvent], None] | None = None,
    progress: bool = True,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    wallclock: Callable[[], datetime] = _utcnow,
    should_stop: Callable[[], bool] | None = None,
    maintenance: bool = True,
) -> SimulationStats:
    """Run the fleet in real time, sending every reading through ``send``.

    Ticks are paced so the fleet emits about ``rate`` readings per second
    (``rate / n_devices`` ticks per second); each tick is stamped with the
    wall-clock time. A run is ``ceil(duration_s * rate / n_devices)`` ticks;
    if sending cannot keep up, ticks run back to back and the run takes longer.

    Parameters
    ----------
    fleet : FleetSimulator
    send : callable
        ``send(key, value)``; the key is the device id (UTF-8) of the reading a
        message came from, also for corrupted messages.
    rate : float
        Target readings per second across the fleet.
    duration_s : float
        Run length in seconds (rounded up to whole ticks).
    faults : FaultInjector or None
        Corrupts a fraction of messages; ``None`` sends everything as is.
    on_failure : callable, optional
        Called with each :class:`FailureEvent` as it happens.
    progress : bool, default=True
        Show a tqdm bar (messages) on stderr.
    clock, sleep : callable
        Monotonic seconds and a sleep; injectable for tests.
    wallclock : callable
        Returns the current tz-aware time used to stamp ticks.
    should_stop : callable, optional
        Polled between ticks (at least every 0.5 s); returning True ends the run early.
    maintenance : bool, default=True
        Send a maintenance event (:func:`~ingest.sim_records.maintenance_bytes`)
        through ``send``, keyed by the device, right before each device's first
        reading after a repair, so the worker resets its features there. Off
        when ``send`` cannot carry it (MQTT uplinks).

    Returns
    -------
    SimulationStats
    """
    if rate <= 0 or duration_s < 0:
        raise ValueError("rate must be > 0 and duration_s >= 0")
    n = len(fleet.devices)
    interval = n / rate  # seconds per tick
    total_ticks = math.ceil(duration_s / interval - 1e-9)
    stats = SimulationStats()
    bad: Counter[str] = Counter()
    seq = 0
    last_ts: datetime | None = None
    bar = tqdm(
        total=total_ticks * n,
        unit="msg",
        unit_scale=True,
        disable=None if progress else True,
        desc="simulator",
    )
    start = clock()

    def wait_until(deadline: float) -> bool:
        # Sleep in short slices so should_stop is honoured even at slow tick rates.
        while (remaining := deadline - clock()) > 0:
            if should_stop is not None and should_stop():
                return False
            sleep(min(remaining, 0.5))
        return should_stop is None or not should_stop()

    try:
        for k in range(total_ticks):
            if not wait_until(start + k * interval):
                break
            ts = wallclock()
            if last_ts is not None and ts <= last_ts:
                ts = last_ts + timedelta(microseconds=1)  # the simulator needs increasing ticks
            last_ts = ts
            readings, failures = fleet.step(ts)
            sent_before = stats.produced
            for r in readings:
                raw = reading_bytes(r, seq)
                seq += 1
                key = r.device.device_id.encode()
                if maintenance and r.repaired:
                    send(key, maintenance_bytes(r))
                    stats.produced += 1
                    stats.maintenance += 1
                messages = faults.maybe_corrupt(raw, r) if faults is not None else [(raw, None)]
                for value, reason in messages:
                    send(key, value)
                    stats.produced += 1
                    if reason is None:
                        stats.valid += 1
                    else:
                        bad[reason] += 1
            for event in failures:
                stats.failures.append(event)
                if on_failure is not None:
                    on_failure(event)
            stats.ticks += 1
            bar.update(stats.produced - sent_before)
            if bad:
                bar.set_postfix(bad=sum(bad.values()), failures=len(stats.failures), refresh=False)
        else:
            # Hold the last tick's slot too, so the run lasts duration_s and rate is honest.
            wait_until(start + total_ticks * interval)
    finally:
        bar.close()
        stats.bad_by_reason = dict(sorted(bad.items()))
        stats.elapsed_s = clock() - start
    return stats
