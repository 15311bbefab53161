"""Fuzzing: no exception but ``UplinkError`` ever escapes, and codecs never raise.

Bad input must become data (codec ``errors``) or a typed ``UplinkError`` with a
known reason, so the bridge can dead-letter it instead of crashing.
"""

from __future__ import annotations

import copy
import json
import math
import re
from datetime import UTC
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.lorawan.codecs import DecodeResult, PassthroughCodec, available_codecs, get_codec
from ingest.lorawan.errors import REASONS, UplinkError
from ingest.lorawan.uplink import Uplink, parse_uplink

FIXTURES = Path(__file__).parent / "fixtures"
UPLINK_FIXTURES = sorted(FIXTURES.glob("*_up*.json"))
CODECS = available_codecs()

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=25,
)
# Python mappings handed over directly (webhook frameworks) may hold NaN.
python_values = st.recursive(
    json_scalars | st.floats(),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=25,
)
# Values that sit near the edges of what the parsers accept.
nasty: st.SearchStrategy[Any] = st.sampled_from(
    [
        None,
        "",
        True,
        0,
        -1,
        2**32,
        2**64,
        1.5,
        "1" * 30,
        "²",
        "zz",
        "AAA",
        "A===",
        "qg==",
        "-_-_",
        "2026-13-45T00:00:00Z",
        "2026-11-24T21:00:00",
        "0001-01-01T00:00:00+14:00",
        "70B3D57ED000000G",
        [],
        {},
        [{}],
        {"lora": {}},
        {"gateway_id": 5},
    ]
)


def _check_result(result: DecodeResult) -> None:
    assert isinstance(result, DecodeResult)
    assert isinstance(result.data, dict)
    assert all(isinstance(m, str) for m in result.errors + result.warnings)


# --------------------------------------------------------------------------- codecs


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(CODECS), st.binary(max_size=64), st.integers(0, 255))
def test_no_codec_raises_on_arbitrary_bytes(name: str, data: bytes, f_port: int) -> None:
    _check_result(get_codec(name).decode(data, f_port))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(CODECS), st.integers(0, 255), st.data())
def test_no_codec_raises_on_prefixes_of_valid_frames(
    name: str, f_port: int, data: st.DataObject
) -> None:
    # Valid-looking starts reach deeper branches than random bytes do.
    valid = {
        "cayenne_lpp": bytes.fromhex("0167FFD7067104D2FB2E0000018806765FF2960A0003E8"),
        "passthrough": b'{"a": {"b": [1, "2"]}, "c": "3.5"}',
    }.get(name, bytes(range(1, 20)))
    cut = data.draw(st.integers(0, len(valid)))
    tail = data.draw(st.binary(max_size=8))
    _check_result(get_codec(name).decode(valid[:cut] + tail, f_port))


@settings(deadline=None)
@given(python_values)
def test_passthrough_never_raises_and_keeps_only_numbers(obj: Any) -> None:
    result = PassthroughCodec().decode_object(obj)
    _check_result(result)

    def numeric(value: Any) -> bool:
        if isinstance(value, dict):
            return all(numeric(v) for v in value.values())
        return (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        )

    assert numeric(result.data)


# --------------------------------------------------------------------------- uplink parsers


def _check_uplink(uplink: Uplink) -> None:
    # A device is known by its DevEUI or, without one, by its network-server id.
    assert uplink.dev_eui is None or re.fullmatch(r"[0-9a-f]{16}", uplink.dev_eui)
    assert uplink.device and uplink.device in (uplink.dev_eui, uplink.device_name)
    assert uplink.received_at.tzinfo is not None
    assert uplink.received_at.utcoffset() == UTC.utcoffset(None)
    assert uplink.received_at.year > 1970  # "unset" zero times are never a reading's time
    assert uplink.time_source in ("network", "gateway", "ingest")
    assert 0 <= uplink.f_port <= 255
    assert 0 <= uplink.f_cnt < 2**32
    assert isinstance(uplink.payload, bytes)


def _parse(raw: Any, **kwargs: Any) -> None:
    try:
        uplink = parse_uplink(raw, **kwargs)
    except UplinkError as exc:
        assert exc.reason in REASONS
        return
    _check_uplink(uplink)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape(raw: bytes) -> None:
    _parse(raw)


@settings(max_examples=300, deadline=None)
@given(json_values, st.sampled_from([None, "chirpstack", "tts"]))
def test_arbitrary_json_never_escapes(value: Any, network: Any) -> None:
    _parse(json.dumps(value).encode(), network=network)


@settings(deadline=None)
@given(python_values)
def test_arbitrary_mappings_never_escape(value: Any) -> None:
    _parse({"deviceInfo": value, "rxInfo": value, "txInfo": value, "time": value})
    _parse({"end_device_ids": value, "uplink_message": value, "received_at": value})


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(UPLINK_FIXTURES), st.data())
def test_mutated_uplinks_never_escape(path: Path, data: st.DataObject) -> None:
    doc = json.loads(path.read_text())
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            break
        target = data.draw(st.sampled_from(paths))
        parent = doc
        for step in target[:-1]:
            parent = parent[step]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[target[-1]]
        else:
            # deepcopy: sampled constants must not be mutated by later steps.
            parent[target[-1]] = copy.deepcopy(data.draw(nasty | json_values))
    _parse(json.dumps(doc).encode())
    _parse(copy.deepcopy(doc))


@settings(deadline=None)
@given(
    st.sampled_from(UPLINK_FIXTURES),
    st.text(max_size=80)
    | st.sampled_from(
        [
            "application/x/device/70b3d57ed0000001/event/up",
            "application/x/device/70b3d57ed0000001/event/join",
            "v3/city-lighting@ttn/devices/light-0042/up",
            "v3/city-lighting/devices/light-0042/up",
            "v3/other@ttn/devices/light-0042/up",
            "v3/city-lighting@ttn/devices/light-0042/down/queued",
        ]
    ),
)
def test_arbitrary_topics_never_escape(path: Path, topic: str) -> None:
    _parse(path.read_bytes(), topic=topic)
