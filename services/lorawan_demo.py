"""The demo's LoRaWAN leg: part of the fleet goes simulator -> MQTT -> bridge -> Kafka.

A quarter of the devices (spread over the asset types) are registered with
their DevEUIs and codecs; their readings are published as ChirpStack or The
Things Stack uplinks (alternating per device), heard by several gateways, a
few frames corrupted. Two bridges (one per format) run in threads and publish
to the same Kafka topics as the rest of the fleet.

The loop: simulated sensors (``ingest.lorawan.sim_devices``) obey downlinks,
and a downlink service (``services.downlinks``) reads the worker's
scores and alerts and sends them reporting-interval commands. A sensor reports
every ``normal_interval_s`` (simulated seconds; a tick is 5 simulated minutes)
until its asset is at risk, then every ``fast_interval_s``, and back after the
repair closes the alert; readings a sleeping sensor does not transmit are
counted (``readings_not_transmitted``).

Only well-formed readings take the MQTT route: the demo's deliberately bad
reading bytes cannot be encoded as a radio frame, so they go to Kafka as
before and the worker dead-letters them; the radio faults are the uplink
corruptions, dead-lettered by the bridge.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from core.assets import ASSET_TYPES
from core.settings import Settings
from services.connection import Connection

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
    rate : float
        The simulator's readings per second (to relate reading times to ticks).
    adaptive : bool
        Close the loop: sensors obey downlinks from the downlink service.
    risk_level, normal_interval_s, fast_interval_s
        The loop's policy (intervals in simulated seconds).
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
        rate: float = 500.0,
        adaptive: bool = True,
        risk_level: float = 0.5,
        normal_interval_s: int = 600,
        fast_interval_s: int = 300,
    ) -> None:
        self.settings, self.conn, self.mqtt_url = settings, conn, mqtt_url
        self.rate, self.adaptive, self.risk_level = rate, adaptive, risk_level
        self.normal_interval_s, self.fast_interval_s = normal_interval_s, fast_interval_s
        self.radios: Any = None
        self.service: Any = None
        self._service_stop = threading.Event()
        self._service_thread: threading.Thread | None = None
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
        from services.fleet import register_lorawan_devices

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
        if self.adaptive:
            self._start_loop(fleet, registry)

        def send(key: bytes, value: bytes) -> None:
            reading = self._radio_reading(key, value)
            if reading is None:
                kafka_send(key, value)
                return
            dev_eui, metrics, ts = reading
            if self.radios is not None and not self.radios.due(dev_eui, ts):
                return  # the sensor sleeps until its reporting interval has passed
            self.publishers[self.formats[dev_eui]].publish_reading(dev_eui, metrics, ts)

        return send

    def _start_loop(self, fleet, registry) -> None:
        from ingest.lorawan.adaptive import SamplingPolicy
        from ingest.lorawan.sim_devices import SimulatedRadios
        from services.downlinks import DownlinkService

        # Reading times are wall clock, a tick apart; a tick is 5 simulated minutes.
        tick_s = len(fleet.devices) / max(self.rate, 1e-9)
        scale = (86400 / getattr(fleet, "day_ticks", 288)) / tick_s
        self.radios = SimulatedRadios(
            self.mqtt_url, registry, normal_interval_s=self.normal_interval_s, time_scale=scale
        )
        policy = SamplingPolicy(
            risk_level=self.risk_level,
            fast_interval_s=self.fast_interval_s,
            normal_interval_s=self.normal_interval_s,
            min_gap_s=120 / scale,  # the duty-cycle gap, in the demo's compressed time
        )
        self.service = DownlinkService(self.settings, self.conn, self.mqtt_url, policy)
        # One line per command is for the service's own log, not the demo's screen.
        logging.getLogger("services.downlinks").setLevel(logging.WARNING)
        self._service_thread = threading.Thread(
            target=self.service.run, args=(self._service_stop.is_set,), daemon=True
        )
        self._service_thread.start()

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
        from services.lorawan_ingest import build_processor

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
        if self._service_thread is not None:
            time.sleep(2 * self.settings.batch_within_s + 1.0)  # the last alerts' closes
            self._service_stop.set()
            self._service_thread.join(15)
            self.service.close()
            self.radios.close()
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
            **self._loop_figures(),
        }

    def _loop_figures(self) -> dict[str, Any]:
        if self.radios is None:
            return {}
        counts = self.service.counts
        return {
            "readings_not_transmitted": self.radios.skipped,
            "downlinks_sent": counts["sent"],
            "downlinks_refused": counts["refused"],
            "downlinks_obeyed": self.radios.received,
            "interval_loops": self.radios.loops(),
            "interval_normal_s": self.normal_interval_s,
        }
