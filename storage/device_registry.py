"""The device registry in the database: versioned documents plus the ``devices`` rows.

A registry document is the list of normalised device rows (plain JSON, one
mapping per device; ``ingest.lorawan.registry.entry_to_row`` writes them).
:func:`store_registry` keeps every distinct document in
``device_registry_versions`` and upserts ``devices`` (``device_id`` = DevEUI, or
the network server's device id for a device without one,
``dev_eui``, ``zone``, ``registry_version``), so the worker's device lookup
accepts the LoRaWAN devices and each row says which registry version set it.

Versioning: the SHA-256 of the canonical JSON (rows sorted by DevEUI, keys
sorted) identifies the content. Loading content equal to the newest version
creates no version; loading an older content again (a rollback) does, because
it changes what is current. Devices missing from a newer document are kept
(their readings reference them) but keep their older ``registry_version``.

This module only stores and reads rows; validation belongs to the ingest
layer that parses registry files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

__all__ = [
    "RegistryLoad",
    "auto_register_device",
    "canonical_sha256",
    "latest_registry",
    "load_devices",
    "register_devices",
    "registry_versions",
    "show_device",
    "store_registry",
]


@dataclass(frozen=True)
class RegistryLoad:
    """The outcome of :func:`store_registry`.

    Attributes
    ----------
    version : int
        The registry version now current.
    created : bool
        False when the content equalled the newest version (nothing new stored).
    entries : int
        Devices in the document.
    sha256 : str
        Hash of the canonical document.
    """

    version: int
    created: bool
    entries: int
    sha256: str


def row_key(row: Mapping[str, Any]) -> str:
    """A device's citywatch id: its DevEUI, else its network-server device id."""
    return str(row.get("dev_eui") or row.get("device_id") or "")


def _canonical(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return sorted((dict(r) for r in rows), key=row_key)


def canonical_sha256(rows: Sequence[Mapping[str, Any]]) -> str:
    """SHA-256 of the rows' canonical JSON (order of rows and keys does not matter)."""
    text = json.dumps(_canonical(rows), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _device_params(row: Mapping[str, Any], version: int | None) -> dict[str, Any]:
    installed = row.get("installed_at")
    return {
        "device_id": row_key(row),
        "dev_eui": row.get("dev_eui"),
        "asset_id": row["asset_id"],
        "asset_type": row["asset_type"],
        "lat": row.get("lat"),
        "lon": row.get("lon"),
        "installed_at": datetime.fromisoformat(installed) if isinstance(installed, str) else None,
        "codec": row.get("codec"),
        "zone": row.get("zone"),
        "registry_version": version,
    }


_UPSERT_DEVICE = (
    "INSERT INTO devices (device_id, dev_eui, asset_id, asset_type, lat, lon, installed_at,"
    " codec, zone, registry_version) VALUES (%(device_id)s, %(dev_eui)s, %(asset_id)s,"
    " %(asset_type)s, %(lat)s, %(lon)s, %(installed_at)s, %(codec)s, %(zone)s,"
    " %(registry_version)s) ON CONFLICT (device_id) DO UPDATE SET dev_eui = EXCLUDED.dev_eui,"
    " asset_id = EXCLUDED.asset_id, asset_type = EXCLUDED.asset_type, lat = EXCLUDED.lat,"
    " lon = EXCLUDED.lon, installed_at = EXCLUDED.installed_at, codec = EXCLUDED.codec,"
    " zone = EXCLUDED.zone, registry_version = EXCLUDED.registry_version"
)


def store_registry(
    conn: psycopg.Connection, rows: Sequence[Mapping[str, Any]], *, source: str
) -> RegistryLoad:
    """Store a registry document as a new version (unless unchanged) and upsert its devices.

    Parameters
    ----------
    conn : psycopg.Connection
        Committed here (one transaction with the version and its devices).
    rows : sequence of mapping
        Validated, normalised device rows with at least ``dev_eui``,
        ``asset_id``, ``asset_type`` and ``codec``.
    source : str
        Where the document came from (a file name), for the version history.

    Returns
    -------
    RegistryLoad
    """
    document = _canonical(rows)
    sha = canonical_sha256(document)
    with conn.transaction(), conn.cursor() as cur:
        # Serialise loaders: two processes loading at once must not both create versions.
        cur.execute("LOCK TABLE device_registry_versions IN SHARE ROW EXCLUSIVE MODE")
        latest = cur.execute(
            "SELECT version, sha256 FROM device_registry_versions ORDER BY version DESC LIMIT 1"
        ).fetchone()
        if latest is not None and latest[1] == sha:
            version, created = latest[0], False
        else:
            version = cur.execute(
                "INSERT INTO device_registry_versions (source, sha256, entries, document)"
                " VALUES (%s, %s, %s, %s) RETURNING version",
                (source, sha, len(document), Jsonb(document)),
            ).fetchone()[0]
            created = True
        # Upsert even when unchanged: it heals rows edited by hand, and costs little.
        cur.executemany(_UPSERT_DEVICE, [_device_params(r, version) for r in document])
    return RegistryLoad(version=version, created=created, entries=len(document), sha256=sha)


def latest_registry(conn: psycopg.Connection) -> tuple[int, list[dict[str, Any]]] | None:
    """``(version, rows)`` of the newest registry document, or None when none was loaded."""
    row = conn.execute(
        "SELECT version, document FROM device_registry_versions ORDER BY version DESC LIMIT 1"
    ).fetchone()
    return None if row is None else (row[0], list(row[1]))


def registry_versions(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """The version history, oldest first (without the documents)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT version, loaded_at, source, sha256, entries FROM device_registry_versions"
            " ORDER BY version"
        ).fetchall()


def show_device(conn: psycopg.Connection, dev_eui: str) -> dict[str, Any] | None:
    """The ``devices`` row of a DevEUI, with its entry in the newest registry document."""
    dev_eui = dev_eui.lower()
    with conn.cursor(row_factory=dict_row) as cur:
        device = cur.execute(
            "SELECT device_id, dev_eui, asset_id, asset_type, lat, lon, installed_at, codec,"
            " zone, registry_version, registered_at FROM devices"
            " WHERE dev_eui = %s OR device_id = %s",
            (dev_eui, dev_eui),
        ).fetchone()
        if device is None:
            return None
        entry = cur.execute(
            "SELECT e FROM device_registry_versions v, jsonb_array_elements(v.document) e"
            " WHERE v.version = (SELECT max(version) FROM device_registry_versions)"
            " AND (e->>'dev_eui' = %s OR e->>'device_id' = %s)",
            (dev_eui, dev_eui),
        ).fetchone()
    device["registry_entry"] = entry["e"] if entry else None
    return device


def auto_register_device(conn: psycopg.Connection, row: Mapping[str, Any]) -> bool:
    """Register a device the operator allowed to self-register (no registry version).

    Returns True when the row was inserted, False when the device already existed
    (an existing registration is never overwritten by an automatic one).
    """
    with conn.transaction():
        cur = conn.execute(
            _UPSERT_DEVICE.split(" ON CONFLICT")[0] + " ON CONFLICT DO NOTHING",
            _device_params(row, None),
        )
    return cur.rowcount == 1


def register_devices(conn: psycopg.Connection, devices: Sequence[dict[str, Any]]) -> int:
    """Insert or update ``devices`` rows without a registry document (the simulator's,
    a replay's); returns how many were written."""
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO devices (device_id, asset_id, asset_type, lat, lon, installed_at, codec)"
            " VALUES (%(device_id)s, %(asset_id)s, %(asset_type)s, %(lat)s, %(lon)s,"
            " %(installed_at)s, %(codec)s)"
            " ON CONFLICT (device_id) DO UPDATE SET asset_id = EXCLUDED.asset_id,"
            " asset_type = EXCLUDED.asset_type, lat = EXCLUDED.lat, lon = EXCLUDED.lon,"
            " installed_at = EXCLUDED.installed_at, codec = EXCLUDED.codec",
            [{"codec": None, **d} for d in devices],
        )
    return len(devices)


def load_devices(conn: psycopg.Connection) -> dict[str, tuple[str, str]]:
    """``device_id -> (asset_id, asset_type)`` for every registered device."""
    rows = conn.execute("SELECT device_id, asset_id, asset_type FROM devices").fetchall()
    return {d: (a, t) for d, a, t in rows}
