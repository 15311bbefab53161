"""Parse network-server uplink JSON into one normalised :class:`Uplink`.

Two formats are understood:

ChirpStack v4, integration event ``up``
    MQTT topic ``application/{application_id}/device/{dev_eui}/event/up``.
    Protobuf JSON mapping of ``integration.UplinkEvent``: camelCase keys,
    ``deviceInfo.devEui``, ``fCnt``, ``fPort``, ``data`` (base64), optional
    ``object`` (decoded by the device-profile codec), ``rxInfo[]``
    (``gatewayId``, ``rssi``, ``snr``, ``nsTime``, ...), ``txInfo``
    (``frequency``, ``modulation.lora.spreadingFactor``/``bandwidth``), ``time``.

The Things Stack v3, application uplink
    MQTT topic ``v3/{application_id}@{tenant_id}/devices/{device_id}/up``
    (``v3/{application_id}/devices/{device_id}/up`` on single-tenant installs).
    snake_case keys: ``end_device_ids{device_id, dev_eui, dev_addr,
    application_ids{application_id}}``, ``received_at``,
    ``uplink_message{f_port, f_cnt, frm_payload, decoded_payload,
    session_key_id, rx_metadata[]{gateway_ids{gateway_id}, rssi, snr, ...},
    settings{data_rate{lora{spreading_factor, bandwidth}}, frequency}, received_at}``.

Both servers omit fields that hold their type's default (``0``, ``""``,
``false``), so a missing ``fCnt``/``f_cnt`` or ``fPort``/``f_port`` means 0 and a
missing ``data``/``frm_payload`` means an empty payload. A missing SNR on a LoRa
frame is restored as 0 dB for the same reason; a missing RSSI stays unknown
(``None``) because 0 dBm is not a plausible LoRa reception and would otherwise
win "best RSSI".

Anything unusable raises :class:`~ingest.lorawan.errors.UplinkError` with a
reason (``malformed_json``, ``schema``, ``bad_base64``, ``not_uplink``,
``topic_mismatch``, ``too_large``). Nothing else escapes.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from ingest.lorawan.errors import UplinkError

__all__ = [
    "MAX_MESSAGE_BYTES",
    "GatewayRx",
    "Network",
    "TopicInfo",
    "Uplink",
    "UplinkError",
    "parse_chirpstack",
    "parse_topic",
    "parse_tts",
    "parse_uplink",
]

Network = Literal["chirpstack", "tts"]

#: Larger messages are refused before parsing (``too_large``). A LoRaWAN payload
#: is at most 242 bytes and a real uplink JSON a few KB (about 0.4 KB per
#: gateway in ``rxInfo``), so 64 KiB leaves room for ~150 gateways.
MAX_MESSAGE_BYTES = 64 << 10

_U32 = (1 << 32) - 1
#: Bounds of strings and numbers copied into a reading (names, ids, RSSI, SNR).
_MAX_STR = 256
_MAX_NUM = 1e6
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_EUI = re.compile(r"[0-9A-Fa-f]{16}")
_B64_CHARS = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_CHIRPSTACK_TOPIC = re.compile(r"application/([^/]+)/device/([^/]+)/event/([^/]+)")
_TTS_TOPIC = re.compile(r"v3/([^/@]+)(?:@([^/]+))?/devices/([^/]+)/(.+)")


@dataclass(frozen=True)
class GatewayRx:
    """One gateway's reception of a frame.

    Parameters
    ----------
    gateway_id : str
        Gateway id as the network server names it. For The Things Stack
        frames relayed by Packet Broker it is ``packetbroker/<forwarder id>``
        so different forwarding gateways stay distinct.
    rssi : float or None
        Received signal strength in dBm; None when not reported.
    snr : float or None
        LoRa signal-to-noise ratio in dB; None when not reported (non-LoRa).
    time : datetime or None
        Gateway (or network-server) reception time, timezone-aware.
    """

    gateway_id: str
    rssi: float | None = None
    snr: float | None = None
    time: datetime | None = None


@dataclass(frozen=True)
class Uplink:
    """A network-server uplink, normalised across ChirpStack and The Things Stack.

    Parameters
    ----------
    network : {"chirpstack", "tts"}
        Which network server produced it.
    dev_eui : str
        Device EUI, 16 lower-case hex digits.
    f_cnt, f_port : int
        Uplink frame counter and frame port.
    payload : bytes
        Decrypted FRMPayload (empty when the frame carried none).
    received_at : datetime
        Network-server reception time, timezone-aware UTC.
    rx : tuple of GatewayRx
        Every gateway that heard the frame.
    decoded : mapping or None
        The object the network server's own codec produced, if any.
    spreading_factor, bandwidth, frequency, data_rate : int or None
        Radio settings: LoRa SF, bandwidth (Hz), frequency (Hz), DR index.
    application_id, device_name : str or None
        Network-server identifiers (``device_name`` is TTS's ``device_id``).
    dev_addr, session_id : str or None
        Session identity: the DevAddr, and TTS's ``session_key_id``. Both
        change on a rejoin, which tells a counter reset from a duplicate.
    confirmed, simulated : bool
        Confirmed uplink; injected by the TTS console/simulator.
    copies : int
        Network-server events merged into this one by the deduplicator.
    """

    network: Network
    dev_eui: str
    f_cnt: int
    f_port: int
    payload: bytes
    received_at: datetime
    rx: tuple[GatewayRx, ...] = ()
    decoded: Mapping[str, Any] | None = None
    spreading_factor: int | None = None
    bandwidth: int | None = None
    frequency: int | None = None
    data_rate: int | None = None
    application_id: str | None = None
    device_name: str | None = None
    dev_addr: str | None = None
    session_id: str | None = None
    confirmed: bool = False
    simulated: bool = False
    copies: int = 1

    @property
    def gateway_ids(self) -> tuple[str, ...]:
        """Distinct gateway ids, in reception order."""
        return tuple(dict.fromkeys(rx.gateway_id for rx in self.rx))

    @property
    def gateway_count(self) -> int:
        """Number of distinct gateways that heard the frame."""
        return len(self.gateway_ids)

    @property
    def best_rssi(self) -> float | None:
        """Highest RSSI over all gateways (dBm), or None."""
        values = [rx.rssi for rx in self.rx if rx.rssi is not None]
        return max(values) if values else None

    @property
    def best_snr(self) -> float | None:
        """Highest SNR over all gateways (dB), or None.

        It may come from a different gateway than :attr:`best_rssi`.
        """
        values = [rx.snr for rx in self.rx if rx.snr is not None]
        return max(values) if values else None


@dataclass(frozen=True)
class TopicInfo:
    """What an MQTT topic says about the message it carries."""

    network: Network
    application_id: str
    device: str  # DevEUI for ChirpStack, device_id for The Things Stack
    event: str
    tenant: str | None = None


def parse_topic(topic: str) -> TopicInfo | None:
    """Recognise a ChirpStack v4 or The Things Stack v3 device-event topic.

    Returns
    -------
    TopicInfo or None
        None for any other topic.

    Examples
    --------
    >>> parse_topic("v3/city@ttn/devices/pump-7/up").event
    'up'
    """
    match = _CHIRPSTACK_TOPIC.fullmatch(topic)
    if match:
        return TopicInfo("chirpstack", match[1], match[2], match[3])
    match = _TTS_TOPIC.fullmatch(topic)
    if match:
        return TopicInfo("tts", match[1], match[3], match[4], tenant=match[2])
    return None


# --------------------------------------------------------------------------- field helpers


def _is_map(value: Any) -> bool:
    # Parsed JSON is always a dict; the abstract Mapping check is the slow fallback.
    return type(value) is dict or isinstance(value, Mapping)


def _schema(path: str, problem: str) -> UplinkError:
    return UplinkError("schema", f"{path}: {problem}")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _obj(doc: Mapping[str, Any], key: str, path: str, *, required: bool) -> Mapping[str, Any]:
    value = doc.get(key)
    if value is None:
        if required:
            raise _schema(path, "missing")
        return {}
    if not _is_map(value):
        raise _schema(path, f"expected an object, got {_type_name(value)}")
    return value


def _opt_str(doc: Mapping[str, Any], key: str, path: str) -> str | None:
    value = doc.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _schema(path, f"expected a string, got {_type_name(value)}")
    # These strings travel on in the reading: PostgreSQL text/jsonb holds no NUL, and
    # a lone surrogate is not UTF-8 at all.
    if len(value) > _MAX_STR:
        raise _schema(path, f"longer than {_MAX_STR} characters ({len(value)})")
    if _UNSTORABLE.search(value):
        raise _schema(path, f"holds a NUL or a lone surrogate: {value!r:.60}")
    return value


def _int(value: Any, path: str, high: int = _U32) -> int:
    # Protobuf JSON writes 64-bit integers as strings ("868300000"); accept
    # both forms, but not floats or booleans, which would hide a bug upstream.
    if isinstance(value, str) and 0 < len(value) <= 20 and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _schema(path, f"expected an integer, got {_type_name(value)}")
    if not 0 <= value <= high:
        raise _schema(path, f"{value} is outside 0..{high}")
    return value


def _opt_int(doc: Mapping[str, Any], key: str, path: str, high: int = _U32) -> int | None:
    value = doc.get(key)
    return None if value is None else _int(value, path, high)


def _opt_num(doc: Mapping[str, Any], key: str, path: str) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _schema(path, f"expected a number, got {_type_name(value)}")
    # 1e999 parses as inf and 10**40 overflows a float: neither is a reception figure.
    if not -_MAX_NUM <= value <= _MAX_NUM:
        raise _schema(path, f"{value!r:.40} is not a finite number within ±{_MAX_NUM:g}")
    return value


def _bool(doc: Mapping[str, Any], key: str, path: str) -> bool:
    value = doc.get(key, False)
    if not isinstance(value, bool):
        raise _schema(path, f"expected a boolean, got {_type_name(value)}")
    return value


def _eui(value: Any, path: str) -> str:
    if value is None:
        raise _schema(path, "missing")
    if not isinstance(value, str) or not _EUI.fullmatch(value):
        raise _schema(path, f"expected 16 hex digits, got {value!r:.40}")
    return value.lower()


def _time(value: Any, path: str) -> datetime:
    if not isinstance(value, str):
        raise _schema(path, f"expected an RFC 3339 timestamp, got {_type_name(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _schema(path, f"not an RFC 3339 timestamp: {value!r:.60}") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise _schema(path, f"timestamp has no timezone: {value!r:.60}")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise _schema(path, f"timestamp out of range: {value!r:.60}") from None


def _opt_time(doc: Mapping[str, Any], key: str, path: str) -> datetime | None:
    value = doc.get(key)
    return None if value is None else _time(value, path)


def _payload(value: Any, path: str) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, str):
        raise _schema(path, f"expected a base64 string, got {_type_name(value)}")
    # Protobuf JSON accepts standard and URL-safe alphabets, padded or not.
    if not _B64_CHARS.fullmatch(value) or len(value.rstrip("=")) % 4 == 1:
        raise UplinkError("bad_base64", f"{path}: not base64: {value!r:.60}")
    text = value.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UplinkError("bad_base64", f"{path}: {exc}") from None


def _decoded(doc: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any] | None:
    value = doc.get(key)
    if value is None:
        return None
    if not _is_map(value):
        raise _schema(path, f"expected an object, got {_type_name(value)}")
    return value


def _list(doc: Mapping[str, Any], key: str, path: str) -> list[Any]:
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _schema(path, f"expected a list, got {_type_name(value)}")
    return value


# --------------------------------------------------------------------------- ChirpStack v4


def _chirpstack_rx(item: Any, path: str, lora: bool) -> GatewayRx:
    if not _is_map(item):
        raise _schema(path, f"expected an object, got {_type_name(item)}")
    gateway_id = _opt_str(item, "gatewayId", f"{path}.gatewayId")
    if gateway_id is None:
        raise _schema(f"{path}.gatewayId", "missing")
    snr = _opt_num(item, "snr", f"{path}.snr")
    return GatewayRx(
        gateway_id=gateway_id.lower(),
        rssi=_opt_num(item, "rssi", f"{path}.rssi"),
        snr=0.0 if snr is None and lora else snr,
        time=_opt_time(item, "gwTime", f"{path}.gwTime")
        or _opt_time(item, "nsTime", f"{path}.nsTime"),
    )


def parse_chirpstack(doc: Mapping[str, Any]) -> Uplink:
    """Parse a ChirpStack v4 ``up`` integration event (already JSON-decoded).

    Raises
    ------
    UplinkError
        ``not_uplink`` for other event types, ``schema`` or ``bad_base64``
        for malformed fields.
    """
    info = _obj(doc, "deviceInfo", "deviceInfo", required=True)
    if "rxInfo" not in doc and "txInfo" not in doc:
        # join, status, ack, txack, log and location events share deviceInfo
        # but never carry radio metadata.
        raise UplinkError("not_uplink", "ChirpStack event without rxInfo/txInfo is not 'up'")
    tx = _obj(doc, "txInfo", "txInfo", required=False)
    modulation = _obj(tx, "modulation", "txInfo.modulation", required=False)
    lora = _obj(modulation, "lora", "txInfo.modulation.lora", required=False)
    is_lora = "lora" in modulation or not modulation
    rx = tuple(
        _chirpstack_rx(item, f"rxInfo[{i}]", is_lora)
        for i, item in enumerate(_list(doc, "rxInfo", "rxInfo"))
    )
    received_at = _opt_time(doc, "time", "time")
    if received_at is None:
        # `time` is always set by ChirpStack; fall back to the NS/gateway
        # reception times rather than inventing one.
        received_at = min((r.time for r in rx if r.time is not None), default=None)
        if received_at is None:
            raise _schema("time", "missing, and no rxInfo timestamp to fall back on")
    return Uplink(
        network="chirpstack",
        dev_eui=_eui(info.get("devEui"), "deviceInfo.devEui"),
        f_cnt=_int(doc.get("fCnt", 0), "fCnt"),
        f_port=_int(doc.get("fPort", 0), "fPort", 255),
        payload=_payload(doc.get("data"), "data"),
        received_at=received_at,
        rx=rx,
        decoded=_decoded(doc, "object", "object"),
        spreading_factor=_opt_int(
            lora, "spreadingFactor", "txInfo.modulation.lora.spreadingFactor"
        ),
        bandwidth=_opt_int(lora, "bandwidth", "txInfo.modulation.lora.bandwidth"),
        frequency=_opt_int(tx, "frequency", "txInfo.frequency"),
        data_rate=_opt_int(doc, "dr", "dr", 255),
        application_id=_opt_str(info, "applicationId", "deviceInfo.applicationId"),
        device_name=_opt_str(info, "deviceName", "deviceInfo.deviceName"),
        dev_addr=_opt_str(doc, "devAddr", "devAddr"),
        confirmed=_bool(doc, "confirmed", "confirmed"),
    )


# --------------------------------------------------------------------------- The Things Stack v3


def _tts_rx(item: Any, path: str, lora: bool) -> GatewayRx:
    if not _is_map(item):
        raise _schema(path, f"expected an object, got {_type_name(item)}")
    ids = _obj(item, "gateway_ids", f"{path}.gateway_ids", required=True)
    gateway_id = _opt_str(ids, "gateway_id", f"{path}.gateway_ids.gateway_id")
    if gateway_id is None:
        raise _schema(f"{path}.gateway_ids.gateway_id", "missing")
    broker = _obj(item, "packet_broker", f"{path}.packet_broker", required=False)
    forwarder = _opt_str(
        broker, "forwarder_gateway_id", f"{path}.packet_broker.forwarder_gateway_id"
    )
    if forwarder is not None:
        # Every Packet Broker reception reports gateway_id "packetbroker";
        # without the forwarder's id they would all merge into one gateway.
        gateway_id = f"{gateway_id}/{forwarder}"
    rssi = _opt_num(item, "rssi", f"{path}.rssi")
    if rssi is None:
        rssi = _opt_num(item, "channel_rssi", f"{path}.channel_rssi")
    snr = _opt_num(item, "snr", f"{path}.snr")
    return GatewayRx(
        gateway_id=gateway_id,
        rssi=rssi,
        snr=0.0 if snr is None and lora else snr,
        time=_opt_time(item, "time", f"{path}.time")
        or _opt_time(item, "received_at", f"{path}.received_at"),
    )


def parse_tts(doc: Mapping[str, Any]) -> Uplink:
    """Parse a The Things Stack v3 application uplink (already JSON-decoded).

    Raises
    ------
    UplinkError
        ``not_uplink`` for join-accept, downlink and other messages,
        ``schema`` or ``bad_base64`` for malformed fields.
    """
    if "uplink_message" not in doc:
        raise UplinkError("not_uplink", "The Things Stack message without uplink_message")
    ids = _obj(doc, "end_device_ids", "end_device_ids", required=True)
    app_ids = _obj(ids, "application_ids", "end_device_ids.application_ids", required=False)
    up = _obj(doc, "uplink_message", "uplink_message", required=True)
    settings = _obj(up, "settings", "uplink_message.settings", required=False)
    data_rate = _obj(settings, "data_rate", "uplink_message.settings.data_rate", required=False)
    lora = _obj(data_rate, "lora", "uplink_message.settings.data_rate.lora", required=False)
    is_lora = "lora" in data_rate or not data_rate
    rx = tuple(
        _tts_rx(item, f"uplink_message.rx_metadata[{i}]", is_lora)
        for i, item in enumerate(_list(up, "rx_metadata", "uplink_message.rx_metadata"))
    )
    # The Network Server's reception time is closest to the radio; the
    # top-level received_at is when the Application Server got it.
    received_at = _opt_time(up, "received_at", "uplink_message.received_at") or _opt_time(
        doc, "received_at", "received_at"
    )
    if received_at is None:
        raise _schema("received_at", "missing")
    return Uplink(
        network="tts",
        dev_eui=_eui(ids.get("dev_eui"), "end_device_ids.dev_eui"),
        f_cnt=_int(up.get("f_cnt", 0), "uplink_message.f_cnt"),
        f_port=_int(up.get("f_port", 0), "uplink_message.f_port", 255),
        payload=_payload(up.get("frm_payload"), "uplink_message.frm_payload"),
        received_at=received_at,
        rx=rx,
        decoded=_decoded(up, "decoded_payload", "uplink_message.decoded_payload"),
        spreading_factor=_opt_int(
            lora, "spreading_factor", "uplink_message.settings.data_rate.lora.spreading_factor"
        ),
        bandwidth=_opt_int(lora, "bandwidth", "uplink_message.settings.data_rate.lora.bandwidth"),
        frequency=_opt_int(settings, "frequency", "uplink_message.settings.frequency"),
        data_rate=_opt_int(
            settings, "data_rate_index", "uplink_message.settings.data_rate_index", 255
        ),
        application_id=_opt_str(
            app_ids, "application_id", "end_device_ids.application_ids.application_id"
        ),
        device_name=_opt_str(ids, "device_id", "end_device_ids.device_id"),
        dev_addr=_opt_str(ids, "dev_addr", "end_device_ids.dev_addr"),
        session_id=_opt_str(up, "session_key_id", "uplink_message.session_key_id"),
        confirmed=_bool(up, "confirmed", "uplink_message.confirmed"),
        simulated=_bool(doc, "simulated", "simulated"),
    )


# --------------------------------------------------------------------------- entry point


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# NaN/Infinity are not JSON; refuse them here rather than let them reach a metric.
# One decoder for all calls: json.loads builds a new one whenever an option is given.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _load(raw: bytes | bytearray | memoryview | str, max_bytes: int = MAX_MESSAGE_BYTES) -> Any:
    size = len(raw)  # characters for str: a bound, and never fails on odd code points
    if size > max_bytes:
        raise UplinkError("too_large", f"{size} bytes > {max_bytes}")
    if isinstance(raw, memoryview | bytearray):
        raw = bytes(raw)
    try:
        if isinstance(raw, bytes):
            # What json.loads does for bytes, minus building a decoder per call.
            raw = raw.decode(json.detect_encoding(raw), "surrogatepass")
        return _DECODER.decode(raw)
    except RecursionError:
        raise UplinkError("malformed_json", "nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UplinkError("malformed_json", str(exc)[:200]) from None


def _check_topic(uplink: Uplink, topic: TopicInfo) -> None:
    if topic.event != "up":
        raise UplinkError("not_uplink", f"topic event {topic.event!r} is not 'up'")
    device = uplink.dev_eui if topic.network == "chirpstack" else uplink.device_name
    if device is not None and topic.device.lower() != device.lower():
        raise UplinkError("topic_mismatch", f"topic device {topic.device!r} != payload {device!r}")
    if uplink.application_id is not None and topic.application_id != uplink.application_id:
        raise UplinkError(
            "topic_mismatch",
            f"topic application {topic.application_id!r} != payload {uplink.application_id!r}",
        )


def parse_uplink(
    raw: bytes | bytearray | memoryview | str | Mapping[str, Any],
    *,
    topic: str | None = None,
    network: Network | None = None,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> Uplink:
    """Parse one uplink message from ChirpStack v4 or The Things Stack v3.

    Parameters
    ----------
    raw : bytes, str or mapping
        The MQTT/webhook body, or an already-decoded JSON object.
    topic : str, optional
        The MQTT topic. When given it selects the format, must be an ``up``
        event, and must name the same device and application as the body.
    network : {"chirpstack", "tts"}, optional
        Force the format; otherwise it comes from the topic or the body's shape
        (``deviceInfo`` means ChirpStack, ``end_device_ids`` The Things Stack).
    max_bytes : int
        Larger messages are refused unparsed (``too_large``).

    Returns
    -------
    Uplink

    Raises
    ------
    UplinkError
        The only exception raised for bad input; ``reason`` says why.
    """
    doc = raw if _is_map(raw) else _load(raw, max_bytes)
    if not _is_map(doc):
        raise _schema("$", f"expected a JSON object, got {_type_name(doc)}")
    info = parse_topic(topic) if topic is not None else None
    if topic is not None and info is None:
        raise UplinkError("not_uplink", f"not a device event topic: {topic!r:.120}")
    kind = network or (info.network if info else None)
    if kind is None:
        if "deviceInfo" in doc:
            kind = "chirpstack"
        elif "end_device_ids" in doc:
            kind = "tts"
        else:
            raise _schema("$", "neither a ChirpStack (deviceInfo) nor a TTS (end_device_ids) event")
    uplink = parse_chirpstack(doc) if kind == "chirpstack" else parse_tts(doc)
    if info is not None:
        _check_topic(uplink, info)
    return uplink
