"""Notifications over real channels: loopback HTTP, aiosmtpd, the Tansu broker."""

from __future__ import annotations

import json
import time

import psycopg
import pytest
from aiosmtpd.controller import Controller
from kafka import KafkaConsumer, TopicPartition

from citywatch.stack import free_port
from crew.channels import ChannelConfig
from crew.lifecycle import transition
from crew.notifier import Notifier, NotifierConfig
from crew.routing import add_channel, add_rule, set_escalation
from storage.alerts.access import Actor
from storage.sinks import PostgresSink, SinkBatch

from .conftest import alert_row

pytestmark = pytest.mark.stack


class Inbox:
    """aiosmtpd handler that keeps every message."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp():
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, handler
    controller.stop()


def drain(notifier: Notifier, database_url: str, rounds: int = 3) -> None:
    with psycopg.connect(database_url) as c:
        for _ in range(rounds):
            notifier.run_once(c)


def deliveries(db) -> list[tuple]:
    return db.execute(
        "SELECT t.action, d.channel_id, d.status, d.attempts FROM alert_deliveries d"
        " JOIN alert_transitions t USING (transition_id) ORDER BY t.transition_id, d.channel_id"
    ).fetchall()


def test_every_channel_gets_exactly_one_message_per_transition(
    conn, crew_db, tokens, receiver, smtp, isolated
):
    controller, mail = smtp
    topic = isolated.topic("work-orders")
    add_rule(crew_db, "north")
    add_channel(crew_db, "hook", "webhook", receiver.url + "/generic", team="north")
    add_channel(crew_db, "chat", "slack", receiver.url + "/slack", team="north")
    add_channel(crew_db, "mail", "email", "north-crew@example.org", team="north")
    add_channel(crew_db, "orders", "kafka", topic)  # every team's alerts
    add_channel(crew_db, "south", "webhook", receiver.url + "/south", team="south")
    notifier = Notifier(
        conn.database_url,
        ChannelConfig(smtp_host="127.0.0.1", smtp_port=controller.port, kafka_bootstrap=conn.kafka),
    )
    sink = PostgresSink(conn.database_url)
    a = alert_row("pump-7", risk=0.93)
    sink.write(SinkBatch(alerts=[a]))
    with psycopg.connect(conn.database_url) as c:
        transition(c, a.alert_id, "acknowledge", Actor("ana", "crew", "north"))
    drain(notifier, conn.database_url)
    sink.write(SinkBatch(alerts=[a]))  # a replayed open: no new transition, no message
    drain(notifier, conn.database_url)
    sink.close()

    paths = sorted((p, b.get("event") or b["text"][:6]) for _, p, _, b in receiver.received)
    assert paths == [
        ("/generic", "alert.acknowledge"),
        ("/generic", "alert.open"),
        ("/slack", "[ACKNO"),
        ("/slack", "[OPEN]"),
    ]
    generic = next(b for _, p, _, b in receiver.received if p == "/generic")
    assert generic["alert"]["alert_id"] == a.alert_id
    assert generic["alert"]["severity"] == "critical"
    slack = next(b for _, p, _, b in receiver.received if p == "/slack")
    assert slack["blocks"][0]["type"] == "section" and "pump-7" in slack["text"]
    assert len(mail.messages) == 2
    assert mail.messages[0][0] == ["north-crew@example.org"]
    assert b"pump-7" in mail.messages[0][1]
    # Read the partitions directly: no group join (slow on Tansu) needed.
    consumer = KafkaConsumer(bootstrap_servers=conn.kafka, consumer_timeout_ms=3000)
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    records = [json.loads(m.value) for m in consumer]
    consumer.close()
    assert [r["event"] for r in records] == ["alert.open", "alert.acknowledge"]
    assert all(d[2:] == ("sent", 1) for d in deliveries(crew_db))
    assert len(deliveries(crew_db)) == 8  # 2 transitions x 4 channels, none for south


def test_failed_deliveries_are_retried_with_backoff_then_given_up(conn, crew_db, tokens, receiver):
    receiver.fail_first = 2  # HTTP 503 twice, then OK
    add_rule(crew_db, "north")
    add_channel(crew_db, "flaky", "webhook", receiver.url + "/flaky", team="north")
    add_channel(crew_db, "gone", "webhook", f"http://127.0.0.1:{free_port()}/x", team="north")
    notifier = Notifier(
        conn.database_url,
        ChannelConfig(timeout_s=1.0),
        NotifierConfig(retry_for_s=0.5, backoff_base_s=0.2),
    )
    sink = PostgresSink(conn.database_url)
    sink.write(SinkBatch(alerts=[alert_row("pump-8")]))
    sink.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        drain(notifier, conn.database_url, rounds=1)
        if all(d[2] != "pending" for d in deliveries(crew_db)):
            break
        time.sleep(0.1)
    got = deliveries(crew_db)
    assert got[0] == ("open", "flaky", "sent", 3)
    assert got[1][:3] == ("open", "gone", "failed") and got[1][3] >= 3
    assert len(receiver.received) == 1
    error = crew_db.execute(
        "SELECT last_error FROM alert_deliveries WHERE channel_id = 'gone'"
    ).fetchone()[0]
    assert "ConnectError" in error


def test_unacknowledged_alert_escalates_to_the_next_team(conn, crew_db, tokens, receiver):
    set_escalation(crew_db, "north", 1, "duty-managers")
    add_rule(crew_db, "north")
    add_channel(crew_db, "north-hook", "webhook", receiver.url + "/north", team="north")
    add_channel(
        crew_db,
        "managers",
        "webhook",
        receiver.url + "/managers",
        team="duty-managers",
        min_level=1,
    )
    notifier = Notifier(conn.database_url, config=NotifierConfig(escalation_check_s=0.0))
    sink = PostgresSink(conn.database_url)
    a = alert_row("pump-9")
    sink.write(SinkBatch(alerts=[a]))
    sink.close()
    drain(notifier, conn.database_url, rounds=1)
    assert [p for _, p, _, _ in receiver.received] == ["/north"]
    assert receiver.wait_for(lambda p, b: p == "/managers", timeout=0.5) is None
    got = None
    deadline = time.monotonic() + 10
    while got is None and time.monotonic() < deadline:
        drain(notifier, conn.database_url, rounds=1)
        got = receiver.wait_for(lambda p, b: p == "/managers", timeout=0.3)
    assert got is not None and got[3]["event"] == "alert.escalate"
    assert got[3]["transition"]["detail"] == {
        "from_team": "north",
        "to_team": "duty-managers",
        "level": 1,
    }
    row = crew_db.execute("SELECT status, team, escalation_level FROM alerts").fetchone()
    assert row == ("open", "duty-managers", 1)


def test_notifier_thread_wakes_on_pg_notify(conn, crew_db, tokens, receiver):
    add_rule(crew_db, "north")
    add_channel(crew_db, "hook", "webhook", receiver.url + "/hook", team="north")
    # A 60 s poll: only the NOTIFY at commit can make delivery fast.
    notifier = Notifier(conn.database_url, config=NotifierConfig(poll_s=60.0)).start()
    try:
        time.sleep(0.5)  # let it LISTEN
        sink = PostgresSink(conn.database_url)
        start = time.monotonic()
        sink.write(SinkBatch(alerts=[alert_row("pump-10")]))
        got = receiver.wait_for(lambda p, b: p == "/hook", timeout=10)
        sink.close()
    finally:
        notifier.stop()
    assert got is not None
    assert got[0] - start < 5.0


def test_two_notifiers_share_the_outbox_without_duplicates(conn, crew_db, tokens, receiver):
    add_rule(crew_db, "north")
    add_channel(crew_db, "hook", "webhook", receiver.url + "/hook", team="north")
    notifiers = [
        Notifier(conn.database_url, config=NotifierConfig(poll_s=0.2)).start() for _ in range(2)
    ]
    try:
        sink = PostgresSink(conn.database_url)
        for i in range(20):
            sink.write(SinkBatch(alerts=[alert_row(f"pump-x{i}")]))
        sink.close()
        deadline = time.monotonic() + 20
        while len(receiver.received) < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # room for a duplicate to show up, if there were one
    finally:
        for n in notifiers:
            n.stop()
    ids = [b["delivery_id"] for _, _, _, b in receiver.received]
    assert len(ids) == 20 and len(set(ids)) == 20
    assert {d[2:] for d in deliveries(crew_db)} == {("sent", 1)}
