"""``citywatch simulate``: a fleet of simulated devices producing to Kafka."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import psycopg

from citywatch.runtime import Connection, connect
from core.settings import Settings

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
):
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


@click.command()
@click.option("--devices", type=int, default=50, show_default=True, help="Simulated devices.")
@click.option("--rate", type=float, default=500.0, show_default=True, help="Readings per second.")
@click.option("--duration", type=float, default=60.0, show_default=True, help="Seconds to run.")
@click.option(
    "--bad-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Share of messages replaced by malformed input (0-1).",
)
@click.option(
    "--degrading",
    type=float,
    default=0.3,
    show_default=True,
    help="Share of devices already degrading at the start.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--mqtt",
    envvar="CITYWATCH_SIM_MQTT",
    default=None,
    help="Publish real LoRaWAN uplink JSON to this MQTT broker (mqtt://host:port) instead "
    "of readings to Kafka; run `citywatch ingest lorawan` to bridge them.",
)
@click.option(
    "--format",
    "uplink_format",
    envvar="CITYWATCH_SIM_FORMAT",
    type=click.Choice(["chirpstack", "tts"]),
    default="chirpstack",
    show_default=True,
    help="Network server to imitate with --mqtt.",
)
@click.option(
    "--gateways",
    envvar="CITYWATCH_SIM_GATEWAYS",
    type=int,
    default=1,
    show_default=True,
    help="Gateways hearing each frame; each publishes a copy (duplicates to remove).",
)
@click.option(
    "--corrupt-rate",
    envvar="CITYWATCH_SIM_CORRUPT_RATE",
    type=float,
    default=0.0,
    show_default=True,
    help="Share of uplink frames sent broken (bad JSON, bad base64, undecodable payload).",
)
@click.option(
    "--network",
    envvar="CITYWATCH_SIM_NETWORK",
    default=None,
    help="Network mode: simulate this water network (id, e.g. hanoi) with WNTR instead "
    "of the device fleet; see --inp, --leak, --days, --speed.",
)
@click.option(
    "--inp",
    envvar="CITYWATCH_SIM_INP",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Network mode: the EPANET model.",
)
@click.option(
    "--leak",
    "leaks",
    multiple=True,
    envvar="CITYWATCH_SIM_LEAKS",
    help="Network mode: NODE:DIAMETER_M:START_H[:PEAK_H[:END_H]] (hours from the start; "
    "with PEAK_H the hole grows: incipient). Repeatable.",
)
@click.option("--days", type=float, default=21.0, show_default=True, help="Network mode: days.")
@click.option(
    "--speed",
    type=float,
    default=0.0,
    show_default=True,
    help="Network mode: simulated seconds per wall second (1 real time; 0 unpaced).",
)
@click.option(
    "--origin", default=None, help="Network mode: LAT,LON of the network's centre on the map."
)
@click.option(
    "--pressure-nodes",
    default=None,
    help="Network mode: pressure sensors on these junctions only: a count or a list.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run's figures as JSON.")
@click.pass_obj
def simulate(
    settings: Settings,
    devices,
    rate,
    duration,
    bad_rate,
    degrading,
    seed,
    mqtt,
    uplink_format,
    gateways,
    corrupt_rate,
    network,
    inp,
    leaks,
    days,
    speed,
    origin,
    pressure_nodes,
    as_json,
):
    """Stream simulated pumps, bridges, lifts and streetlights into Kafka (or MQTT).

    Devices degrade slowly and fail; each failure is recorded as ground truth
    in the `failures` table so alerts can be scored against it. With --mqtt the
    devices are registered in the LoRaWAN registry and their readings are sent
    as ChirpStack or The Things Stack uplinks, encoded with each device's codec.
    """
    if network:
        options = (leaks, days, speed, origin, seed, pressure_nodes)
        _simulate_network(settings, network, inp, options, as_json)
        return
    conn = connect(settings)
    options = SimulationOptions(
        devices,
        rate,
        duration,
        bad_rate,
        seed,
        degrading,
        not as_json,
        mqtt=mqtt,
        uplink_format=uplink_format,
        gateways=gateways,
        corrupt_rate=corrupt_rate,
    )
    # In a container the simulator is PID 1, where SIGTERM without a handler is ignored
    # and `docker compose stop` ends in SIGKILL: stop the run loop instead, so what was
    # sent is flushed and the ground truth so far is recorded.
    stop = threading.Event()

    def on_signal(signum: int, _frame) -> None:
        log.info("%s: stopping the simulation", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    stats = run_fleet(settings, conn, options, should_stop=stop.is_set)
    figures = {
        "produced": stats.produced,
        "valid": stats.valid,
        "maintenance": stats.maintenance,
        "bad_by_reason": stats.bad_by_reason,
        "failures": len(stats.failures),
        "elapsed_s": round(stats.elapsed_s, 2),
    }
    if mqtt:
        figures["uplinks"] = stats.uplinks
    if as_json:
        click.echo(json.dumps(figures, indent=2))
    else:
        click.echo(
            f"produced {stats.produced} messages ({stats.valid} valid readings, "
            f"{stats.maintenance} maintenance events) in {stats.elapsed_s:.1f}s; "
            f"{len(stats.failures)} failures injected"
        )


def _simulate_network(settings, network, inp, options, as_json) -> None:
    """Network mode of ``simulate``: WNTR hydraulics as sensor readings, leaks as truth."""
    from citywatch.network_runs import run_network
    from ingest.network_sim import NetworkSimOptions, parse_leak
    from networks.model import pressure_nodes as chosen_nodes

    leaks, days, speed, origin, seed, pressure_nodes = options

    if inp is None:
        raise click.UsageError("--network needs --inp (the EPANET model)")
    try:
        parsed = tuple(parse_leak(text) for text in leaks)
        centre = tuple(float(v) for v in origin.split(",")) if origin else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if centre is not None and len(centre) != 2:
        raise click.BadParameter("--origin expects LAT,LON")
    options = NetworkSimOptions(days=days, leaks=parsed, seed=seed, speed=speed)
    try:
        result = run_network(
            settings,
            connect(settings),
            inp,
            network,
            options,
            origin=centre,
            pressure_nodes=chosen_nodes(inp, pressure_nodes),
            progress=not as_json,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    figures = {
        "network": result.network_id,
        "sensors": result.sensors,
        "steps": result.steps,
        "readings": result.readings,
        "leaks": result.leaks,
        "start": result.start.isoformat(),
    }
    if as_json:
        click.echo(json.dumps(figures, indent=2))
    else:
        click.echo(
            f"{network}: {result.readings} readings from {result.sensors} sensors over "
            f"{result.steps} steps of 30 min since {result.start:%Y-%m-%d %H:%M}; "
            f"{result.leaks} leaks recorded as ground truth"
        )
