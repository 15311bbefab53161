"""Water networks in the database: the network, its districts and its sensor devices.

:func:`store_network` writes one ``networks.assets.NetworkSpec``-shaped
description in one transaction: the ``water_networks`` row, its
``network_districts``, a ``devices`` row per sensor (asset = the district, zone
= the district, so alert routing and the inbox work unchanged) and the
``network_sensors`` row saying which node or pipe it sits on. Registering the
same network again updates it in place; districts or sensors it no longer
lists are removed (their devices stay, as readings may reference them).
"""

from __future__ import annotations

from typing import Any, Protocol

import psycopg
from psycopg.types.json import Jsonb

__all__ = [
    "alert_leak_candidates",
    "district_layouts",
    "district_sensors",
    "list_networks",
    "record_leaks",
    "store_candidates",
    "store_network",
]


class _Spec(Protocol):  # networks.assets.NetworkSpec; storage does not import networks
    network_id: str
    inp_file: str
    inp_sha256: str
    junctions: int
    pipes: int
    origin: tuple[float, float] | None
    metres_per_unit: float
    districts: tuple[Any, ...]
    sensors: tuple[Any, ...]

    def asset_id(self, district_id: str) -> str: ...


def store_network(database_url: str, spec: _Spec) -> dict[str, int]:
    """Upsert the network, its districts and sensors; return what was written."""
    lat, lon = spec.origin if spec.origin else (None, None)
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO water_networks (network_id, inp_file, inp_sha256, junctions, pipes,"
            " origin_lat, origin_lon, metres_per_unit) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (network_id) DO UPDATE SET inp_file = EXCLUDED.inp_file,"
            " inp_sha256 = EXCLUDED.inp_sha256, junctions = EXCLUDED.junctions,"
            " pipes = EXCLUDED.pipes, origin_lat = EXCLUDED.origin_lat,"
            " origin_lon = EXCLUDED.origin_lon, metres_per_unit = EXCLUDED.metres_per_unit,"
            " registered_at = now()",
            (
                spec.network_id,
                spec.inp_file,
                spec.inp_sha256,
                spec.junctions,
                spec.pipes,
                lat,
                lon,
                spec.metres_per_unit,
            ),
        )
        keep = [d.district_id for d in spec.districts]
        cur.execute(
            "DELETE FROM network_districts WHERE network_id = %s AND NOT district_id = ANY(%s)",
            (spec.network_id, keep),
        )
        cur.executemany(
            "INSERT INTO network_districts (network_id, district_id, asset_id, nodes,"
            " inlet_links) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (network_id, district_id)"
            " DO UPDATE SET asset_id = EXCLUDED.asset_id, nodes = EXCLUDED.nodes,"
            " inlet_links = EXCLUDED.inlet_links",
            [
                (
                    spec.network_id,
                    d.district_id,
                    spec.asset_id(d.district_id),
                    Jsonb(list(d.nodes)),
                    Jsonb(list(d.inlets)),
                )
                for d in spec.districts
            ],
        )
        cur.executemany(
            "INSERT INTO devices (device_id, asset_id, asset_type, lat, lon, zone)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (device_id) DO UPDATE SET"
            " asset_id = EXCLUDED.asset_id, asset_type = EXCLUDED.asset_type,"
            " lat = EXCLUDED.lat, lon = EXCLUDED.lon, zone = EXCLUDED.zone",
            [
                (
                    s.device_id,
                    spec.asset_id(s.district_id),
                    s.asset_type,
                    s.lat,
                    s.lon,
                    spec.asset_id(s.district_id),
                )
                for s in spec.sensors
            ],
        )
        cur.execute(
            "DELETE FROM network_sensors WHERE network_id = %s AND NOT device_id = ANY(%s)",
            (spec.network_id, [s.device_id for s in spec.sensors]),
        )
        cur.executemany(
            "INSERT INTO network_sensors (device_id, network_id, district_id, element_kind,"
            " element_id, metric, x, y) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (device_id) DO UPDATE SET network_id = EXCLUDED.network_id,"
            " district_id = EXCLUDED.district_id, element_kind = EXCLUDED.element_kind,"
            " element_id = EXCLUDED.element_id, metric = EXCLUDED.metric, x = EXCLUDED.x,"
            " y = EXCLUDED.y",
            [
                (
                    s.device_id,
                    spec.network_id,
                    s.district_id,
                    s.element_kind,
                    s.element_id,
                    s.metric,
                    s.x,
                    s.y,
                )
                for s in spec.sensors
            ],
        )
    return {"districts": len(spec.districts), "sensors": len(spec.sensors)}


def list_networks(database_url: str) -> list[dict[str, Any]]:
    """Every network with its district and sensor counts."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT n.network_id, n.inp_file, n.junctions, n.pipes,"
            " (SELECT count(*) FROM network_districts d WHERE d.network_id = n.network_id),"
            " (SELECT count(*) FROM network_sensors s WHERE s.network_id = n.network_id)"
            " FROM water_networks n ORDER BY n.network_id"
        ).fetchall()
    keys = ("network_id", "inp_file", "junctions", "pipes", "districts", "sensors")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def district_sensors(database_url: str, network_id: str) -> list[dict[str, Any]]:
    """The sensors of a network with their element, district and coordinates."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT s.device_id, s.district_id, d.asset_id, d.asset_type, s.element_kind,"
            " s.element_id, s.metric, s.x, s.y, d.lat, d.lon FROM network_sensors s"
            " JOIN devices d USING (device_id) WHERE s.network_id = %s ORDER BY s.device_id",
            (network_id,),
        ).fetchall()
    keys = (
        "device_id",
        "district_id",
        "asset_id",
        "asset_type",
        "element_kind",
        "element_id",
        "metric",
        "x",
        "y",
        "lat",
        "lon",
    )
    return [dict(zip(keys, row, strict=True)) for row in rows]


def record_leaks(database_url: str, rows: list[dict[str, Any]]) -> int:
    """Store leak ground truth (network_id, asset_id, node, diameter_m, kind, start_at,
    peak_at, end_at); idempotent on (network, node, start)."""
    if not rows:
        return 0
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO network_leaks (network_id, asset_id, node, diameter_m, kind, start_at,"
            " peak_at, end_at) VALUES (%(network_id)s, %(asset_id)s, %(node)s, %(diameter_m)s,"
            " %(kind)s, %(start_at)s, %(peak_at)s, %(end_at)s)"
            " ON CONFLICT (network_id, node, start_at) DO NOTHING",
            rows,
        )
    return len(rows)


def district_layouts(database_url: str) -> dict[str, dict[str, Any]]:
    """Per district asset: its network's model file and every sensor on it, for the worker."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT d.asset_id, n.network_id, n.inp_file, n.origin_lat, n.origin_lon,"
            " n.metres_per_unit, s.device_id, s.element_kind, s.element_id, s.metric,"
            " v.lat, v.lon FROM network_districts d JOIN water_networks n USING (network_id)"
            " JOIN network_sensors s ON s.network_id = d.network_id"
            " AND s.district_id = d.district_id LEFT JOIN devices v ON v.device_id = s.device_id"
            " ORDER BY d.asset_id, s.device_id"
        ).fetchall()
    out: dict[str, dict[str, Any]] = {}
    for asset, network, inp, lat, lon, mpu, device, kind, element, metric, dlat, dlon in rows:
        layout = out.setdefault(
            asset,
            {
                "network_id": network,
                "inp_file": inp,
                "origin": (lat, lon) if lat is not None else None,
                "metres_per_unit": mpu,
                "sensors": [],
            },
        )
        layout["sensors"].append((device, kind, element, metric, dlat, dlon))
    return out


def store_candidates(database_url: str, rows: list[tuple]) -> int:
    """(ts, asset_id, rank, node, score, lat, lon, x, y) rows; idempotent on (asset, ts, rank)."""
    if not rows:
        return 0
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO leak_candidates (ts, asset_id, rank, node, score, lat, lon, x, y)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (asset_id, ts, rank)"
            " DO UPDATE SET node = EXCLUDED.node, score = EXCLUDED.score",
            rows,
        )
    return len(rows)


def alert_leak_candidates(
    conn: psycopg.Connection, asset_id: str, opened_at, k: int = 5
) -> list[dict[str, Any]]:
    """The latest candidate ranking of a district since a day before its alert opened."""
    rows = conn.execute(
        "SELECT ts, rank, node, score, lat, lon, x, y FROM leak_candidates"
        " WHERE asset_id = %s AND ts = (SELECT max(ts) FROM leak_candidates"
        " WHERE asset_id = %s AND ts >= %s - interval '1 day') ORDER BY rank LIMIT %s",
        (asset_id, asset_id, opened_at, k),
    ).fetchall()
    keys = ("ts", "rank", "node", "score", "lat", "lon", "x", "y")
    return [dict(zip(keys, row, strict=True)) for row in rows]
