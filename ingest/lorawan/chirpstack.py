"""ChirpStack v4 integration event ``up``, parsed into an :class:`Uplink`.

MQTT topic ``application/{application_id}/device/{dev_eui}/event/up``; the
body is the protobuf JSON mapping of ``integration.UplinkEvent``: camelCase
keys, ``deviceInfo.devEui``, ``fCnt``, ``fPort``, ``data`` (base64), optional
``object`` (decoded by the device-profile codec), ``rxInfo[]`` (``gatewayId``,
``rssi``, ``snr``, ``gwTime``, ``nsTime``), ``txInfo`` (``frequency``,
``modulation.lora.spreadingFactor``/``bandwidth``) and ``time``.

ChirpStack omits fields holding their type's default, so a missing
``fCnt``/``fPort`` means 0 and a missing ``data`` an empty payload. A missing
RSSI or SNR stays None: 0 dB is a real SNR, and inventing it would put a fake
point on the link-health panel.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ingest.lorawan import fields as f
from ingest.lorawan.errors import UplinkError
from ingest.lorawan.uplink_types import GatewayRx, Uplink

__all__ = ["parse_chirpstack"]


def _rx(item: Any, path: str) -> GatewayRx:
    if not f.is_map(item):
        raise f.schema(path, f"expected an object, got {f.type_name(item)}")
    gateway_id = f.opt_str(item, "gatewayId", f"{path}.gatewayId")
    if gateway_id is None:
        raise f.schema(f"{path}.gatewayId", "missing")
    return GatewayRx(
        gateway_id=gateway_id.lower(),
        rssi=f.opt_num(item, "rssi", f"{path}.rssi"),
        snr=f.opt_num(item, "snr", f"{path}.snr"),
        time=f.opt_time(item, "gwTime", f"{path}.gwTime")
        or f.opt_time(item, "nsTime", f"{path}.nsTime"),
    )


def parse_chirpstack(doc: Mapping[str, Any], now: datetime | None = None) -> Uplink:
    """Parse a ChirpStack v4 ``up`` integration event (already JSON-decoded).

    Parameters
    ----------
    doc : mapping
        The event.
    now : datetime, optional
        The ingest moment (default: the clock): the reading's time when neither ``time`` nor any
        gateway time is set.

    Raises
    ------
    UplinkError
        ``not_uplink`` for other event types, ``schema`` or ``bad_base64``
        for malformed fields.
    """
    info = f.obj(doc, "deviceInfo", "deviceInfo", required=True)
    if "rxInfo" not in doc and "txInfo" not in doc:
        # join, status, ack, txack, log and location events share deviceInfo
        # but never carry radio metadata.
        raise UplinkError("not_uplink", "ChirpStack event without rxInfo/txInfo is not 'up'")
    dev_eui = f.opt_eui(info.get("devEui"), "deviceInfo.devEui")
    if dev_eui is None:
        raise f.schema("deviceInfo.devEui", "missing")  # every ChirpStack v4 device has one
    tx = f.obj(doc, "txInfo", "txInfo", required=False)
    modulation = f.obj(tx, "modulation", "txInfo.modulation", required=False)
    lora = f.obj(modulation, "lora", "txInfo.modulation.lora", required=False)
    rx = tuple(_rx(item, f"rxInfo[{i}]") for i, item in enumerate(f.items(doc, "rxInfo", "rxInfo")))
    received_at, source = f.resolve_time(f.opt_time(doc, "time", "time"), (r.time for r in rx), now)
    return Uplink(
        network="chirpstack",
        dev_eui=dev_eui,
        f_cnt=f.to_int(doc.get("fCnt", 0), "fCnt"),
        f_port=f.to_int(doc.get("fPort", 0), "fPort", 255),
        payload=f.payload(doc.get("data"), "data"),
        received_at=received_at,
        rx=rx,
        decoded=f.decoded(doc, "object", "object"),
        spreading_factor=f.opt_int(
            lora, "spreadingFactor", "txInfo.modulation.lora.spreadingFactor"
        ),
        bandwidth=f.opt_int(lora, "bandwidth", "txInfo.modulation.lora.bandwidth"),
        frequency=f.opt_int(tx, "frequency", "txInfo.frequency"),
        data_rate=f.opt_int(doc, "dr", "dr", 255),
        application_id=f.opt_str(info, "applicationId", "deviceInfo.applicationId"),
        device_name=f.opt_str(info, "deviceName", "deviceInfo.deviceName"),
        dev_addr=f.opt_str(doc, "devAddr", "devAddr"),
        confirmed=f.flag(doc, "confirmed", "confirmed"),
        time_source=source,  # type: ignore[arg-type]
    )
