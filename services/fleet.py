"""A fleet of simulated devices producing to Kafka (or MQTT), with its ground truth recorded."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import psycopg

from core.settings import Settings
from services.connection import Connection

if TYPE_CHECKING:
    from ingest.producer import SimulationStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulationOptions:
    devices: int = 50
    rate: float = 500.0
    duration_s: float = 60.0
    bad_rate: float = 0.0
    seed: int = 0
    degrading_fraction: float = 0.3
    progress: bool = True
    mqtt: str | None = None  # publish LoRaWAN uplinks here instead of readings to Kafka
    uplink_format: str = "chirpstack"
    gateways: int = 1
    corrupt_rate: float = 0.0


class GroundTruthRecorder:
    """Writes failures to the `failures` table as they happen, at most once a second.

    A long run (compose runs a year) must not keep its ground truth in memory until
    the end: a stop or a crash would lose all of it. A failed write is kept and
    retried with the next one, so a database blip costs nothing.
    """

    def __init__(self, database_url: str, min_interval_s: float = 1.0) -> None:
        self.database_url = database_url
        self.min_interval_s = min_interval_s
        self.pending: list[dict] = []
        self._last = float("-inf")

    def add(self, event) -> None:
        self.pending.append(_failure_row(event))
        if time.monotonic() - self._last >= self.min_interval_s:
            self.flush()

    def flush(self) -> None:
        from storage.sinks import record_failures

        self._last = time.monotonic()
        if not self.pending:
            return
        try:
            record_failures(self.database_url, self.pending)
        except psycopg.Error as exc:
            log.warning("ground truth not recorded yet (%s); retrying later", exc)
            return
        self.pending = []


def run_fleet(
    settings: Settings,
    conn: Connection,
    options: SimulationOptions,
    wrap_send=None,
    should_stop: Callable[[], bool] | None = None,
) -> SimulationStats:
    """Register the fleet, stream it for ``duration_s`` and record its ground truth.

    ``wrap_send(fleet, send)``, when given, returns the ``send`` to use instead
    (the demo routes part of the fleet through MQTT with it). ``should_stop()``
    returning True ends the run early, with everything sent and recorded.
    """
    from ingest.faults import FaultInjector
    from ingest.producer import ReadingProducer, run_simulation
    from ingest.simulator import FleetSimulator
    from storage.sinks import record_failures
    from streams.topics import READINGS, ensure_topics

    ensure_topics(conn.kafka, settings)
    fleet = FleetSimulator(
        n_devices=options.devices,
        seed=options.seed,
        initial_degrading_fraction=options.degrading_fraction,
    )
    register_fleet(conn.database_url, fleet)
    if options.mqtt:
        producer = uplink_publisher(conn.database_url, fleet.devices, options)
    else:
        producer = ReadingProducer(conn.kafka, topic=settings.topic(READINGS))
    # Uplinks are corrupted by the encoder (corrupt_rate), not as reading bytes.
    use_faults = options.bad_rate > 0 and not options.mqtt
    faults = FaultInjector(options.bad_rate, seed=options.seed) if use_faults else None
    send = producer.send if wrap_send is None else wrap_send(fleet, producer.send)
    recorder = GroundTruthRecorder(conn.database_url)
    try:
        stats = run_simulation(
            fleet,
            send,
            rate=options.rate,
            duration_s=options.duration_s,
            faults=faults,
            progress=options.progress,
            # An uplink cannot carry a maintenance event; the LoRaWAN path has none yet.
            maintenance=not options.mqtt,
            on_failure=recorder.add,
            should_stop=should_stop,
        )
        producer.flush()
    finally:
        producer.close()
        recorder.flush()
    if options.mqtt:
        stats.uplinks = {
            "frames": producer.frames,
            "messages": producer.messages,
            "corrupted": dict(producer.corrupted),
        }
    record_failures(conn.database_url, [_failure_row(f) for f in stats.failures])
    record_failures(conn.database_url, in_progress_rows(fleet, stats))
    return stats


def register_lorawan_devices(database_url: str, devices, *, seed: int = 0) -> dict:
    """Add simulated devices (DevEUI = device id) to the newest registry version.

    Returns the registry entries by DevEUI, for the uplink encoder.
    """
    from ingest.lorawan.registry import parse_registry
    from ingest.lorawan.uplink_sim import sim_registry_rows
    from storage.device_registry import latest_registry, store_registry

    latest = latest_registry(database_url)
    rows = {r["dev_eui"]: r for r in (latest[1] if latest else [])}
    sim_rows = sim_registry_rows(devices)
    rows.update({r["dev_eui"]: r for r in sim_rows})
    store_registry(database_url, list(rows.values()), source="simulator")
    return parse_registry(sim_rows, source="simulator")


def uplink_publisher(database_url: str, devices, options: SimulationOptions):
    """A ``send`` that turns readings into ChirpStack/TTS uplinks on MQTT."""
    from ingest.lorawan.mqtt_out import UplinkPublisher
    from ingest.lorawan.uplink_sim import UplinkEncoder

    registry = register_lorawan_devices(database_url, devices, seed=options.seed)
    encoder = UplinkEncoder(
        options.uplink_format,  # type: ignore[arg-type]
        registry,
        gateways=options.gateways,
        corrupt_rate=options.corrupt_rate,
        seed=options.seed,
    )
    return UplinkPublisher(options.mqtt, encoder)


def register_fleet(database_url: str, fleet) -> None:
    """Put the simulated devices in the device registry, so the worker accepts them."""
    from storage.sinks import register_devices

    register_devices(
        database_url,
        [
            {
                "device_id": d.device_id,
                "asset_id": d.asset_id,
                "asset_type": d.asset_type,
                "lat": d.lat,
                "lon": d.lon,
                "installed_at": d.installed_at,
                "codec": "simulator",
            }
            for d in fleet.devices
        ],
    )


def in_progress_rows(fleet, stats) -> list[dict]:
    """Degradations still under way at the end, as ground truth with no failure time."""
    if not stats.ticks:
        return []
    tick_s = stats.elapsed_s / stats.ticks
    end = datetime.now(UTC)
    rows = []
    for d in fleet.degrading:
        device = fleet.device(d.device_id)
        started = end - timedelta(seconds=(fleet.tick - d.started_tick) * tick_s)
        rows.append(
            {
                "asset_id": device.asset_id,
                "device_id": device.device_id,
                "asset_type": device.asset_type,
                "mode": d.mode,
                "degradation_started_at": started,
                "failed_at": None,
            }
        )
    return rows


def _failure_row(event) -> dict:
    return {
        "asset_id": event.asset_id,
        "device_id": event.device_id,
        "asset_type": event.asset_type,
        "mode": event.mode,
        "degradation_started_at": event.degradation_started_at,
        "failed_at": event.failed_at,
    }
