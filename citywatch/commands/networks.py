"""``citywatch networks``: water networks, their districts and sensors, as assets."""

from __future__ import annotations

import json
from pathlib import Path

import click

from core.settings import Settings


def _origin(_ctx, _param, value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        lat, lon = (float(v) for v in value.split(","))
    except ValueError as exc:
        raise click.BadParameter("expected LAT,LON, e.g. 21.0285,105.8542") from exc
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise click.BadParameter("latitude must be in [-90, 90] and longitude in [-180, 180]")
    return lat, lon


PRESSURE_NODES_HELP = (
    "Pressure sensors on these junctions only: a count (placed to see every junction's "
    "leak best, networks.model.place_sensors) or a comma-separated list. Default: all."
)


@click.group()
def networks() -> None:
    """Water networks: an EPANET model, its district metered areas and their sensors."""


@networks.command("register")
@click.argument("inp", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--network", "network_id", required=True, help="Network id, e.g. hanoi.")
@click.option(
    "--districts",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="TOML of [districts.<name>] nodes = [...], inlets = [...] (default: one district).",
)
@click.option(
    "--origin", callback=_origin, default=None, help="LAT,LON of the network's centre on the map."
)
@click.option(
    "--metres-per-unit",
    type=float,
    default=1.0,
    show_default=True,
    help="Metres per unit of the model's coordinates.",
)
@click.option("--pressure-nodes", default=None, help=PRESSURE_NODES_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def networks_register(
    settings: Settings, inp, network_id, districts, origin, metres_per_unit, pressure_nodes, as_json
) -> None:
    """Register INP as a network: districts, and a device per pressure, flow and level
    sensor placed on its nodes and pipes (idempotent; registering again updates)."""
    from citywatch.runtime import connect
    from networks.assets import NetworkSpecError, network_spec
    from networks.model import pressure_nodes as chosen_nodes
    from storage.water_networks import store_network

    try:
        spec = network_spec(
            inp,
            network_id,
            districts_file=districts,
            origin=origin,
            metres_per_unit=metres_per_unit,
            pressure_nodes=chosen_nodes(inp, pressure_nodes),
        )
    except (NetworkSpecError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    counts = store_network(connect(settings).database_url, spec)
    result = {"network": network_id, **counts}
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"{network_id}: {counts['districts']} districts, {counts['sensors']} sensors")


@networks.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def networks_list(settings: Settings, as_json: bool) -> None:
    """Registered networks with their district and sensor counts."""
    from citywatch.runtime import connect
    from storage.water_networks import list_networks

    rows = list_networks(connect(settings).database_url)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(
            f"{row['network_id']:<12} {row['inp_file']:<20} {row['junctions']:>5} junctions "
            f"{row['districts']:>3} districts {row['sensors']:>5} sensors"
        )
