"""Run a simulated water network into Kafka: register it, record the leaks, stream.

Shared by ``citywatch simulate --network`` and the network demo, so neither
command imports the other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tqdm import tqdm

from core.settings import Settings
from services.connection import Connection

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NetworkRun:
    network_id: str
    sensors: int
    steps: int
    readings: int
    leaks: int
    start: datetime


def run_network(
    settings: Settings,
    conn: Connection,
    inp: Path,
    network_id: str,
    options,
    *,
    origin: tuple[float, float] | None = None,
    metres_per_unit: float = 1.0,
    pressure_nodes: tuple[str, ...] | None = None,
    end: datetime | None = None,
    progress: bool = True,
    should_stop=lambda: False,
) -> NetworkRun:
    """Simulate ``options.days`` ending at ``end`` (default: now) and stream them.

    Readings are stamped in the past when streamed faster than real time, so
    the worker must accept readings that old (``max_reading_age_days``).
    """
    from ingest.network_sim import STEP_S, simulate, stream
    from ingest.producer import ReadingProducer
    from networks.assets import network_spec
    from storage.water_networks import record_leaks, store_network
    from streams.topics import READINGS

    spec = network_spec(
        inp,
        network_id,
        origin=origin,
        metres_per_unit=metres_per_unit,
        pressure_nodes=pressure_nodes,
    )
    store_network(conn.database_url, spec)
    sensors = simulate(inp, spec, options)
    steps = len(sensors.inflow)
    end = end or datetime.now(UTC)
    start = (end - timedelta(seconds=steps * STEP_S)).replace(microsecond=0)
    district = spec.districts[0].district_id
    record_leaks(
        conn.database_url,
        [
            {
                "network_id": network_id,
                "asset_id": spec.asset_id(district),
                "node": leak.node,
                "diameter_m": leak.diameter_m,
                "kind": "abrupt" if leak.peak == leak.start else "incipient",
                "start_at": start + timedelta(seconds=leak.start * STEP_S),
                "peak_at": start + timedelta(seconds=leak.peak * STEP_S),
                "end_at": start + timedelta(seconds=leak.end * STEP_S)
                if leak.end < steps
                else None,
            }
            for leak in options.leaks
            if leak.start < steps
        ],
    )
    producer = ReadingProducer(conn.kafka, topic=settings.topic(READINGS))
    bar = tqdm(
        total=steps, desc=f"{network_id} steps", unit="step", disable=None if progress else True
    )
    try:
        sent = stream(
            producer.send,
            spec,
            sensors,
            start,
            speed=options.speed,
            should_stop=should_stop,
            on_step=lambda _k: bar.update(),
        )
        producer.flush()
    finally:
        bar.close()
        producer.close()
    log.info(
        "network %s: %d readings of %d sensors over %d steps",
        network_id,
        sent,
        len(spec.sensors),
        steps,
    )
    return NetworkRun(network_id, len(spec.sensors), steps, sent, len(options.leaks), start)
