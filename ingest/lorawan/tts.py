"""The Things Stack v3 application uplink, parsed into an :class:`Uplink`.

MQTT topic ``v3/{application_id}@{tenant_id}/devices/{device_id}/up``
(``v3/{application_id}/devices/{device_id}/up`` on single-tenant installs);
the same body comes from webhooks, Pub/Sub and the storage integration.
snake_case keys: ``end_device_ids{device_id, dev_eui, dev_addr,
application_ids{application_id}}``, ``received_at``, ``simulated``,
``uplink_message{f_port, f_cnt, frm_payload, decoded_payload, session_key_id,
rx_metadata[]{gateway_ids{gateway_id}, rssi, snr, time, received_at},
settings{data_rate{lora{spreading_factor, bandwidth}}, frequency}, received_at}``.

Identity: a device may have no DevEUI (ABP devices, simulated uplinks); it is
then known by ``end_device_ids.device_id``. A message with neither is refused.

Time: ``uplink_message.received_at`` (the Network Server's reception, closest
to the radio), else the top-level ``received_at`` (the Application Server's),
else the earliest gateway time, else the ingest moment. The zero time
``0001-01-01T00:00:00Z`` is "unset" at every level (see
:mod:`ingest.lorawan.fields`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ingest.lorawan import fields as f
from ingest.lorawan.errors import UplinkError
from ingest.lorawan.uplink_types import GatewayRx, Uplink

__all__ = ["parse_tts"]


def _rx(item: Any, path: str) -> GatewayRx:
    if not f.is_map(item):
        raise f.schema(path, f"expected an object, got {f.type_name(item)}")
    ids = f.obj(item, "gateway_ids", f"{path}.gateway_ids", required=True)
    gateway_id = f.opt_str(ids, "gateway_id", f"{path}.gateway_ids.gateway_id")
    if gateway_id is None:
        raise f.schema(f"{path}.gateway_ids.gateway_id", "missing")
    broker = f.obj(item, "packet_broker", f"{path}.packet_broker", required=False)
    forwarder = f.opt_str(
        broker, "forwarder_gateway_id", f"{path}.packet_broker.forwarder_gateway_id"
    )
    if forwarder is not None:
        # Every Packet Broker reception reports gateway_id "packetbroker";
        # without the forwarder's id they would all merge into one gateway.
        gateway_id = f"{gateway_id}/{forwarder}"
    rssi = f.opt_num(item, "rssi", f"{path}.rssi")
    if rssi is None:
        rssi = f.opt_num(item, "channel_rssi", f"{path}.channel_rssi")
    return GatewayRx(
        gateway_id=gateway_id,
        rssi=rssi,
        snr=f.opt_num(item, "snr", f"{path}.snr"),
        time=f.opt_time(item, "time", f"{path}.time")
        or f.opt_time(item, "received_at", f"{path}.received_at"),
    )


def parse_tts(doc: Mapping[str, Any], now: datetime | None = None) -> Uplink:
    """Parse a The Things Stack v3 application uplink (already JSON-decoded).

    Parameters
    ----------
    doc : mapping
        The message.
    now : datetime, optional
        The ingest moment (default: the clock): the reading's time when no valid time is set.

    Raises
    ------
    UplinkError
        ``not_uplink`` for join-accept, downlink and other messages,
        ``schema`` or ``bad_base64`` for malformed fields.
    """
    if "uplink_message" not in doc:
        raise UplinkError("not_uplink", "The Things Stack message without uplink_message")
    ids = f.obj(doc, "end_device_ids", "end_device_ids", required=True)
    app_ids = f.obj(ids, "application_ids", "end_device_ids.application_ids", required=False)
    dev_eui = f.opt_eui(ids.get("dev_eui"), "end_device_ids.dev_eui")
    device_id = f.opt_str(ids, "device_id", "end_device_ids.device_id")
    if dev_eui is None and device_id is None:
        raise f.schema("end_device_ids", "neither dev_eui nor device_id")
    up = f.obj(doc, "uplink_message", "uplink_message", required=True)
    settings = f.obj(up, "settings", "uplink_message.settings", required=False)
    data_rate = f.obj(settings, "data_rate", "uplink_message.settings.data_rate", required=False)
    lora = f.obj(data_rate, "lora", "uplink_message.settings.data_rate.lora", required=False)
    rx = tuple(
        _rx(item, f"uplink_message.rx_metadata[{i}]")
        for i, item in enumerate(f.items(up, "rx_metadata", "uplink_message.rx_metadata"))
    )
    # The Network Server's reception is closest to the radio; the top level is the
    # Application Server's.
    message_time = f.opt_time(up, "received_at", "uplink_message.received_at") or f.opt_time(
        doc, "received_at", "received_at"
    )
    received_at, source = f.resolve_time(message_time, (r.time for r in rx), now)
    return Uplink(
        network="tts",
        dev_eui=dev_eui,
        f_cnt=f.to_int(up.get("f_cnt", 0), "uplink_message.f_cnt"),
        f_port=f.to_int(up.get("f_port", 0), "uplink_message.f_port", 255),
        payload=f.payload(up.get("frm_payload"), "uplink_message.frm_payload"),
        received_at=received_at,
        rx=rx,
        decoded=f.decoded(up, "decoded_payload", "uplink_message.decoded_payload"),
        spreading_factor=f.opt_int(
            lora, "spreading_factor", "uplink_message.settings.data_rate.lora.spreading_factor"
        ),
        bandwidth=f.opt_int(lora, "bandwidth", "uplink_message.settings.data_rate.lora.bandwidth"),
        frequency=f.opt_int(settings, "frequency", "uplink_message.settings.frequency"),
        data_rate=f.opt_int(
            settings, "data_rate_index", "uplink_message.settings.data_rate_index", 255
        ),
        application_id=f.opt_str(
            app_ids, "application_id", "end_device_ids.application_ids.application_id"
        ),
        device_name=device_id,
        dev_addr=f.opt_str(ids, "dev_addr", "end_device_ids.dev_addr"),
        session_id=f.opt_str(up, "session_key_id", "uplink_message.session_key_id"),
        confirmed=f.flag(up, "confirmed", "uplink_message.confirmed"),
        simulated=f.flag(doc, "simulated", "simulated"),
        time_source=source,  # type: ignore[arg-type]
    )
