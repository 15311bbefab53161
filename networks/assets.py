"""A water network as assets: its district metered areas and the sensors on its model.

A utility describes a network by its EPANET model plus, optionally, a TOML
file of districts::

    [districts.north]
    nodes = ["2", "3", "4"]     # junctions of the model in this district
    inlets = ["1"]              # pipes metered into it

Without that file the whole network is one district, ``all``, metered on the
links leaving its reservoirs and tanks. Each district gets a pressure sensor on
every junction (or on ``pressure_nodes``), a flow meter on every inlet, and a
level sensor on every tank it touches; each sensor is a device of type
``network_pressure``, ``network_flow`` or ``network_level`` (the asset
catalogue), whose asset is the district ``<network>.<district>``. Model
coordinates become latitude and longitude around ``origin`` (the network's
centre) at ``metres_per_unit``.
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .hydraulics import load_network, source_links

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
METRES_PER_DEGREE = 111_320.0


class NetworkSpecError(ValueError):
    """A network or district description that cannot be used, with where and why."""


@dataclass(frozen=True, slots=True)
class SensorSpec:
    device_id: str
    asset_type: str
    metric: str
    element_kind: str  # 'node' or 'link'
    element_id: str
    district_id: str
    x: float
    y: float
    lat: float | None
    lon: float | None


@dataclass(frozen=True, slots=True)
class DistrictSpec:
    district_id: str
    nodes: tuple[str, ...]
    inlets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    network_id: str
    inp_file: str
    inp_sha256: str
    junctions: int
    pipes: int
    origin: tuple[float, float] | None
    metres_per_unit: float
    districts: tuple[DistrictSpec, ...]
    sensors: tuple[SensorSpec, ...]

    def asset_id(self, district_id: str) -> str:
        # "." occurs in neither id; a "/" would break alert ids in URL paths.
        return f"{self.network_id}.{district_id}"


def _read_districts(path: Path, wn) -> list[DistrictSpec]:
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise NetworkSpecError(f"{path}: {exc}") from exc
    table = doc.get("districts")
    if not isinstance(table, dict) or not table:
        raise NetworkSpecError(f"{path}: no [districts.<name>] table")
    junctions, links = set(wn.junction_name_list), set(wn.link_name_list)
    seen: dict[str, str] = {}
    out = []
    for name, raw in table.items():
        where = f"{path}: districts.{name}"
        if not _ID.match(name):
            raise NetworkSpecError(f"{where}: name must match {_ID.pattern}")
        if not isinstance(raw, dict) or set(raw) - {"nodes", "inlets"}:
            raise NetworkSpecError(f"{where}: only 'nodes' and 'inlets' are allowed")
        nodes = [str(n) for n in raw.get("nodes", [])]
        inlets = [str(n) for n in raw.get("inlets", [])]
        if not nodes:
            raise NetworkSpecError(f"{where}: lists no nodes")
        for node in nodes:
            if node not in junctions:
                raise NetworkSpecError(f"{where}: {node!r} is not a junction of the model")
            if node in seen:
                raise NetworkSpecError(f"{where}: {node!r} is already in {seen[node]}")
            seen[node] = name
        for link in inlets:
            if link not in links:
                raise NetworkSpecError(f"{where}: {link!r} is not a link of the model")
        out.append(DistrictSpec(name, tuple(nodes), tuple(inlets)))
    return out


def map_placer(
    wn, origin: tuple[float, float] | None, metres_per_unit: float = 1.0
) -> Callable[[float, float], tuple[float | None, float | None]]:
    """Model coordinates -> (latitude, longitude), the model's centre at ``origin``;
    (None, None) without an origin."""
    xs = [wn.get_node(n).coordinates[0] for n in wn.node_name_list]
    ys = [wn.get_node(n).coordinates[1] for n in wn.node_name_list]
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2

    def place(x: float, y: float) -> tuple[float | None, float | None]:
        if origin is None:
            return None, None
        lat0, lon0 = origin
        lat = lat0 + (y - cy) * metres_per_unit / METRES_PER_DEGREE
        lon = lon0 + (x - cx) * metres_per_unit / (METRES_PER_DEGREE * math.cos(math.radians(lat0)))
        return round(lat, 7), round(lon, 7)

    return place


def network_spec(
    inp: Path,
    network_id: str,
    *,
    districts_file: Path | None = None,
    origin: tuple[float, float] | None = None,
    metres_per_unit: float = 1.0,
    pressure_nodes: list[str] | None = None,
) -> NetworkSpec:
    """Describe ``inp`` as a network with districts and sensors (nothing is stored)."""
    if not _ID.match(network_id):
        raise NetworkSpecError(f"network id {network_id!r} must match {_ID.pattern}")
    if not metres_per_unit > 0:
        raise NetworkSpecError("metres per unit must be positive")
    try:
        data = inp.read_bytes()
        wn = load_network(inp)
    except Exception as exc:  # WNTR raises many types for a bad model
        raise NetworkSpecError(f"{inp}: not a readable EPANET model ({exc})") from exc
    if districts_file is not None:
        districts = _read_districts(districts_file, wn)
    else:
        inlets = tuple(name for name, _ in source_links(wn))
        districts = [DistrictSpec("all", tuple(wn.junction_name_list), inlets)]
    if pressure_nodes is not None:
        unknown = set(pressure_nodes) - set(wn.junction_name_list)
        if unknown:
            raise NetworkSpecError(f"pressure nodes not in the model: {sorted(unknown)}")

    place = map_placer(wn, origin, metres_per_unit)

    def sensor(kind, asset_type, metric, element, district, xy) -> SensorSpec:
        tag = {"network_pressure": "p", "network_flow": "q", "network_level": "l"}[asset_type]
        return SensorSpec(
            f"{network_id}-{tag}-{element}",
            asset_type,
            metric,
            kind,
            element,
            district,
            float(xy[0]),
            float(xy[1]),
            *place(*xy),
        )

    sensors: list[SensorSpec] = []
    tanks_done: set[str] = set()
    for district in districts:
        for node in district.nodes:
            if pressure_nodes is None or node in pressure_nodes:
                xy = wn.get_node(node).coordinates
                sensors.append(
                    sensor("node", "network_pressure", "pressure", node, district.district_id, xy)
                )
        for link_name in district.inlets:
            link = wn.get_link(link_name)
            a, b = wn.get_node(link.start_node_name), wn.get_node(link.end_node_name)
            mid = (
                (a.coordinates[0] + b.coordinates[0]) / 2,
                (a.coordinates[1] + b.coordinates[1]) / 2,
            )
            sensors.append(
                sensor("link", "network_flow", "flow", link_name, district.district_id, mid)
            )
        members = set(district.nodes)
        for tank in wn.tank_name_list:
            touches = any(
                tank in (lk.start_node_name, lk.end_node_name)
                and ({lk.start_node_name, lk.end_node_name} & members)
                for _, lk in wn.links()
            )
            if touches and tank not in tanks_done:
                tanks_done.add(tank)
                xy = wn.get_node(tank).coordinates
                sensors.append(
                    sensor("node", "network_level", "level", tank, district.district_id, xy)
                )
    return NetworkSpec(
        network_id=network_id,
        inp_file=str(inp.resolve()),  # the worker loads the model from here
        inp_sha256=hashlib.sha256(data).hexdigest(),
        junctions=len(wn.junction_name_list),
        pipes=len(wn.pipe_name_list),
        origin=origin,
        metres_per_unit=metres_per_unit,
        districts=tuple(districts),
        sensors=tuple(sensors),
    )
