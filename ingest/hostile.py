"""Hostile input for the ``readings`` topic: a catalogue of classes, each with its reasons.

Each :class:`HostileClass` turns a valid template reading of a registered
device into message values an attacker, a broken node or a buggy bridge could
send. Every message states the outcomes it may have: a dead-letter reason of
the worker's closed vocabulary, or :data:`STORED` when the message is valid
after all (a maintenance event, a reading with a None key). Where the
vocabulary allows two readings of one fault (a NUL inside ``device_id`` is
both ``bad_text`` and an unknown device), both are accepted.

The test suite (``tests/streams/test_worker_hostile.py``) and ``citywatch
bench faults`` both use it; it needs only a seeded :class:`random.Random`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from core.assets import ASSET_TYPES

__all__ = [
    "BY_NAME",
    "CLASSES",
    "STORED",
    "Hostile",
    "HostileClass",
    "Template",
    "good_value",
    "make_devices",
]

#: The outcome of a message that is valid after all: a reading or maintenance row.
STORED = "stored"

# Just under the 1 MB the broker accepts: the message must reach the worker.
NEAR_LIMIT_BYTES = 900_000


@dataclass(frozen=True, slots=True)
class Template:
    """A valid reading of a registered device; each variant ``k`` gets ts + k seconds,
    so two hostile messages that turn out valid never collide as duplicates."""

    device_id: str
    asset_id: str
    asset_type: str
    ts: datetime
    metrics: dict[str, float]

    @property
    def key(self) -> bytes:
        return self.device_id.encode()

    def doc(self, k: int = 0, **changes: Any) -> dict[str, Any]:
        doc = {
            "device_id": self.device_id,
            "asset_id": self.asset_id,
            "asset_type": self.asset_type,
            "ts": (self.ts + timedelta(seconds=k)).isoformat(),
            "metrics": dict(self.metrics),
            "source": {"kind": "hostile", "variant": k},
        }
        doc.update(changes)
        return doc


@dataclass(frozen=True, slots=True)
class Hostile:
    """One message to send, and the outcomes it may have."""

    key: bytes | None
    value: bytes | None
    expected: frozenset[str]
    note: str = ""


Maker = Callable[[random.Random, Template, datetime], list[Hostile]]


@dataclass(frozen=True)
class HostileClass:
    name: str
    description: str
    make: Maker

    def reasons(self, rng: random.Random, t: Template, now: datetime) -> frozenset[str]:
        """Every outcome its messages may have."""
        return frozenset().union(*(h.expected for h in self.make(rng, t, now)))


def make_devices(tag: str, n: int = 4) -> list[dict[str, Any]]:
    """``n`` registry rows (one asset type each in turn) whose ids start with ``tag``."""
    types = list(ASSET_TYPES)
    return [
        {
            "device_id": f"{tag}{i:04x}",
            "asset_id": f"{tag}-asset-{i}",
            "asset_type": types[i % len(types)],
            "lat": 52.37,
            "lon": 4.89,
            "installed_at": datetime(2020, 1, 1, tzinfo=UTC),
            "codec": "hostile",
        }
        for i in range(n)
    ]


def good_value(rng: random.Random, asset_type: str) -> dict[str, float]:
    """Plausible metrics: the middle half of each metric's physical range."""
    out = {}
    for spec in ASSET_TYPES[asset_type].metrics:
        span = spec.high - spec.low
        out[spec.name] = round(rng.uniform(spec.low + span / 4, spec.high - span / 4), 4)
    return out


def _dumps(doc: Any) -> bytes:
    # ensure_ascii keeps lone surrogates as \\ud800 escapes: valid UTF-8 on the wire.
    return json.dumps(doc, separators=(",", ":"), allow_nan=True).encode()


def _h(t: Template, value: bytes | None, *expected: str, note: str = "", key=...) -> Hostile:
    return Hostile(t.key if key is ... else key, value, frozenset(expected), note)


def _nested(depth: int, inner: str = "1", kind: str = "list") -> str:
    if kind == "list":
        return "[" * depth + inner + "]" * depth
    return '{"a":' * depth + inner + "}" * depth


def _metric(rng: random.Random, t: Template) -> str:
    return rng.choice(sorted(t.metrics))


def _with_raw(t: Template, k: int, field_name: str, raw_json: str) -> bytes:
    """A document whose ``field_name`` is replaced by literal JSON text (not re-encoded)."""
    marker = "__RAW_FIELD__"
    text = json.dumps(t.doc(k, **{field_name: marker}), separators=(",", ":"))
    return text.replace(json.dumps(marker), raw_json).encode()


def _with_raw_metric(t: Template, k: int, name: str, raw_json: str) -> bytes:
    marker = "__RAW_METRIC__"
    text = json.dumps(t.doc(k, metrics={**t.metrics, name: marker}), separators=(",", ":"))
    return text.replace(json.dumps(marker), raw_json).encode()


# -- the classes ---------------------------------------------------------------


def bad_characters(char: str, raw: bytes) -> Maker:
    """``char`` (NUL or a lone surrogate) in every string a reading carries."""

    def make(rng: random.Random, t: Template, now: datetime) -> list[Hostile]:
        word = "ab" + char + "cd"
        m = _metric(rng, t)
        return [
            _h(t, _dumps(t.doc(0, source={"note": word})), "bad_text", note="source value"),
            _h(t, _dumps(t.doc(1, source={word: 1})), "bad_text", note="source key"),
            _h(t, _dumps(t.doc(2, source={"a": [{"b": word}]})), "bad_text", note="nested"),
            _h(t, _dumps(t.doc(3, device_id=t.device_id + char)), "bad_text", "unknown_device"),
            _h(t, _dumps(t.doc(4, asset_id=t.asset_id + char)), "bad_text", "asset_mismatch"),
            _h(t, _dumps(t.doc(5, asset_type=word)), "bad_text", "unknown_asset_type"),
            _h(
                t,
                _dumps(t.doc(6, metrics={**t.metrics, m + char: 1.0})),
                "bad_text",
                "unknown_metric",
            ),
            _h(t, _dumps(t.doc(7, ts=t.doc(7)["ts"] + char)), "bad_text", "schema"),
            _h(
                t,
                _dumps({**t.doc(8, source={"note": word}), "type": "maintenance"}),
                "bad_text",
                note="maintenance source",
            ),
            _h(t, _dumps(t.doc(9, type=word)), "bad_text", "schema", note="type"),
            # The character raw on the wire: a raw control character in a JSON string,
            # or a surrogate encoded as UTF-8 (CESU), is not JSON at all.
            _h(
                t,
                _dumps(t.doc(10, source={"note": "RAW"})).replace(b"RAW", raw),
                "malformed_json",
                "bad_text",
                note="raw on the wire",
            ),
        ]

    return make


def huge_numbers(rng: random.Random, t: Template, now: datetime) -> list[Hostile]:
    m = _metric(rng, t)
    big = str(10 ** rng.randint(309, 400))
    digits = "9" * rng.randint(5000, 6000)
    return [
        _h(t, _with_raw_metric(t, 0, m, big), "out_of_range", note="int too big for a float"),
        _h(t, _with_raw_metric(t, 1, m, "-" + big), "out_of_range", note="negative"),
        _h(t, _with_raw_metric(t, 2, m, "1e400"), "nan_value", "out_of_range", note="1e400"),
        _h(t, _with_raw_metric(t, 3, m, digits), "too_large", note="5000-digit integer"),
        _h(t, _with_raw(t, 4, "source", '{"n":' + digits + "}"), "too_large", note="in source"),
        _h(t, _with_raw(t, 5, "ts", digits), "too_large", "schema", note="as ts"),
        _h(
            t,
            _with_raw_metric(t, 6, m, "0." + "0" * 5000 + "1"),
            "too_large",
            STORED,
            note="5000-digit float",
        ),
    ]


def deep_nesting(rng: random.Random, t: Template, now: datetime) -> list[Hostile]:
    depth = rng.randint(10_000, 12_000)
    return [
        _h(t, _with_raw(t, 0, "source", _nested(depth)), "too_large", note="source lists"),
        _h(t, _with_raw(t, 1, "source", _nested(depth, kind="dict")), "too_large"),
        _h(t, _with_raw_metric(t, 2, _metric(rng, t), _nested(depth)), "too_large", "schema"),
        _h(t, _nested(depth).encode(), "too_large", "schema", note="top-level"),
        _h(t, ("[" * depth).encode(), "too_large", "malformed_json", note="unclosed"),
        _h(
            t, _with_raw(t, 5, "extra", _nested(depth)), "too_large", "schema", note="unknown field"
        ),
    ]


def oversized(rng: random.Random, t: Template, now: datetime) -> list[Hostile]:
    m = _metric(rng, t)
    long = "x" * NEAR_LIMIT_BYTES
    padded = _dumps(t.doc(6))
    padded = padded[:-1] + b" " * (NEAR_LIMIT_BYTES - len(padded)) + b"}"
    return [
        _h(t, _dumps(t.doc(0, source={"blob": long})), "too_large", note="900 KB source string"),
        _h(
            t,
            _dumps(t.doc(1, source={f"k{i}": i for i in range(30_000)})),
            "too_large",
            note="30k source keys",
        ),
        _h(t, _dumps(t.doc(2, device_id="d" * 100_000)), "too_large", "unknown_device"),
        _h(t, _dumps(t.doc(3, asset_type="a" * 100_000)), "too_large", "unknown_asset_type"),
        _h(
            t,
            _dumps(t.doc(4, metrics={**t.metrics, m * 20_000: 1.0})),
            "too_large",
            "unknown_metric",
        ),
        _h(t, _dumps(t.doc(5, ts="2026-" + "1" * 100_000)), "too_large", "schema"),
        # Valid JSON padded to 900 KB with whitespace: a byte limit refuses it, or it is stored.
        _h(t, padded, "too_large", STORED, note="whitespace-padded"),
        _h(t, _dumps([t.doc(7)] * 2000), "too_large", "schema", note="array of readings"),
    ]


def huge_metrics(rng: random.Random, t: Template, now: datetime) -> list[Hostile]:
    n = rng.randint(10_000, 20_000)
    many = {f"m{i}": float(i) for i in range(n)}
    return [
        _h(t, _dumps(t.doc(0, metrics=many)), "too_large", "unknown_metric"),
        _h(t, _dumps(t.doc(1, metrics={**t.metrics, **many})), "too_large", "unknown_metric"),
    ]


def far_timestamps(rng: random.Random, t: Template, now: datetime) -> list[Hostile]:
    def at(k: int, ts: str, *expected: str, note: str = "", maintenance: bool = False) -> Hostile:
        doc = t.doc(k, ts=ts)
        if maintenance:
            doc = {**doc, "type": "maintenance"}
        return _h(t, _dumps(doc), *expected, note=note or ts)

    days = rng.randint(30, 365)
    return [
        at(0, "9999-12-31T23:59:59+00:00", "clock_skew"),
        at(1, "0001-01-01T00:00:00+00:00", "too_old"),
        # Converting these to UTC overflows datetime's range.
        at(2, "9999-12-31T23:59:59-23:59", "clock_skew", "schema"),
        at(3, "0001-01-01T00:00:00+23:59", "too_old", "schema"),
        at(4, (now + timedelta(days=1)).isoformat(), "clock_skew", note="tomorrow"),
        at(5, (now - timedelta(days=days)).isoformat(), "too_old", note=f"{days} days ago"),
        at(6, (now - timedelta(days=8)).isoformat(), "too_old", note="8 days ago"),
        at(7, "0001-01-01T00:00:00+00:00", "too_old", maintenance=True, note="maintenance year 1"),
        at(8, "9999-12-31T23:59:59+00:00", "clock_skew", maintenance=True),
        at(9, "2026-01-01T00:00:00", "schema", note="no timezone"),
        at(10, "2026-13-45T25:61:00+00:00", "schema", note="impossible date"),
    ]


def forged_future(rng: random.Random, t: Template, now: datetime) -> list[Hostile]:
    """The mute attack: a reading stamped just inside the allowed skew, so a naive
    worker's device clock jumps ahead and the real readings after it go unscored.
    The real readings sent after it are the good ones the suite checks are scored."""
    forged = now + timedelta(seconds=299)
    doc = t.doc(0, ts=forged.isoformat(), metrics=good_value(rng, t.asset_type))
    return [_h(t, _dumps(doc), STORED, "clock_skew", note="now + 299 s")]


_WRONG = (None, 1, 1.5, True, "text", [], {}, [1, 2], {"a": 1})


def wrong_types(rng: random.Random, t: Template, now: datetime) -> list[Hostile]:
    out: list[Hostile] = []
    k = 0
    for name, ok in (
        ("device_id", str),
        ("asset_id", str),
        ("asset_type", str),
        ("ts", str),
        ("metrics", dict),
    ):
        for value in _WRONG:
            if isinstance(value, ok) and not isinstance(value, bool):
                continue
            out.append(_h(t, _dumps(t.doc(k, **{name: value})), "schema", note=f"{name}={value!r}"))
            k += 1
        doc = t.doc(k)
        del doc[name]
        out.append(_h(t, _dumps(doc), "schema", note=f"no {name}"))
        k += 1
    m = _metric(rng, t)
    for value in (None, "1.0", True, [1.0], {"v": 1.0}):
        metrics = {**t.metrics, m: value}
        out.append(_h(t, _dumps(t.doc(k, metrics=metrics)), "schema", note=f"metric={value!r}"))
        k += 1
    for value in (1, "maintenance ", None, ["reading"]):
        out.append(_h(t, _dumps(t.doc(k, type=value)), "schema", note=f"type={value!r}"))
        k += 1
    out.append(_h(t, _dumps(t.doc(k, metrics={})), "schema", note="no metrics"))
    k += 1
    # A source that is not an object carries no meaning; refused or stored without it.
    for value in ([1], "s", 3):
        out.append(_h(t, _dumps(t.doc(k, source=value)), "schema", STORED, note=f"source={value}"))
        k += 1
    return out


def garbage(rng: random.Random, t: Template, now: datetime) -> list[Hostile]:
    noise = bytes(rng.randrange(256) for _ in range(rng.randint(16, 512))) + b"\xff"
    text = "".join(rng.choice("abc{}[]:,\" 0123'") for _ in range(rng.randint(5, 80)))
    valid = _dumps(t.doc(0))
    return [
        _h(t, noise, "malformed_json", note="binary"),
        _h(t, b"{" + text.encode(), "malformed_json", note="JSON-ish text"),
        _h(t, valid[: rng.randint(1, len(valid) - 1)], "malformed_json", note="truncated"),
        _h(t, b"\xef\xbb\xbf" + valid, STORED, "malformed_json", note="UTF-8 BOM"),
        # json.loads detects UTF-16 from the bytes: valid after all, or refused.
        _h(t, _dumps(t.doc(1)).decode().encode("utf-16"), STORED, "malformed_json", note="UTF-16"),
        _h(t, b"\x1f\x8b\x08\x00" + noise, "malformed_json", note="gzip header"),
        _h(t, noise, "malformed_json", key=None, note="None key"),
        _h(t, noise, "malformed_json", key=b"\xff" * 50_000, note="50 KB key"),
    ]


def empty_and_keyless(rng: random.Random, t: Template, now: datetime) -> list[Hostile]:
    # The keyless valid reading is stamped a day earlier than everything else of its
    # device, so landing on another partition cannot make the good readings "late".
    early = t.doc(0, ts=(t.ts - timedelta(days=1)).isoformat())
    return [
        _h(t, b"", "schema", note="empty value"),
        _h(t, None, "schema", note="tombstone (None value)"),
        _h(t, b"   ", "malformed_json", "schema", note="whitespace"),
        _h(t, b"", "schema", key=None, note="None key, empty value"),
        _h(t, _dumps(early), STORED, key=None, note="None key, valid reading"),
    ]


def not_an_object(rng: random.Random, t: Template, now: datetime) -> list[Hostile]:
    return [
        _h(t, _dumps(value), "schema", note=repr(value)[:40])
        for value in ([t.doc(0)], [], 42, -1.5, "reading", None, True, {}, {"type": "reading"})
    ]


def duplicates(rng: random.Random, t: Template, now: datetime) -> list[Hostile]:
    """Second readings at a stored reading's time: of the last one, of an earlier one,
    and a byte-for-byte resend; the first wins, each repeat is a dead letter."""
    other = good_value(rng, t.asset_type)
    first, second = _dumps(t.doc(0)), _dumps(t.doc(1))
    return [
        _h(t, first, STORED, note="original"),
        _h(t, _dumps(t.doc(0, metrics=other)), "duplicate", note="of the last, other metrics"),
        _h(t, second, STORED, note="original 2"),
        _h(t, _dumps(t.doc(2)), STORED, note="original 3"),
        _h(t, _dumps(t.doc(1, metrics=other)), "duplicate", note="of an earlier reading"),
        _h(t, second, "duplicate", note="byte-for-byte resend"),
    ]


def semantics(rng: random.Random, t: Template, now: datetime) -> list[Hostile]:
    m = _metric(rng, t)
    spec = ASSET_TYPES[t.asset_type].metric(m)
    assert spec is not None
    return [
        _h(t, _dumps(t.doc(0, asset_type="rocket")), "unknown_asset_type"),
        _h(t, _dumps(t.doc(1, device_id="ffff" + t.device_id)), "unknown_device"),
        _h(t, _dumps(t.doc(2, asset_id="someone-else")), "asset_mismatch"),
        _h(t, _dumps(t.doc(3, metrics={**t.metrics, "warp_drive": 1.0})), "unknown_metric"),
        _h(t, _with_raw_metric(t, 4, m, "NaN"), "nan_value"),
        _h(t, _with_raw_metric(t, 5, m, "-Infinity"), "nan_value"),
        _h(t, _dumps(t.doc(6, metrics={**t.metrics, m: spec.high * 10 + 1})), "out_of_range"),
        _h(t, _dumps({**t.doc(7), "type": "maintenance"}), STORED, note="a real repair"),
    ]


CLASSES: tuple[HostileClass, ...] = tuple(
    HostileClass(name, (make.__doc__ or desc).strip().split("\n")[0], make)
    for name, desc, make in (
        ("nul_character", "NUL in every string", bad_characters("\x00", b"\x00")),
        # Raw on the wire, the surrogate is U+D800 encoded as UTF-8: invalid UTF-8.
        ("lone_surrogate", "lone surrogate in strings", bad_characters("\ud800", b"\xed\xa0\x80")),
        ("huge_numbers", "integers too big for a float, 5000 digits", huge_numbers),
        ("deep_nesting", "10000 levels of JSON nesting", deep_nesting),
        ("oversized", "900 KB messages, very long strings", oversized),
        ("huge_metrics", "metrics dict with 10000+ entries", huge_metrics),
        ("far_timestamps", "year 1, year 9999, 30 days ago, naive", far_timestamps),
        ("forged_future", "", forged_future),
        ("wrong_types", "wrong JSON types in every field", wrong_types),
        ("binary_garbage", "random bytes, truncated JSON, other encodings", garbage),
        ("empty_and_keyless", "empty values, None keys", empty_and_keyless),
        ("not_an_object", "JSON that is a list, number, string", not_an_object),
        ("duplicates", "", duplicates),
        ("semantics", "unknown asset type/device/metric, NaN, out of range", semantics),
    )
)


BY_NAME: dict[str, HostileClass] = {c.name: c for c in CLASSES}
