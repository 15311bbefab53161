"""Hostile uplink payloads for the containment tests (bridge and webhook).

Each is derived from a *fresh* good frame (a frame counter never sent in good
form), so a payload that still parses can never pass for a copy of another
frame: every message sent must become exactly one reading or one dead letter.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypothesis import strategies as st

# Where a hostile string or number goes in a ChirpStack uplink.
STRING_FIELDS = [
    ("deviceInfo", "deviceName"),
    ("deviceInfo", "applicationName"),
    ("deviceInfo", "devEui"),
    ("devAddr",),
    ("time",),
    ("data",),
    ("rxInfo", 0, "gatewayId"),
    ("rxInfo", 0, "nsTime"),
]
NUMBER_FIELDS = [
    ("fCnt",),
    ("fPort",),
    ("dr",),
    ("rxInfo", 0, "rssi"),
    ("rxInfo", 0, "snr"),
    ("txInfo", "frequency"),
]
BAD_STRINGS = ["\x00", "a\x00b", "\ud800", "x\udfffy", "€\x00\ud83d", "\x00" * 300]
# JSON number texts: more digits than int() accepts, overflowing floats and ints.
BAD_NUMBERS = ["9" * 5000, "1e999", "-1e999", "1" + "0" * 400, "-" + "7" * 40, "1e-999"]
_PLACEHOLDER = "@@HOSTILE@@"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)


def _set(doc: dict[str, Any], path: tuple, value: Any) -> None:
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def mutate(kind: str, choice: Any, good: bytes) -> bytes:
    """Turn a good uplink into the hostile payload ``kind`` describes."""
    if kind == "bytes":
        return choice
    if kind == "json":
        return json.dumps(choice).encode()
    if kind == "deep":  # nested past Python's recursion limit, or just under it
        return b'{"deviceInfo": ' + b"[" * choice + b"]" * choice + b"}"
    doc = json.loads(good)
    path, value = choice
    if kind == "string":  # ensure_ascii escapes lone surrogates: valid JSON, hostile text
        _set(doc, path, value)
        return json.dumps(doc).encode()
    _set(doc, path, _PLACEHOLDER)  # number: splice the raw number text in
    return json.dumps(doc).replace(f'"{_PLACEHOLDER}"', value).encode()


hostile_kinds = st.one_of(
    st.tuples(st.just("bytes"), st.binary(max_size=300)),
    st.tuples(st.just("json"), json_values),
    st.tuples(st.just("deep"), st.integers(200, 20_000)),
    st.tuples(
        st.just("string"), st.tuples(st.sampled_from(STRING_FIELDS), st.sampled_from(BAD_STRINGS))
    ),
    st.tuples(
        st.just("number"), st.tuples(st.sampled_from(NUMBER_FIELDS), st.sampled_from(BAD_NUMBERS))
    ),
)


def check_deadletter_headers(record: Any) -> dict[str, bytes]:
    """The ingest dead-letter contract: reason, detail, stage, id, raw_size, raw_sha256."""
    headers = dict(record.headers)
    assert headers["stage"] == b"ingest"
    assert headers["reason"] and headers["detail"] and headers["deadletter_id"]
    size = int(headers["raw_size"])
    assert len(record.value or b"") <= min(size, 64 << 10)
    if len(record.value or b"") == size:  # not truncated: the hash is the value's
        assert headers["raw_sha256"].decode() == hashlib.sha256(record.value or b"").hexdigest()
    return headers


def _no_constants(name: str) -> Any:
    raise AssertionError(f"{name} is not JSON")


def assert_storable(value: bytes) -> None:
    """A reading the worker and PostgreSQL's jsonb can hold: strict JSON, no NUL, UTF-8."""
    doc = json.loads(value.decode("utf-8"), parse_constant=_no_constants)
    text = json.dumps(doc, ensure_ascii=False)
    assert "\x00" not in text
    text.encode("utf-8")  # raises on a lone surrogate
