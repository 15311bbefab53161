"""Simulated network-server traffic: readings in, real uplink JSON (ChirpStack or TTS) out.

:class:`UplinkEncoder` turns one reading of a registered device into the MQTT
messages a network server would publish for it:

* the metrics are encoded with the device's codec (a YAML binary profile's
  encoder, or Cayenne LPP through the inverse of the entry's ``metric_map``),
  then base64'd into ``data`` / ``uplink_message.frm_payload``;
* the frame counter counts up per device;
* ``gateways`` copies are emitted, one per simulated gateway, each with its own
  gateway id, RSSI and SNR: the duplicates the bridge must merge;
* a share ``corrupt_rate`` of frames is sent once, deliberately broken, with the
  dead-letter reason the bridge should give it (``malformed_json``,
  ``bad_base64`` or ``decode_error``).

It does no I/O: callers publish the messages (MQTT, HTTP) themselves.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ingest.lorawan.codecs import BinaryProfileCodec, get_codec
from ingest.lorawan.codecs.cayenne_lpp import encode_lpp
from ingest.lorawan.registry import DeviceEntry

__all__ = [
    "CORRUPTIONS",
    "SIM_LPP_METRIC_MAPS",
    "SimUplink",
    "UplinkEncoder",
    "sim_registry_rows",
    "uplink_topic",
]

Format = Literal["chirpstack", "tts"]

#: How a corrupted frame is broken, and the dead-letter reason it must get.
CORRUPTIONS: tuple[str, ...] = ("malformed_json", "bad_base64", "decode_error")

#: Cayenne LPP layouts for simulated devices, as registry ``metric_map``s
#: (decoded key -> metric). Types are chosen so the catalogue range fits:
#: ``distance`` is unsigned 32-bit with 0.001 steps, ``analog_in`` +-327.67.
SIM_LPP_METRIC_MAPS: dict[str, dict[str, str]] = {
    "water_pump": {
        "analog_in_1": "vibration_rms",
        "temperature_2": "bearing_temp",
        "distance_3": "motor_current",
        "analog_in_4": "pressure",
        "distance_5": "flow",
    },
    "lift": {
        "distance_1": "motor_current",
        "temperature_2": "motor_temp",
        "analog_in_3": "vibration_rms",
        "analog_in_4": "door_cycle_time",
        "analog_in_5": "leveling_error",
    },
}

_PORTS = {"water_pump": 10, "bridge": 20, "lift": 30, "streetlight": 40, "cayenne_lpp": 1}


@dataclass(frozen=True)
class SimUplink:
    """One MQTT message to publish.

    ``corruption`` is None for a good copy, else the dead-letter reason expected.
    """

    topic: str
    payload: bytes
    dev_eui: str
    f_cnt: int
    corruption: str | None = None


def uplink_topic(fmt: Format, application_id: str, dev_eui: str, tenant: str = "citywatch") -> str:
    """The MQTT topic a network server publishes a device's uplinks on."""
    if fmt == "chirpstack":
        return f"application/{application_id}/device/{dev_eui}/event/up"
    return f"v3/{application_id}@{tenant}/devices/eui-{dev_eui}/up"


def sim_registry_rows(devices: list[Any], lpp_share: float = 0.5) -> list[dict[str, Any]]:
    """Registry rows for simulator devices (``ingest.sim_records.Device``), DevEUI = device id.

    Every other pump and lift uses Cayenne LPP (``lpp_share`` of them), the rest
    their asset type's binary profile, so both codec families are exercised.
    """
    rows = []
    for i, d in enumerate(devices):
        row: dict[str, Any] = {
            "dev_eui": d.device_id,
            "asset_id": d.asset_id,
            "asset_type": d.asset_type,
            "codec": f"profile:{d.asset_type}",
            "lat": d.lat,
            "lon": d.lon,
            "installed_at": d.installed_at.isoformat(),
            "zone": f"zone-{i % 4 + 1}",
        }
        lpp = SIM_LPP_METRIC_MAPS.get(d.asset_type)
        # Devices cycle through the asset types, so i // 4 counts within a type.
        if lpp is not None and lpp_share > 0 and (i // 4) % max(1, round(1 / lpp_share)) == 0:
            row["codec"] = "cayenne_lpp"
            row["metric_map"] = lpp
        rows.append(row)
    return rows


class UplinkEncoder:
    """Encode readings as network-server uplink events.

    Parameters
    ----------
    fmt : {"chirpstack", "tts"}
        Which network server to imitate.
    registry : mapping of str to DeviceEntry
        Registered devices by DevEUI; their codec encodes the metrics.
    gateways : int
        Gateways hearing each frame; each publishes its own copy.
    corrupt_rate : float
        Share of frames sent broken (once) instead of good.
    application_id : str
    seed : int
    """

    def __init__(
        self,
        fmt: Format,
        registry: Mapping[str, DeviceEntry],
        *,
        gateways: int = 1,
        corrupt_rate: float = 0.0,
        application_id: str = "citywatch-sim",
        seed: int = 0,
    ) -> None:
        if fmt not in ("chirpstack", "tts"):
            raise ValueError(f"format must be chirpstack or tts, got {fmt!r}")
        if gateways < 1 or not 0.0 <= corrupt_rate <= 1.0:
            raise ValueError("need gateways >= 1 and 0 <= corrupt_rate <= 1")
        self.fmt: Format = fmt
        self.gateways = gateways
        self.corrupt_rate = corrupt_rate
        self.application_id = application_id
        self._registry = registry
        self._rng = random.Random(seed)
        self._f_cnt: dict[str, int] = {}
        self._gateway_ids = [f"{0x0016C001F1500000 + seed * 16 + g:016x}" for g in range(gateways)]

    def _frame(self, entry: DeviceEntry, metrics: Mapping[str, float]) -> tuple[int, bytes]:
        codec = get_codec(entry.codec)
        if isinstance(codec, BinaryProfileCodec):
            inverse = {metric: key for key, metric in entry.metric_map.items()}
            port = sorted(codec.profile.fports)[0] if codec.profile.fports else 1
            values = {inverse.get(m, m): v for m, v in metrics.items()}
            return port, codec.encode(values, port)
        if entry.codec == "cayenne_lpp":
            inverse = {metric: key for key, metric in entry.metric_map.items()}
            values = {inverse[m]: v for m, v in metrics.items() if m in inverse}
            return _PORTS["cayenne_lpp"], encode_lpp(values)
        raise ValueError(f"the simulator cannot encode for codec {entry.codec!r}")

    def encode(self, dev_eui: str, metrics: Mapping[str, float], ts: datetime) -> list[SimUplink]:
        """The messages for one reading: ``gateways`` good copies, or one broken one."""
        entry = self._registry[dev_eui]
        f_cnt = self._f_cnt.get(dev_eui, -1) + 1
        self._f_cnt[dev_eui] = f_cnt
        port, frame = self._frame(entry, metrics)
        topic = uplink_topic(self.fmt, self.application_id, dev_eui)
        rng = self._rng
        if self.corrupt_rate and rng.random() < self.corrupt_rate:
            kind = CORRUPTIONS[rng.randrange(len(CORRUPTIONS))]
            if kind == "decode_error":
                frame = frame[: max(1, len(frame) // 2) - 1] or b"\x01"
                if entry.codec == "cayenne_lpp":
                    frame = bytes((frame[0], 0xFE))  # a record of an unknown LPP type
            doc = self._document(dev_eui, f_cnt, port, frame, ts, [self._rx(0, ts)])
            payload = json.dumps(doc, separators=(",", ":")).encode()
            if kind == "malformed_json":
                payload = payload[: len(payload) // 2]
            elif kind == "bad_base64":
                good = base64.b64encode(frame).decode()
                payload = payload.replace(good.encode(), b"!!" + good.encode()[2:], 1)
            return [SimUplink(topic, payload, dev_eui, f_cnt, kind)]
        out = []
        for g in range(self.gateways):
            doc = self._document(dev_eui, f_cnt, port, frame, ts, [self._rx(g, ts)])
            payload = json.dumps(doc, separators=(",", ":")).encode()
            out.append(SimUplink(topic, payload, dev_eui, f_cnt))
        return out

    def _rx(self, g: int, ts: datetime) -> dict[str, Any]:
        rssi = round(-70 - 12 * g - self._rng.random() * 30)
        snr = round(10 - 4 * g - self._rng.random() * 5, 2)
        stamp = ts.isoformat().replace("+00:00", "Z")
        if self.fmt == "chirpstack":
            return {"gatewayId": self._gateway_ids[g], "rssi": rssi, "snr": snr, "nsTime": stamp}
        return {
            "gateway_ids": {"gateway_id": f"sim-gw-{g + 1}", "eui": self._gateway_ids[g]},
            "rssi": rssi,
            "channel_rssi": rssi,
            "snr": snr,
            "received_at": stamp,
        }

    def _document(
        self,
        dev_eui: str,
        f_cnt: int,
        port: int,
        frame: bytes,
        ts: datetime,
        rx: list[dict[str, Any]],
    ) -> dict[str, Any]:
        stamp = ts.isoformat().replace("+00:00", "Z")
        data = base64.b64encode(frame).decode()
        dev_addr = dev_eui[-8:]
        if self.fmt == "chirpstack":
            return {
                "time": stamp,
                "deviceInfo": {
                    "applicationId": self.application_id,
                    "applicationName": "citywatch simulator",
                    "deviceName": f"node-{dev_eui}",
                    "devEui": dev_eui,
                },
                "devAddr": dev_addr,
                "dr": 5,
                "fCnt": f_cnt,
                "fPort": port,
                "data": data,
                "rxInfo": rx,
                "txInfo": {
                    "frequency": 868100000,
                    "modulation": {
                        "lora": {"bandwidth": 125000, "spreadingFactor": 7, "codeRate": "CR_4_5"}
                    },
                },
            }
        return {
            "end_device_ids": {
                "device_id": f"eui-{dev_eui}",
                "application_ids": {"application_id": self.application_id},
                "dev_eui": dev_eui.upper(),
                "dev_addr": dev_addr.upper(),
            },
            "received_at": stamp,
            "uplink_message": {
                "f_port": port,
                "f_cnt": f_cnt,
                "frm_payload": data,
                "rx_metadata": rx,
                "settings": {
                    "data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 7}},
                    "frequency": "868100000",
                },
                "received_at": stamp,
            },
        }
