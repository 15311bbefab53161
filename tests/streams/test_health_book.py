"""The worker's health scoring pieces, without a broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np

from core.records import Score
from core.wire import decode_score_batch, encode_score_batch
from models.health import ANOMALY_THRESHOLD, DeviceHealthState, HealthSpec
from streams.health_book import (
    HealthBook,
    blend,
    decode_health,
    encode_health,
    health_spec,
    join_state,
    outlook,
    policy_kind,
    split_state,
)

SPEC = HealthSpec(metrics=("a", "b"), warmup=20, span=2)


def _readings(n: int, seed: int = 0) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    return [{"a": 1.0 + rng.normal() * 0.1, "b": 5.0 + rng.normal()} for _ in range(n)]


def test_packed_state_round_trips_in_warm_up_and_after() -> None:
    for n in (7, 40):
        st = DeviceHealthState(SPEC)
        for r in _readings(n):
            st.update(r)
        back = decode_health(encode_health(st), SPEC)
        assert back is not None and back.to_dict() == st.to_dict()
    # another spec, or bytes that are not a health state: start afresh
    assert decode_health(encode_health(st), HealthSpec(metrics=("a", "b"), warmup=30)) is None
    assert decode_health(b"CWS2....", SPEC) is None


def _commit(book: HealthBook, table: dict, key: bytes, state: bytes = b"CWS2-state") -> None:
    # What the worker does after a batch is stored: one value with both states.
    table[key] = book.pack(key, state)


def test_book_packs_with_the_device_state_and_forgets_on_abort() -> None:
    table: dict[bytes, bytes] = {}
    book = HealthBook(table)
    rows = _readings(30)
    for r in rows[:25]:
        book.update(b"dev", SPEC, r)
    assert table == {}  # nothing stored before the batch is
    _commit(book, table, b"dev")
    saved = table[b"dev"]
    assert split_state(saved)[0] == b"CWS2-state"  # the feature state is intact
    book.update(b"dev", SPEC, rows[25])
    book.abort()  # the batch failed: its update must not count
    assert table[b"dev"] is saved
    again = [book.update(b"dev", SPEC, r) for r in rows[25:]]
    whole = DeviceHealthState(SPEC)
    expected = [whole.update(r) for r in rows][25:]
    assert again == expected
    # a restarted worker (no cache) reads the same state from the table
    _commit(book, table, b"dev")
    fresh = HealthBook(table)
    nxt = _readings(3, seed=1)
    assert [fresh.update(b"dev", SPEC, r) for r in nxt] == [whole.update(r) for r in nxt]
    # a batch that did not touch the health (a maintenance event only) keeps it
    health_before = split_state(table[b"dev"])[1]
    _commit(HealthBook(table), table, b"dev", b"CWS2-other")
    assert split_state(table[b"dev"]) == (b"CWS2-other", health_before)


class CopyingTable(dict):
    """Like Faust's RocksDB store: every read returns a new bytes object."""

    def get(self, key, default=None):
        value = super().get(key, default)
        return bytes(bytearray(value)) if isinstance(value, bytes) else value


def test_book_reuses_its_live_state_when_the_table_returns_equal_bytes(monkeypatch) -> None:
    table = CopyingTable()
    book = HealthBook(table)
    for r in _readings(25):
        book.update(b"dev", SPEC, r)
    _commit(book, table, b"dev")
    decodes = []
    monkeypatch.setattr("streams.health_book.decode_health", lambda *a: decodes.append(a) or None)
    book.update(b"dev", SPEC, _readings(1, seed=2)[0])
    assert decodes == []  # the packed bytes are equal: the live state is reused
    # Other bytes (another worker moved the device on) are decoded.
    _commit(book, table, b"dev")
    table[b"dev"] = join_state(b"CWS2-state", encode_health(DeviceHealthState(SPEC)))
    book.update(b"dev", SPEC, _readings(1, seed=3)[0])
    assert len(decodes) == 1


def test_values_from_before_the_health_model_still_split() -> None:
    assert split_state(b"CWS2 old value") == (b"CWS2 old value", None)
    assert join_state(b"CWS2 x", None) == b"CWS2 x"
    book = HealthBook({b"dev": b"CWS2 old value"})
    assert book.update(b"dev", SPEC, {"a": 1.0, "b": 2.0}).warming_up


def test_reset_relearns_the_baseline() -> None:
    book = HealthBook({})
    for r in _readings(30):
        book.update(b"dev", SPEC, r)
    book.reset(b"dev", SPEC)
    assert book.update(b"dev", SPEC, {"a": 50.0, "b": 50.0}).warming_up


def test_policy_and_blend_follow_the_card() -> None:
    card = {
        "scoring_policy": {"lift": {"kind": "anomaly"}, "bridge": {"kind": "failure_risk"}},
        "health_specs": {"lift": SPEC.to_dict()},
    }
    assert policy_kind(card, "lift") == "anomaly"
    assert policy_kind(card, "bridge") == "failure_risk"
    assert policy_kind({}, "lift") == "failure_risk"  # cards from before: supervised
    assert health_spec(card, "lift", ("x",)) == SPEC
    assert health_spec({}, "bridge", ("x", "y")).metrics == ("x", "y")

    st = DeviceHealthState(HealthSpec(metrics=("a", "b"), warmup=20, span=1))
    health = [st.update(r) for r in _readings(21)] + [st.update({"a": 9.0, "b": 5.0})]
    risk, at, anomaly = blend("anomaly", [0.1] * 22, 0.3, health)
    assert at == ANOMALY_THRESHOLD and anomaly[0] is None and risk[0] == 0.0
    assert risk[-1] > ANOMALY_THRESHOLD and anomaly[-1] > 1.0
    risk, at, anomaly2 = blend("failure_risk", [0.1] * 22, 0.3, health)
    assert risk == [0.1] * 22 and at == 0.3 and anomaly2 == anomaly


def test_score_batch_carries_kind_and_anomaly_and_reads_old_messages() -> None:
    ts = datetime(2026, 11, 30, tzinfo=UTC)
    rows = [
        Score(ts, "d1", "a1", "lift", "v1", 0.7, 0.5, model_kind="anomaly", anomaly_score=2.3),
        Score(ts, "d2", "a2", "lift", "v1", 0.2, 0.4, ttf_low=9.2, ttf_median=12.0, ttf_high=19.5),
    ]
    first, second = decode_score_batch(encode_score_batch(rows))
    assert (first.model_kind, first.anomaly_score) == ("anomaly", 2.3)
    assert (second.model_kind, second.anomaly_score) == ("failure_risk", None)
    assert (second.ttf_low, second.ttf_median, second.ttf_high) == (9.2, 12.0, 19.5)
    assert first.ttf_median is None
    assert outlook(second) == "likely to fail in 9-20 days" and outlook(first) is None
    # a message written before the extras existed (seven fields per row)
    old = json.dumps({"v": 1, "scores": [["a1", "d1", "lift", ts.isoformat(), 0.9, 0.5, "v0"]]})
    (score,) = decode_score_batch(old.encode())
    assert (score.risk, score.model_kind, score.anomaly_score) == (0.9, "failure_risk", None)
    # an extras object with keys this reader does not know (a later forecast field)
    new = json.loads(encode_score_batch(rows[:1]))
    new["scores"][0][7]["forecast"] = [1, 2, 3]
    assert decode_score_batch(json.dumps(new).encode())[0].anomaly_score == 2.3


def _old_head(st: DeviceHealthState) -> bytes:
    # encode_health's head before head_json(): the reference it must equal byte for byte,
    # so tables written by either version decode the same.
    return json.dumps(st.to_dict(with_buffer=False), separators=(",", ":")).encode()


def test_head_json_is_the_old_head_byte_for_byte() -> None:
    specs = (SPEC, HealthSpec(metrics=("a", "b", "c"), warmup=12, distance="mahalanobis"))
    for spec in specs:
        st = DeviceHealthState(spec)
        assert st.head_json().encode() == _old_head(st)  # nothing seen: ewm all null
        st.update({"a": 1.0})  # "b" still unseen: a null among numbers
        assert st.head_json().encode() == _old_head(st)
        for i, r in enumerate(_readings(60, seed=3)):
            st.update({**r, "c": float(i % 5), "b": float("nan") if i % 7 == 0 else r["b"]})
            assert st.head_json().encode() == _old_head(st)
        assert not st.warming_up
        back = decode_health(encode_health(st), spec)
        assert back is not None and back.head_json() == st.head_json()
        st.reset()  # the learned baseline is gone: its cached JSON too
        assert st.head_json().encode() == _old_head(st)
        st._ucl = float("nan")  # a degenerate fit: ucl is null, as to_dict writes it
        st._fitted_json = None
        assert st.head_json().encode() == _old_head(st)
