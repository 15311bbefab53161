"""The worker's device directory against a real PostgreSQL: a device registered a
moment ago is found at once, and a flood of unknown ids costs a bounded number of
queries."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from storage.device_registry import register_devices
from storage.sinks import SinkUnavailableError
from streams.devices import DeviceDirectory
from tests.pipeline_helpers import database_outage

pytestmark = pytest.mark.stack


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _device(device_id: str) -> dict:
    return {
        "device_id": device_id,
        "asset_id": f"asset-{device_id}",
        "asset_type": "lift",
        "lat": 52.0,
        "lon": 4.0,
        "installed_at": datetime(2025, 1, 1, tzinfo=UTC),
    }


def test_a_device_registered_after_the_last_reload_is_found_at_once(conn, db):
    clock = Clock()
    directory = DeviceDirectory(conn.database_url, clock=clock)
    with psycopg.connect(conn.database_url) as pg:
        register_devices(pg, [_device("old")])
    assert directory.lookup("old") == ("asset-old", "lift")  # the first miss reloads
    with psycopg.connect(conn.database_url) as pg:
        register_devices(pg, [_device("new")])  # as the bridge auto-registers
    clock.now += 0.1  # well inside the reload interval
    assert directory.lookup("new") == ("asset-new", "lift")
    assert directory.single_lookups == 1
    assert directory.lookup("new") == ("asset-new", "lift")  # now from memory
    assert directory.single_lookups == 1
    directory.close()


def test_a_flood_of_unknown_ids_costs_a_bounded_number_of_queries(conn, db):
    clock = Clock()
    directory = DeviceDirectory(conn.database_url, lookups_per_s=20, clock=clock)
    directory.reload()
    for i in range(5000):
        assert directory.lookup(f"forged-{i}") is None
    assert directory.single_lookups == 20  # the bucket, then nothing until it refills
    clock.now += 0.5
    for i in range(5000, 10000):
        directory.lookup(f"forged-{i}")
    assert directory.single_lookups == 30  # half a second refills ten lookups
    # An id looked up and absent is not queried again before the next reload.
    clock.now += 0.2
    for _ in range(100):
        directory.lookup("forged-0")
    assert directory.single_lookups == 30
    directory.close()


def test_an_unreachable_database_is_an_outage_not_an_unknown_device(conn, db):
    directory = DeviceDirectory(conn.database_url)
    with database_outage(conn), pytest.raises(SinkUnavailableError):
        directory.lookup("anyone")
    directory.close()
