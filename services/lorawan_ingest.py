"""The glue between LoRaWAN ingest (``ingest.lorawan``), the device registry in the
database (``storage.device_registry``) and Kafka: what the bridge, the webhooks
and the demo's LoRaWAN leg run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.settings import Settings
from services.connection import Connection

if TYPE_CHECKING:
    from ingest.lorawan.bridge import UplinkProcessor
    from storage.device_registry import RegistryLoad


class DatabaseRegistry(dict):
    """The newest registry version from the database, reloaded when an unknown DevEUI shows up.

    Reloads at most every ``min_reload_s`` so a flood of unknown devices does not
    hammer the database; a device loaded with ``citywatch devices load`` while
    the bridge runs is picked up on its next uplink.
    """

    def __init__(self, database_url: str, min_reload_s: float = 5.0) -> None:
        super().__init__()
        self.database_url = database_url
        self.min_reload_s = min_reload_s
        self.version: int | None = None
        self._loaded_at = -float("inf")
        self.reload()

    def reload(self) -> None:
        import psycopg

        from ingest.lorawan.errors import TransientError
        from ingest.lorawan.registry import parse_registry
        from storage.device_registry import latest_registry

        self._loaded_at = time.monotonic()
        try:
            latest = latest_registry(self.database_url)
        except psycopg.OperationalError as exc:
            # The device may well be registered: hold the frame, don't dead-letter it.
            raise TransientError(f"device registry unavailable: {exc}") from exc
        if latest is None:
            return
        version, rows = latest
        # Auto-registered devices are not in the document; keep them.
        self.update(parse_registry(rows, source=f"registry v{version}"))
        self.version = version

    def get(self, key: Any, default: Any = None) -> Any:
        found = super().get(key)
        if found is None and time.monotonic() - self._loaded_at >= self.min_reload_s:
            self.reload()
            found = super().get(key)
        return default if found is None else found


def load_registry_file(database_url: str, path: Path) -> RegistryLoad:
    """Validate a registry file and store it as a new version (unless unchanged)."""
    from ingest.lorawan.registry import entry_to_row, load_registry
    from storage.device_registry import store_registry

    entries = load_registry(path)
    rows = [entry_to_row(e) for e in entries.values()]
    return store_registry(database_url, rows, source=path.name)


def build_processor(
    settings: Settings,
    conn: Connection,
    *,
    network: str | None,
    channel: str,
    dedup_window_s: float,
    auto_register: str | None,
    auto_codec: str,
    registry: dict | None = None,
    max_bytes: int = 64 << 10,
) -> UplinkProcessor:
    """An UplinkProcessor publishing to this deployment's topics."""
    from ingest.lorawan.bridge import AutoRegister, UplinkProcessor
    from ingest.lorawan.dedup import FrameDeduplicator
    from ingest.lorawan.publisher import KafkaPublisher
    from ingest.lorawan.registry import entry_to_row
    from storage.device_registry import auto_register_device
    from streams.topics import DEADLETTER, READINGS, ensure_topics

    ensure_topics(conn.kafka, settings)
    publisher = KafkaPublisher(
        conn.kafka, settings.topic(READINGS), settings.topic(DEADLETTER), keep_raw=max_bytes
    )
    auto = AutoRegister(auto_register, auto_codec) if auto_register else None

    def on_register(entry) -> None:
        import psycopg

        from ingest.lorawan.errors import TransientError

        try:
            auto_register_device(conn.database_url, entry_to_row(entry))
        except psycopg.OperationalError as exc:
            raise TransientError(f"device registry unavailable: {exc}") from exc

    return UplinkProcessor(
        publisher,
        registry if registry is not None else DatabaseRegistry(conn.database_url),
        network=network,  # type: ignore[arg-type]
        channel=channel,
        dedup=FrameDeduplicator(window_s=dedup_window_s),
        auto_register=auto,
        on_register=on_register if auto else None,
        max_bytes=max_bytes,
    )
