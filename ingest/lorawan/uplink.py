"""Parse network-server uplink JSON into one normalised :class:`Uplink`.

Two formats are understood, each in its own module: ChirpStack v4
(:mod:`ingest.lorawan.chirpstack`) and The Things Stack v3
(:mod:`ingest.lorawan.tts`). This module picks the format (from the MQTT
topic, or the body's shape), checks the topic against the body, and splits
bodies that hold several uplinks (:func:`split_messages`): a JSON array, as
The Things Stack's storage integration returns, or its streamed
newline-delimited ``{"result": {...}}`` objects.

Anything unusable raises :class:`~ingest.lorawan.errors.UplinkError` with a
reason (``malformed_json``, ``schema``, ``bad_base64``, ``not_uplink``,
``topic_mismatch``, ``too_large``). Nothing else escapes.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ingest.lorawan.chirpstack import parse_chirpstack
from ingest.lorawan.errors import UplinkError
from ingest.lorawan.fields import is_map, opt_str, schema, type_name
from ingest.lorawan.tts import parse_tts
from ingest.lorawan.uplink_types import (
    MAX_MESSAGE_BYTES,
    GatewayRx,
    Network,
    TimeSource,
    TopicInfo,
    Uplink,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "GatewayRx",
    "Network",
    "TimeSource",
    "TopicInfo",
    "Uplink",
    "UplinkError",
    "parse_chirpstack",
    "parse_topic",
    "parse_tts",
    "parse_uplink",
    "split_messages",
]

_CHIRPSTACK_TOPIC = re.compile(r"application/([^/]+)/device/([^/]+)/event/([^/]+)")
_TTS_TOPIC = re.compile(r"v3/([^/@]+)(?:@([^/]+))?/devices/([^/]+)/(.+)")
#: At most this many uplinks in one body (an export of a month of one device at
#: 5-minute intervals is ~9,000); more is refused whole, with a reason.
MAX_MESSAGES = 100_000


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
    now: datetime | None = None,
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
    now : datetime, optional
        The ingest moment, the time of last resort; default: the clock.

    Returns
    -------
    Uplink

    Raises
    ------
    UplinkError
        The only exception raised for bad input; ``reason`` says why.
    """
    doc = raw if is_map(raw) else _load(raw, max_bytes)
    if isinstance(doc, list):  # split_messages takes arrays apart; these it refused
        if not doc:
            raise schema("$", "an empty array holds no uplink")
        if len(doc) > MAX_MESSAGES:
            raise schema("$", f"an array of {len(doc)} uplinks is over the limit of {MAX_MESSAGES}")
        raise schema("$", "a JSON array where one uplink was expected")
    if not is_map(doc):
        raise schema("$", f"expected a JSON object, got {type_name(doc)}")
    if len(doc) == 1 and is_map(doc.get("result")):
        doc = doc["result"]  # one line of the storage integration's stream
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
            raise schema("$", "neither a ChirpStack (deviceInfo) nor a TTS (end_device_ids) event")
    now = now if now is not None else datetime.now(UTC)
    uplink = parse_chirpstack(doc, now) if kind == "chirpstack" else parse_tts(doc, now)
    if info is not None:
        _check_topic(uplink, info)
        if info.tenant:  # only the topic names it; a downlink to the device needs it
            tenant = opt_str({"tenant": info.tenant}, "tenant", "topic tenant")
            uplink = dataclasses.replace(uplink, tenant=tenant)
    return uplink


def split_messages(
    raw: bytes | bytearray | memoryview | str, max_bytes: int = MAX_MESSAGE_BYTES
) -> list[bytes] | None:
    """The uplinks of a body that holds several, each as its own JSON bytes.

    Returns None for a body that is one message (or is not JSON at all: the
    caller's parse then says why), so the hot path of one object per message
    pays a byte check only. Recognised: a JSON array (The Things Stack's
    storage integration, ``ttn-lw-cli`` output) and newline-delimited objects
    (the storage integration's stream). Each element is re-encoded on its own
    so it can be parsed, and dead-lettered, on its own.
    """
    if len(raw) > max_bytes:
        return None
    text = bytes(raw) if isinstance(raw, memoryview | bytearray) else raw
    # A UTF-8 byte order mark (some exporters write one) must not hide the array.
    stripped = (text[3:] if text[:3] == b"\xef\xbb\xbf" else text).lstrip()
    if not stripped:
        return None
    first = stripped[:1]
    if first in (b"[", "["):
        try:
            doc = _load(text, max_bytes)
        except UplinkError:
            return None
        if not isinstance(doc, list):
            return None
        if len(doc) > MAX_MESSAGES:
            return None  # parse_uplink refuses it as one message, with a reason
        return [_dump(item).encode() for item in doc]
    if first in (b"{", "{") and (b"\n" if isinstance(text, bytes) else "\n") in stripped.rstrip():
        return _ndjson(text, max_bytes)
    return None


def _ndjson(text: bytes | str, max_bytes: int) -> list[bytes] | None:
    try:
        body = text.decode("utf-8") if isinstance(text, bytes) else text
    except UnicodeDecodeError:
        return None
    lines = [line for line in body.splitlines() if line.strip()]
    if len(lines) < 2 or len(lines) > MAX_MESSAGES:
        return None
    try:
        # One pretty-printed object spans lines: it must stay one message.
        [_load(line, max_bytes) for line in lines]
    except UplinkError:
        return None
    return [line.strip().encode("utf-8", "surrogatepass") for line in lines]


def _dump(item: Any) -> str:
    # ASCII escapes keep a lone surrogate encodable; the parser then refuses it by name.
    return json.dumps(item, ensure_ascii=True)
