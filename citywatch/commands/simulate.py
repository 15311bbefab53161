"""``citywatch simulate``: a fleet of simulated devices producing to Kafka."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path

import click

from citywatch.runtime import connect
from core.settings import Settings
from services.fleet import SimulationOptions, run_fleet

log = logging.getLogger(__name__)


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
    from ingest.network_sim import NetworkSimOptions, parse_leak
    from networks.model import pressure_nodes as chosen_nodes
    from services.network_runs import run_network

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
