"""Field readers shared by the ChirpStack and The Things Stack parsers.

Each helper reads one field of an already JSON-decoded message and raises
:class:`~ingest.lorawan.errors.UplinkError` (``schema`` or ``bad_base64``)
naming the field's JSON path when it is wrong. Strings and numbers that travel
on into a reading are bounded here, so nothing unstorable reaches PostgreSQL.

Time rules: both servers are Go programs, and Go's zero time
``0001-01-01T00:00:00Z`` is what The Things Stack writes for "unset" (the
storage integration and simulated uplinks do it for
``uplink_message.received_at``). Protobuf's zero ``Timestamp`` is the Unix
epoch. :func:`opt_time` returns None for both, at every level, so a caller
falls back to the next time source instead of dating a reading to year 1.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from ingest.lorawan.errors import UplinkError

U32 = (1 << 32) - 1
#: Bounds of strings and numbers copied into a reading (names, ids, RSSI, SNR).
MAX_STR = 256
MAX_NUM = 1e6
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_EUI = re.compile(r"[0-9A-Fa-f]{16}")
_B64_CHARS = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
#: "Unset" times: Go's zero time.Time and protobuf's zero Timestamp.
UNSET_TIMES = frozenset(
    {datetime(1, 1, 1, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC)},
)


def is_map(value: Any) -> bool:
    """True for a JSON object (parsed JSON is a dict; Mapping is the slow fallback)."""
    return type(value) is dict or isinstance(value, Mapping)


def schema(path: str, problem: str) -> UplinkError:
    return UplinkError("schema", f"{path}: {problem}")


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def obj(doc: Mapping[str, Any], key: str, path: str, *, required: bool) -> Mapping[str, Any]:
    value = doc.get(key)
    if value is None:
        if required:
            raise schema(path, "missing")
        return {}
    if not is_map(value):
        raise schema(path, f"expected an object, got {type_name(value)}")
    return value


def opt_str(doc: Mapping[str, Any], key: str, path: str) -> str | None:
    value = doc.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise schema(path, f"expected a string, got {type_name(value)}")
    # These strings travel on in the reading: PostgreSQL text/jsonb holds no NUL, and
    # a lone surrogate is not UTF-8 at all.
    if len(value) > MAX_STR:
        raise schema(path, f"longer than {MAX_STR} characters ({len(value)})")
    if _UNSTORABLE.search(value):
        raise schema(path, f"holds a NUL or a lone surrogate: {value!r:.60}")
    return value


def to_int(value: Any, path: str, high: int = U32) -> int:
    # Protobuf JSON writes 64-bit integers as strings ("868300000"); accept
    # both forms, but not floats or booleans, which would hide a bug upstream.
    if isinstance(value, str) and 0 < len(value) <= 20 and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise schema(path, f"expected an integer, got {type_name(value)}")
    if not 0 <= value <= high:
        raise schema(path, f"{value} is outside 0..{high}")
    return value


def opt_int(doc: Mapping[str, Any], key: str, path: str, high: int = U32) -> int | None:
    value = doc.get(key)
    return None if value is None else to_int(value, path, high)


def opt_num(doc: Mapping[str, Any], key: str, path: str) -> float | None:
    """A radio figure (RSSI, SNR): None when absent, never a made-up 0."""
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise schema(path, f"expected a number, got {type_name(value)}")
    # 1e999 parses as inf and 10**40 overflows a float: neither is a reception figure.
    if not -MAX_NUM <= value <= MAX_NUM:
        raise schema(path, f"{value!r:.40} is not a finite number within ±{MAX_NUM:g}")
    return value


def flag(doc: Mapping[str, Any], key: str, path: str) -> bool:
    value = doc.get(key, False)
    if not isinstance(value, bool):
        raise schema(path, f"expected a boolean, got {type_name(value)}")
    return value


def opt_eui(value: Any, path: str) -> str | None:
    """A DevEUI in lower case, or None when the message has none."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _EUI.fullmatch(value):
        raise schema(path, f"expected 16 hex digits, got {value!r:.40}")
    return value.lower()


def to_time(value: Any, path: str) -> datetime | None:
    """An RFC 3339 time in UTC; None for the servers' "unset" times."""
    if not isinstance(value, str):
        raise schema(path, f"expected an RFC 3339 timestamp, got {type_name(value)}")
    try:
        # Python 3.11 reads 'Z' and cuts nanoseconds to microseconds.
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise schema(path, f"not an RFC 3339 timestamp: {value!r:.60}") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise schema(path, f"timestamp has no timezone: {value!r:.60}")
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:
        raise schema(path, f"timestamp out of range: {value!r:.60}") from None
    return None if parsed in UNSET_TIMES else parsed


def opt_time(doc: Mapping[str, Any], key: str, path: str) -> datetime | None:
    value = doc.get(key)
    return None if value is None or value == "" else to_time(value, path)


def payload(value: Any, path: str) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, str):
        raise schema(path, f"expected a base64 string, got {type_name(value)}")
    # Protobuf JSON accepts standard and URL-safe alphabets, padded or not.
    if not _B64_CHARS.fullmatch(value) or len(value.rstrip("=")) % 4 == 1:
        raise UplinkError("bad_base64", f"{path}: not base64: {value!r:.60}")
    text = value.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UplinkError("bad_base64", f"{path}: {exc}") from None


def decoded(doc: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any] | None:
    value = doc.get(key)
    if value is None:
        return None
    if not is_map(value):
        raise schema(path, f"expected an object, got {type_name(value)}")
    return value


def items(doc: Mapping[str, Any], key: str, path: str) -> list[Any]:
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise schema(path, f"expected a list, got {type_name(value)}")
    return value


def resolve_time(
    message_time: datetime | None, gateway_times: Iterable[datetime | None], now: datetime | None
) -> tuple[datetime, str]:
    """The reading's time and where it came from: ``network``, ``gateway`` or ``ingest``.

    The message's own reception time first, else the earliest gateway time,
    else the ingest moment (``now``, default the clock): a reading is never
    refused, nor dated to year 1, for want of a time.
    """
    if message_time is not None:
        return message_time, "network"
    earliest = min((t for t in gateway_times if t is not None), default=None)
    if earliest is not None:
        return earliest, "gateway"
    return now or datetime.now(UTC), "ingest"
