"""core.wire parses readings with orjson where it gives what json.loads gives; the
outcome of every message, hostile ones included, must be the same as json.loads'."""

from __future__ import annotations

import json
import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

import core.wire
from core.wire import _loads, decode_message


def _same(a: object, b: object) -> bool:
    # Equal values of equal types, floats bit for bit, dict keys in the same order.
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _outcome(raw: bytes) -> tuple[str, object]:
    try:
        return "ok", json.loads(raw)
    except Exception as exc:  # the reference outcome, whatever it is
        return "error", type(exc)


def _check(raw: bytes) -> None:
    # json.loads is the reference: _loads returns the same object, or raises the same.
    kind, expected = _outcome(raw)
    if kind == "ok":
        assert _same(_loads(raw), expected)
    else:
        with pytest.raises(expected):
            _loads(raw)
    assert _describe(decode_message(raw, 1 << 20)) == _describe(_without_orjson(raw))


def _without_orjson(raw: bytes) -> object:
    saved = core.wire._orjson
    core.wire._orjson = None
    try:
        return decode_message(raw, 1 << 20)
    finally:
        core.wire._orjson = saved


def _describe(result: object) -> object:
    return repr(result)  # Rejection reasons and details, or (kind, fields), exactly


HOSTILE = [
    b'{"a":1,"a":2,"b":3}',
    b'{"device_id":"d","device_id":"e","asset_id":"a","asset_type":"t","ts":"x","metrics":{}}',
    b'{"metrics":{"x":NaN}}',
    b'{"metrics":{"x":Infinity,"y":-Infinity}}',
    b'{"x":1e400}',
    b'{"x":-1e400}',
    b'{"x":123456789012345678901234567890}',
    b'{"x":18446744073709551616}',
    b'{"x":-9223372036854775809}',
    b'{"x":9223372036854775807}',
    b'{"x":' + b"9" * 5000 + b"}",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 2000 + b"1" + b"}" * 2000,
    b'{"x":"\xff\xfe"}',
    b"\xff\xfe\x00",
    b'{"x":"\\ud800"}',
    b'{"x":"\xed\xa0\x80"}',
    b'{"x":"\\ud83d\\ude00"}',
    b'\xef\xbb\xbf{"x":1}',
    '{"x":1}'.encode("utf-16"),
    '{"x":1}'.encode("utf-32-le"),
    b'{"x":"\x01"}',
    b'{"x":"\\u0000"}',
    b'{"x":1,}',
    b"{'x':1}",
    b'{"x":01}',
    b'{"x":1.}',
    b'{"x":.5}',
    b'{"x":+1}',
    b'{"x":-0}',
    b'{"x":-0.0}',
    b'{"x":4.9e-324}',
    b'{"x":1e-400}',
    b'{"x":1.7976931348623157e308}',
    b' {"x":1} ',
    b'{"x":1}\x00',
    b'{"x":1} x',
    b"[1, 2]",
    b"null",
    b'"x"',
    b"",
    b"{",
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_hostile_messages_parse_as_with_json_loads(raw: bytes) -> None:
    _check(raw)


def _json_values(leaves: hs.SearchStrategy) -> hs.SearchStrategy:
    return hs.recursive(
        leaves,
        lambda children: (
            hs.lists(children, max_size=4)
            | hs.dictionaries(hs.text(max_size=4), children, max_size=4)
        ),
        max_leaves=12,
    )


_LEAVES = (
    hs.none()
    | hs.booleans()
    | hs.integers(min_value=-(2**70), max_value=2**70)
    | hs.floats(allow_nan=True, allow_infinity=True)
    | hs.text(max_size=6)
)


@settings(max_examples=500, deadline=None)
@given(_json_values(_LEAVES), hs.booleans())
def test_random_documents_parse_as_with_json_loads(value: object, ascii_only: bool) -> None:
    _check(json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"))


@settings(max_examples=500, deadline=None)
@given(hs.from_regex(rb"\A-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,25})?([eE][-+]?[0-9]{1,3})?\Z"))
def test_numbers_parse_bit_for_bit_as_with_json_loads(number: bytes) -> None:
    _check(b'{"x":' + number + b"}")


@settings(max_examples=500, deadline=None)
@given(hs.binary(max_size=40) | hs.text(alphabet='{}[]:,"\\ u0123456789.eE+-tfnrNaI', max_size=40))
def test_arbitrary_bytes_parse_as_with_json_loads(raw: bytes | str) -> None:
    _check(raw.encode() if isinstance(raw, str) else raw)
