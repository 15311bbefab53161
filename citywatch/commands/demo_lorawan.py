"""The demo's LoRaWAN leg: part of the fleet goes simulator -> MQTT -> bridge -> Kafka.

A quarter of the devices (spread over the asset types) are registered with
their DevEUIs and codecs; their readings are published as ChirpStack or The
Things Stack uplinks (alternating per device), heard by several gateways, a
few frames corrupted. Two bridges (one per format) run in threads and publish
to the same Kafka topics as the rest of the fleet.

Only well-formed readings take the MQTT route: the demo's deliberately bad
reading bytes cannot be encoded as a radio frame, so they go to Kafka as
before and the worker dead-letters them; the radio faults are the uplink
corruptions, dead-lettered by the bridge.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from citywatch.assets import ASSET_TYPES
from citywatch.runtime import Connection
from citywatch.settings import Settings

FORMATS = ("chirpstack", "tts")


class LorawanLeg:
    """Route a share of the fleet through MQTT and two bridges.

    Parameters
    ----------
    settings, conn
        The demo's settings and connection.
    mqtt_url : str
    share : float
        Fraction of devices sent as uplinks.
    gateways : int
        Gateways hearing each frame.
    corrupt_rate : float
        Share of uplink frames sent broken.
    seed : int
    """

    def __init__(
        self,
        settings: Settings,
        conn: Connection,
        mqtt_url: str,
        *,
        share: float = 0.25,
        gateways: int = 3,
        corrupt_rate: float = 0.01,
        seed: int = 0,
    ) -> None:
        self.settings, self.conn, self.mqtt_url = settings, conn, mqtt_url
        self.share, self.gateways = share, gateways
        self.corrupt_rate, self.seed = corrupt_rate, seed
        self.devices: dict[str, Any] = {}  # dev_eui -> Device
        self.formats: dict[str, str] = {}  # dev_eui -> format
        self.publishers: dict[str, Any] = {}
        self.bridges: dict[str, tuple[Any, threading.Event, threading.Thread]] = {}

    def wrap(self, fleet, kafka_send: Callable[[bytes, bytes], None]):
        """``run_fleet``'s ``wrap_send``: start the bridges, return the routing ``send``."""
        from ingest.lorawan.mqtt_out import UplinkPublisher
        from ingest.lorawan.uplink_sim import UplinkEncoder

        from .simulate import register_lorawan_devices

        step = max(1, round(1 / self.share))
        # Devices cycle through the asset types, so i // 4 picks every type alike.
        chosen = [d for i, d in enumerate(fleet.devices) if (i // 4) % step == 0]
        self.devices = {d.device_id: d for d in chosen}
        self.formats = {d.device_id: FORMATS[i % 2] for i, d in enumerate(chosen)}
        registry = register_lorawan_devices(self.conn.database_url, chosen, seed=self.seed)
        for k, fmt in enumerate(FORMATS):
            self.bridges[fmt] = self._start_bridge(fmt)
            encoder = UplinkEncoder(
                fmt,  # type: ignore[arg-type]
                registry,
                gateways=self.gateways,
                corrupt_rate=self.corrupt_rate,
                application_id=f"citywatch-demo-{fmt}",
                seed=self.seed + k,
            )
            self.publishers[fmt] = UplinkPublisher(self.mqtt_url, encoder)

        def send(key: bytes, value: bytes) -> None:
            reading = self._radio_reading(key, value)
            if reading is None:
                kafka_send(key, value)
                return
            dev_eui, metrics, ts = reading
            self.publishers[self.formats[dev_eui]].publish_reading(dev_eui, metrics, ts)

        return send

    def _radio_reading(self, key: bytes, value: bytes):
        dev_eui = key.decode(errors="replace")
        device = self.devices.get(dev_eui)
        if device is None:
            return None
        try:
            doc = json.loads(value)
            metrics = doc["metrics"]
            ts = datetime.fromisoformat(doc["ts"])
        except (ValueError, KeyError, TypeError):
            return None
        spec = ASSET_TYPES[device.asset_type]
        ok = (
            doc.get("device_id") == dev_eui
            and doc.get("asset_id") == device.asset_id
            and set(metrics) == set(spec.metric_names)
            and all(
                isinstance(v, int | float) and math.isfinite(v) and spec.metric(m).in_range(v)
                for m, v in metrics.items()
            )
        )
        return (dev_eui, metrics, ts) if ok else None

    def _start_bridge(self, fmt: str):
        from ingest.lorawan.bridge import MqttBridge, default_client_id

        from .ingest import build_processor

        processor = build_processor(
            self.settings,
            self.conn,
            network=fmt,
            channel="mqtt",
            dedup_window_s=0.2,
            auto_register=None,
            auto_codec="passthrough",
        )
        bridge = MqttBridge(
            self.mqtt_url, fmt, processor, client_id=default_client_id(f"demo-{fmt}")
        )
        bridge.start()
        stop = threading.Event()
        thread = threading.Thread(target=bridge.run, args=(stop.is_set,), daemon=True)
        thread.start()
        return processor, stop, thread

    def finish(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Wait until the bridges took every published message, stop them, return figures."""
        for publisher in self.publishers.values():
            publisher.close()
        expected = sum(p.messages for p in self.publishers.values())
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if sum(p.stats.acked for p, _, _ in self.bridges.values()) >= expected:
                break
            time.sleep(0.2)
        for processor, stop, thread in self.bridges.values():
            stop.set()
            thread.join(15)
            processor.publisher.close()
        return self.figures()

    def figures(self) -> dict[str, Any]:
        stats = [p.stats for p, _, _ in self.bridges.values()]
        dead: Counter[str] = Counter()
        for s in stats:
            dead.update(s.deadletters)
        return {
            "lorawan_devices": len(self.devices),
            "lorawan_frames": sum(p.frames for p in self.publishers.values()),
            "uplinks_published": sum(p.messages for p in self.publishers.values()),
            "uplinks_received": sum(s.received for s in stats),
            "uplink_readings": sum(s.published for s in stats),
            "uplink_duplicates_removed": sum(s.duplicates for s in stats),
            "ingest_deadletters": sum(dead.values()),
            "ingest_deadletters_by_reason": dict(sorted(dead.items())),
            "lorawan_gateways": self.gateways,
        }
