"""The worker's view of the device registry, for validation.

A full copy of ``devices`` is kept in memory and reloaded when an unknown id
shows up, at most every ``min_reload_interval_s``. Between reloads, an unknown
id gets a single-row lookup, so a device registered a moment ago (the LoRaWAN
bridge auto-registers a device right before publishing its first uplink) is
found at once. Those lookups are rate-limited, because unknown ids are what a
hostile producer sends: a flood costs at most ``lookups_per_s`` indexed queries
a second, and the ids it tried are remembered as absent until the next reload.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg

from storage.device_registry import load_devices
from storage.sinks import SinkUnavailableError

_MAX_REMEMBERED_ABSENT = 100_000


class DeviceDirectory:
    """``lookup(device_id) -> (asset_id, asset_type) | None`` for validation."""

    def __init__(
        self,
        database_url: str,
        min_reload_interval_s: float = 1.0,
        lookups_per_s: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._database_url = database_url
        self._min_reload = min_reload_interval_s
        self._rate = lookups_per_s
        self._clock = clock
        self._devices: dict[str, tuple[str, str]] = {}
        self._absent: set[str] = set()  # looked up since the last reload, not registered
        self._loaded_at = float("-inf")
        self._tokens = lookups_per_s
        self._refilled_at = clock()
        self._conn: psycopg.Connection | None = None
        self.single_lookups = 0  # for tests and logs: queries of one device

    def lookup(self, device_id: str) -> tuple[str, str] | None:
        found = self._devices.get(device_id)
        if found is not None:
            return found
        now = self._clock()
        if now - self._loaded_at >= self._min_reload:
            self.reload()
            return self._devices.get(device_id)
        if device_id in self._absent or not self._take_token(now):
            return None
        found = self._query_one(device_id)
        if found is None:
            if len(self._absent) >= _MAX_REMEMBERED_ABSENT:
                self._absent.clear()
            self._absent.add(device_id)
        else:
            self._devices[device_id] = found
        return found

    def reload(self) -> None:
        try:
            with psycopg.connect(self._database_url) as pg:
                self._devices = load_devices(pg)
        except psycopg.OperationalError as exc:
            raise SinkUnavailableError(f"cannot load devices: {exc}") from exc
        self._absent.clear()
        self._loaded_at = self._clock()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _take_token(self, now: float) -> bool:
        # A token bucket; written out because it is four lines and runs per message.
        self._tokens = min(self._rate, self._tokens + (now - self._refilled_at) * self._rate)
        self._refilled_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _query_one(self, device_id: str) -> tuple[str, str] | None:
        self.single_lookups += 1
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    self._database_url, autocommit=True, application_name="citywatch-devices"
                )
            row = self._conn.execute(
                "SELECT asset_id, asset_type FROM devices WHERE device_id = %s", (device_id,)
            ).fetchone()
        except psycopg.OperationalError as exc:
            self.close()
            raise SinkUnavailableError(f"cannot look up device {device_id!r}: {exc}") from exc
        return None if row is None else (row[0], row[1])
