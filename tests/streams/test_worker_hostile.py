"""Hostile input through one running worker: nothing lost, nothing crashes, good data scored.

Each class of ``ingest.hostile`` is sent between good readings of its own
registered devices (50 before, 50 after, same devices and keys). Then, from
the tables: every message is a reading, a maintenance event or a dead letter
(produced = stored + dead letters, exactly), each dead letter has a reason
the class expects, every good reading is stored and scored, and the worker
that started the module is still the one running. The same plan and
accounting run in ``citywatch bench faults``.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from citywatch.commands.bench_faults import (
    STOPPING,
    Plan,
    account,
    plan_class,
    send,
    wait_settled,
)
from ingest.hostile import CLASSES, STORED, Hostile, good_value, make_devices
from storage.device_registry import register_devices
from streams.topics import READINGS, ensure_topics
from tests.pipeline_helpers import Worker

pytestmark = pytest.mark.stack

POOL = len(CLASSES) + 30  # device tags registered up front: one per class and example

# The closed dead-letter vocabulary of the readings topic.
REASONS = frozenset(
    {
        "malformed_json",
        "schema",
        "unknown_asset_type",
        "unknown_device",
        "asset_mismatch",
        "unknown_metric",
        "nan_value",
        "out_of_range",
        "clock_skew",
        "too_old",
        "duplicate",
        "too_large",
        "bad_text",
        "poison",
    }
)


class Run:
    """One worker for the module, its topic and a producer."""

    def __init__(self, conn, settings, log_path) -> None:
        self.conn, self.settings, self.log_path = conn, settings, log_path
        self.topic = settings.topic(READINGS)
        # Devices are registered before the worker starts: its directory reloads at
        # most once a second, so a device registered a moment before its first
        # reading could be refused as unknown.
        prefix = uuid.uuid4().hex[:6]
        self.tags = iter([f"{prefix}{i:04x}" for i in range(POOL)])
        for tag in [f"{prefix}{i:04x}" for i in range(POOL)]:
            with psycopg.connect(conn.database_url) as pg:
                register_devices(pg, make_devices(tag, 4))
        self.worker = Worker(settings, conn, log_path).start()
        self.pid = self.worker.proc.pid
        self.producer = KafkaProducer(
            bootstrap_servers=conn.kafka, acks="all", linger_ms=5, max_request_size=1_000_000
        )

    def ensure_worker(self) -> None:
        # A worker that died in an earlier class already failed that class;
        # a fresh one keeps the other classes' results meaningful.
        if not self.worker.alive():
            self.worker = Worker(self.settings, self.conn, self.log_path).start()
            self.pid = self.worker.proc.pid

    def tag(self) -> str:
        tag = next(self.tags, None)
        if tag is None:  # the pool ran out (hypothesis shrinking): register and wait
            tag = uuid.uuid4().hex[:10]
            with psycopg.connect(self.conn.database_url) as pg:
                register_devices(pg, make_devices(tag, 4))
            time.sleep(1.2)
        return tag

    def run(self, plan: Plan, timeout_s: float = 45.0):
        log_at = self.log_path.stat().st_size
        offsets = send(self.producer, self.topic, plan)
        wait_settled(
            self.conn.database_url,
            plan,
            self.topic,
            offsets,
            timeout_s=timeout_s,
            alive=self.worker.alive,
        )
        log = self.log_path.read_bytes()[log_at:].decode(errors="replace")
        restarts = int(not self.worker.alive()) + log.count(STOPPING)
        return account(self.conn.database_url, plan, self.topic, offsets, restarts=restarts)


@pytest.fixture(scope="module")
def hostile(conn, base_settings, trained_models, tmp_path_factory):
    run_id = uuid.uuid4().hex[:8]
    settings_ = base_settings.model_copy(
        update={"topic_prefix": f"t{run_id}-", "app_id": f"citywatch-test-{run_id}"}
    )
    ensure_topics(conn.kafka, settings_)
    run = Run(conn, settings_, tmp_path_factory.mktemp("hostile") / "worker.log")
    yield run
    run.producer.close()
    run.worker.stop()


def check(run: Run, outcome) -> None:
    assert outcome.lost == 0, f"{outcome.lost} of {outcome.sent} lost: {outcome}"
    assert outcome.unexpected == [], outcome.unexpected
    assert outcome.unscored == 0, f"{outcome.unscored} good readings stored but not scored"
    assert outcome.deadletters.keys() <= REASONS
    assert run.worker.alive() and run.worker.proc.pid == run.pid, "the worker stopped"
    assert outcome.restarts == 0


@pytest.mark.parametrize("cls", CLASSES, ids=[c.name for c in CLASSES])
def test_hostile_class_is_contained(hostile, cls):
    hostile.ensure_worker()
    plan = plan_class(cls, random.Random(cls.name), hostile.tag(), datetime.now(UTC))
    outcome = hostile.run(plan)
    check(hostile, outcome)
    # Every class sends at least one message that must become a dead letter, or (a
    # valid repair, a keyless reading) be stored: the class really reached the worker.
    assert outcome.stored >= 100 + sum(
        h is not None and h.expected == {STORED} for *_, h in plan.messages
    )


# -- generated input ---------------------------------------------------------------

_text = st.text(
    alphabet=st.one_of(st.characters(), st.sampled_from(["\x00", "\ud800", "\udfff", "\\"])),
    max_size=12,
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def _reading_like(draw, device: dict, ts: datetime) -> bytes:
    """A reading whose every field is either right or arbitrary JSON."""
    valid = {
        "device_id": device["device_id"],
        "asset_id": device["asset_id"],
        "asset_type": device["asset_type"],
        "ts": ts.isoformat(),
        "metrics": good_value(random.Random(draw(st.integers(0, 99))), device["asset_type"]),
        "source": {"kind": "hypothesis"},
    }
    doc = {k: draw(st.just(v) | _json) for k, v in valid.items()}
    if draw(st.booleans()):
        doc["type"] = draw(st.sampled_from(["reading", "maintenance"]) | _json)
    return json.dumps(doc, allow_nan=True).encode()


_hostile_values = st.one_of(
    st.binary(max_size=300),
    _json.map(lambda v: json.dumps(v, allow_nan=True).encode()),
)


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_generated_input_is_contained(hostile, data):
    hostile.ensure_worker()
    device = make_devices(hostile.tag(), 1)[0]
    key = device["device_id"].encode()
    base = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    values = data.draw(
        st.lists(
            _hostile_values | _reading_like(device, base + timedelta(seconds=10)),
            min_size=1,
            max_size=4,
        )
    )
    plan = Plan("generated", [device], [])
    rng = random.Random(len(values))
    for i in (0, 1, None, 20, 21):
        if i is None:
            any_outcome = REASONS | {STORED}
            plan.messages += [(key, v, Hostile(key, v, any_outcome)) for v in values]
            continue
        ts = base + timedelta(seconds=i)
        doc = {**{k: device[k] for k in ("device_id", "asset_id", "asset_type")}}
        doc |= {"ts": ts.isoformat(), "metrics": good_value(rng, device["asset_type"])}
        plan.messages.append((key, json.dumps(doc).encode(), None))
        plan.good.add((device["device_id"], ts))
    check(hostile, hostile.run(plan, timeout_s=20.0))
