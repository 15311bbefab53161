"""Send downlinks to devices through ChirpStack v4 or The Things Stack v3.

Both servers take a downlink over MQTT, in their own documented formats:

ChirpStack v4 (``chirpstack-docs`` ``src/chirpstack/integrations/mqtt.md``,
"Scheduling a downlink")
    topic ``application/{application_id}/device/{dev_eui}/command/down``, body
    ``{"devEui", "confirmed", "fPort", "data"}`` with ``data`` base64 (or an
    ``object`` for the device profile's own encoder instead of ``data``). The
    DevEUI must match the topic's.
The Things Stack v3 (``lorawan-stack-docs``
``doc/content/integrations/other-integrations/mqtt/_index.md``, "Publishing
Downlink Traffic")
    topic ``v3/{application_id}@{tenant_id}/devices/{device_id}/down/push``
    (``v3/{application_id}/...`` on Open Source), body ``{"downlinks":
    [{"f_port", "frm_payload", "priority", "confirmed"}]}`` with
    ``frm_payload`` base64 and ``f_port`` 1..233; its MQTT server takes QoS 0
    only. The same body goes to the webhook API
    (``doc/content/integrations/webhooks/scheduling-downlinks.md``):
    ``POST /api/v3/as/applications/{app}/webhooks/{webhook}/devices/{device}/down/push``
    with ``Authorization: Bearer <API key>``.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr

from ingest.lorawan.codecs.downlink import EncodedDownlink
from ingest.lorawan.mqtt_conn import parse_mqtt_url

__all__ = [
    "PRIORITIES",
    "DownlinkPublisher",
    "DownlinkTarget",
    "chirpstack_downlink",
    "tts_downlink",
    "tts_webhook_push",
]

log = logging.getLogger(__name__)

#: The Things Stack's downlink priorities, lowest first (its default is LOWEST).
PRIORITIES = ("LOWEST", "LOW", "BELOW_NORMAL", "NORMAL", "ABOVE_NORMAL", "HIGH", "HIGHEST")


@dataclass(frozen=True)
class DownlinkTarget:
    """Where a device is addressed, as learnt from its uplinks (``readings.source``).

    ``device_id`` is The Things Stack's own device id; ``tenant`` is None on
    single-tenant (Open Source) installations.
    """

    network: Literal["chirpstack", "tts"]
    application_id: str
    dev_eui: str | None = None
    device_id: str | None = None
    tenant: str | None = None

    @classmethod
    def from_source(cls, device: str, source: dict[str, Any]) -> DownlinkTarget | None:
        """From a reading's ``source``; None when it lacks what the network needs."""
        network, app = source.get("network"), source.get("application_id")
        if network == "chirpstack" and app and len(device) == 16:
            return cls("chirpstack", app, dev_eui=device)
        if network == "tts" and app and source.get("ns_device_id"):
            return cls("tts", app, device_id=source["ns_device_id"], tenant=source.get("tenant"))
        return None


def chirpstack_downlink(
    target: DownlinkTarget, encoded: EncodedDownlink, *, confirmed: bool = False
) -> tuple[str, bytes]:
    """``(topic, body)`` of a ChirpStack v4 downlink command."""
    if target.dev_eui is None:
        raise ValueError("a ChirpStack downlink needs the device's DevEUI")
    topic = f"application/{target.application_id}/device/{target.dev_eui}/command/down"
    body = {
        "devEui": target.dev_eui,
        "confirmed": confirmed,
        "fPort": encoded.f_port,
        "data": base64.b64encode(encoded.payload).decode(),
    }
    return topic, json.dumps(body).encode()


def _tts_body(encoded: EncodedDownlink, confirmed: bool, priority: str) -> bytes:
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {PRIORITIES}")
    item = {
        "f_port": encoded.f_port,
        "frm_payload": base64.b64encode(encoded.payload).decode(),
        "priority": priority,
        "confirmed": confirmed,
    }
    return json.dumps({"downlinks": [item]}).encode()


def tts_downlink(
    target: DownlinkTarget,
    encoded: EncodedDownlink,
    *,
    confirmed: bool = False,
    priority: str = "NORMAL",
) -> tuple[str, bytes]:
    """``(topic, body)`` of a The Things Stack v3 downlink queue push."""
    if target.device_id is None:
        raise ValueError("a The Things Stack downlink needs its device id")
    app = f"{target.application_id}@{target.tenant}" if target.tenant else target.application_id
    return f"v3/{app}/devices/{target.device_id}/down/push", _tts_body(encoded, confirmed, priority)


def tts_webhook_push(
    base_url: str,
    webhook_id: str,
    api_key: SecretStr,
    target: DownlinkTarget,
    encoded: EncodedDownlink,
    *,
    confirmed: bool = False,
    priority: str = "NORMAL",
    client: Any = None,
) -> int:
    """Push a downlink through The Things Stack's webhook API; returns the HTTP status.

    ``client`` is an ``httpx.Client`` (one is made when None). The API key is
    sent only in the ``Authorization`` header and never logged.
    """
    import httpx

    url = (
        f"{base_url.rstrip('/')}/api/v3/as/applications/{target.application_id}"
        f"/webhooks/{webhook_id}/devices/{target.device_id}/down/push"
    )
    headers = {
        "Authorization": f"Bearer {api_key.get_secret_value()}",
        "Content-Type": "application/json",
        "User-Agent": "citywatch-downlinks/1",  # the docs ask integrations to name themselves
    }
    body = _tts_body(encoded, confirmed, priority)
    owned = client is None
    client = client or httpx.Client(timeout=10)
    try:
        response = client.post(url, content=body, headers=headers)
    finally:
        if owned:
            client.close()
    if response.status_code >= 300:
        log.warning("TTS webhook downlink to %s: HTTP %d", target.device_id, response.status_code)
    return response.status_code


class DownlinkPublisher:
    """Publish downlinks to the network server's MQTT broker.

    ChirpStack messages go with QoS 1; The Things Stack's MQTT server takes QoS 0
    only (its docs), so those go with QoS 0.
    """

    def __init__(self, url: str, *, client_id: str = "") -> None:
        target = parse_mqtt_url(url)
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
        )
        target.configure(self._client)
        self._client.connect(target.host, target.port)
        self._client.loop_start()
        self.sent = 0

    def publish(self, network: str, topic: str, body: bytes, timeout_s: float = 10.0) -> bool:
        """Publish one downlink; True once the broker has it (QoS 1) or it left (QoS 0)."""
        info = self._client.publish(topic, body, qos=1 if network == "chirpstack" else 0)
        info.wait_for_publish(timeout_s)
        ok = info.rc == mqtt.MQTT_ERR_SUCCESS and info.is_published()
        self.sent += ok
        return ok

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
