"""Arbitrary bytes on ``network-readings``, through one running worker: each refused
message is a dead letter (stage ``leaks``) with the reason read_forwarded gives, and the
worker that started the module is still the one running."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from core.vocabulary import WORKER_REJECTIONS as REASONS
from core.wire import Rejection
from streams.leaks import read_forwarded
from streams.pipeline import partition_of
from streams.topics import NETWORK_READINGS, ensure_topics
from tests.pipeline_helpers import Worker

pytestmark = pytest.mark.stack

DISTRICT = b"hanoi.all"


class Run:
    def __init__(self, conn, settings_, log_path) -> None:
        self.conn, self.log_path = conn, log_path
        self.topic = settings_.topic(NETWORK_READINGS)
        self.worker = Worker(settings_, conn, log_path).start()
        self.pid = self.worker.proc.pid
        self.producer = KafkaProducer(bootstrap_servers=conn.kafka, acks="all", linger_ms=5)


@pytest.fixture(scope="module")
def hostile_leaks(conn, base_settings, trained_models, leakdb_dir, tmp_path_factory):
    import psycopg

    from networks.assets import network_spec
    from storage.water_networks import store_network

    with psycopg.connect(conn.database_url, autocommit=True) as c:
        c.execute("TRUNCATE water_networks CASCADE")
    # A watched district, so well-formed messages reach its checks (sensor, clock).
    store_network(conn.database_url, network_spec(leakdb_dir / "Hanoi_CMH.inp", "hanoi"))
    run_id = uuid.uuid4().hex[:8]
    settings_ = base_settings.model_copy(
        update={"topic_prefix": f"t{run_id}-", "app_id": f"citywatch-test-{run_id}"}
    )
    ensure_topics(conn.kafka, settings_)
    run = Run(conn, settings_, tmp_path_factory.mktemp("leaks-hostile") / "worker.log")
    yield run
    run.producer.close()
    run.worker.stop()


_scalar = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_forwarded_like = st.fixed_dictionaries(
    {},
    optional={
        "a": st.just(DISTRICT.decode()) | _scalar,
        "d": st.sampled_from(["hanoi-p-2", "hanoi-p-999"]) | _scalar,
        "t": st.just((datetime.now(UTC) - timedelta(days=1)).isoformat())
        | st.just((datetime.now(UTC) + timedelta(days=2)).isoformat())
        | _scalar,
        "v": st.floats() | _scalar,
        "p": st.integers(-2, 70000) | _scalar,
    },
).map(lambda doc: json.dumps(doc, allow_nan=True).encode())
_values = st.binary(max_size=300) | _forwarded_like
_keys = st.sampled_from([DISTRICT, b"elsewhere", None]) | st.binary(max_size=16)


def _deadletters(database_url: str, offsets: dict) -> dict:
    import psycopg

    with psycopg.connect(database_url) as c:
        rows = c.execute(
            "SELECT source_partition, source_offset, reason FROM deadletters"
            " WHERE stage = 'leaks' AND source_topic = %s",
            (next(iter(offsets.values()))[0],),
        ).fetchall()
    return {(p, o): reason for p, o, reason in rows}


@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(messages=st.lists(st.tuples(_keys, _values), min_size=1, max_size=15))
def test_arbitrary_bytes_on_the_district_topic_are_dead_lettered(hostile_leaks, messages):
    run = hostile_leaks
    sent = {}
    for key, value in messages:
        meta = run.producer.send(run.topic, key=key, value=value).get(timeout=30)
        sent[(meta.partition, meta.offset)] = (run.topic, key, value)
    # Last, two well-formed readings the district refuses: the agent got past the rest.
    now = datetime.now(UTC)
    for device, ts, reason in (
        ("hanoi-p-999", now - timedelta(days=1), "unknown_device"),
        ("hanoi-p-2", now + timedelta(days=2), "clock_skew"),
    ):
        value = json.dumps({"a": "hanoi.all", "d": device, "t": ts.isoformat(), "v": 1.0})
        meta = run.producer.send(run.topic, key=DISTRICT, value=value.encode()).get(timeout=30)
        sent[(meta.partition, meta.offset)] = (run.topic, DISTRICT, reason)
    # A good reading on a partition its key does not hash to (its state would split).
    value = json.dumps({"a": "hanoi.all", "d": "hanoi-p-2", "t": now.isoformat(), "v": 1.0})
    wrong = 1 - partition_of(DISTRICT, 2)
    meta = run.producer.send(run.topic, key=DISTRICT, value=value.encode(), partition=wrong)
    meta = meta.get(timeout=30)
    sent[(meta.partition, meta.offset)] = (run.topic, DISTRICT, "asset_mismatch")
    # Whatever read_forwarded refuses must come back as that dead letter.
    expected = {p: v[2] for p, v in sent.items() if isinstance(v[2], str)}
    for position, (_, key, value) in sent.items():
        if isinstance(value, str):
            continue
        refused = read_forwarded(value, key or b"")
        if isinstance(refused, Rejection):
            expected[position] = refused.reason
    deadline = time.monotonic() + 60
    stored = _deadletters(run.conn.database_url, sent)
    while not expected.items() <= stored.items() and time.monotonic() < deadline:
        time.sleep(0.3)
        stored = _deadletters(run.conn.database_url, sent)
    assert run.worker.alive() and run.worker.proc.pid == run.pid, "the worker stopped"
    assert expected.items() <= stored.items(), (expected, stored)
    assert {stored[p] for p in sent if p in stored} <= set(REASONS)
    log = run.log_path.read_text(errors="replace")
    assert "failed; stopping the worker" not in log
