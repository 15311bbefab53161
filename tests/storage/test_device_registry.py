"""The versioned device registry in PostgreSQL (schema v3)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from ingest.lorawan.registry import entry_to_row, load_registry, parse_registry
from storage.device_registry import (
    auto_register_device,
    latest_registry,
    registry_versions,
    show_device,
    store_registry,
)

FIXTURES = Path(__file__).resolve().parents[1] / "ingest" / "lorawan" / "fixtures"


@pytest.fixture
def registry_db(db):
    db.execute("TRUNCATE device_registry_versions RESTART IDENTITY")
    yield db


def rows_of(path: Path) -> list[dict]:
    return [entry_to_row(e) for e in load_registry(path).values()]


def test_same_content_twice_creates_one_version(conn, registry_db) -> None:
    rows = rows_of(FIXTURES / "registry.yaml")
    first = store_registry(registry_db, rows, source="registry.yaml")
    again = store_registry(registry_db, list(reversed(rows)), source="again.yaml")
    assert first.created and not again.created
    assert again.version == first.version == 1
    assert len(registry_versions(registry_db)) == 1


def test_yaml_and_csv_of_the_same_devices_hash_alike(conn, registry_db) -> None:
    csv_rows = rows_of(FIXTURES / "registry.csv")
    in_csv = {r["dev_eui"] for r in csv_rows}
    yaml_rows = [r for r in rows_of(FIXTURES / "registry.yaml") if r["dev_eui"] in in_csv]
    a = store_registry(registry_db, yaml_rows, source="registry.yaml")
    b = store_registry(registry_db, csv_rows, source="registry.csv")
    assert a.created and not b.created and a.sha256 == b.sha256


def test_changed_content_is_a_new_version_and_devices_follow(conn, registry_db) -> None:
    rows = rows_of(FIXTURES / "registry.yaml")
    store_registry(registry_db, rows, source="v1")
    changed = [dict(rows[0], zone="noord", asset_id="pump-9999"), *rows[1:]]
    second = store_registry(registry_db, changed, source="v2")
    assert second.created and second.version == 2
    device = registry_db.execute(
        "SELECT device_id, dev_eui, asset_id, zone, registry_version FROM devices"
        " WHERE dev_eui = %s",
        (rows[0]["dev_eui"],),
    ).fetchone()
    assert device == (rows[0]["dev_eui"],) * 2 + ("pump-9999", "noord", 2)
    # Rolling back to v1's content is a change too: a third version.
    third = store_registry(registry_db, rows, source="v1 again")
    assert third.created and third.version == 3


def test_latest_document_round_trips_through_validation(conn, registry_db) -> None:
    entries = load_registry(FIXTURES / "registry.yaml")
    store_registry(registry_db, [entry_to_row(e) for e in entries.values()], source="f")
    version, rows = latest_registry(registry_db)
    assert version == 1
    assert parse_registry(rows) == entries


def test_show_device_includes_registry_entry(conn, registry_db) -> None:
    rows = rows_of(FIXTURES / "registry.yaml")
    store_registry(registry_db, rows, source="f")
    shown = show_device(registry_db, rows[0]["dev_eui"].upper())
    assert shown["asset_id"] == rows[0]["asset_id"]
    assert shown["registry_entry"]["codec"] == rows[0]["codec"]
    assert show_device(registry_db, "ffffffffffffffff") is None


def test_auto_registration_never_overwrites(conn, registry_db) -> None:
    rows = rows_of(FIXTURES / "registry.yaml")
    store_registry(registry_db, rows, source="f")
    auto = {"dev_eui": rows[0]["dev_eui"], "asset_id": "auto-x", "asset_type": "bridge"}
    assert auto_register_device(registry_db, auto) is False
    new = {"dev_eui": "00000000000000ab", "asset_id": "auto-ab", "asset_type": "bridge"}
    assert auto_register_device(registry_db, new) is True
    with psycopg.connect(conn.database_url) as c:
        kept = c.execute(
            "SELECT asset_id FROM devices WHERE device_id = %s", (rows[0]["dev_eui"],)
        ).fetchone()
        added = c.execute(
            "SELECT asset_id, registry_version FROM devices WHERE device_id = '00000000000000ab'"
        ).fetchone()
    assert kept[0] == rows[0]["asset_id"]
    assert added == ("auto-ab", None)
