"""The notifier outlives outages and bugs: long retries, a supervised loop, visible give-ups.

Real parts only: loopback HTTP endpoints that go down and come back, channels
whose targets make our HTTP client raise outside its own error type, and rows
PostgreSQL itself refuses. Periods are configured short so the tests are fast.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from citywatch.stack import free_port
from crew.channels import ChannelConfig
from crew.notifier import Notifier, NotifierConfig
from crew.receiver import WebhookReceiver
from crew.routing import add_channel, add_rule, set_escalation
from dashboards.alerting import NOTIFICATIONS_FAILING_SQL as RULE_SQL
from dashboards.macros import Context, expand
from dashboards.pipeline import NOTIFICATIONS_SQL as PANEL_SQL
from storage.alerts.admin import upsert_channel
from storage.sinks import PostgresSink, SinkBatch

from .conftest import alert_row

pytestmark = pytest.mark.stack


def _write_alert(database_url: str, asset: str) -> None:
    sink = PostgresSink(database_url)
    sink.write(SinkBatch(alerts=[alert_row(asset)]))
    sink.close()


def _deliveries(db) -> dict[str, tuple]:
    return {
        r[0]: r[1:]
        for r in db.execute(
            "SELECT channel_id, status, attempts, last_error FROM alert_deliveries"
        ).fetchall()
    }


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_retry_in_backs_off_to_a_cap_and_gives_up_after_the_period() -> None:
    config = NotifierConfig()  # defaults: 6 hours, 5-minute cap
    assert config.retry_for_s == 6 * 3600
    delays = [config.retry_in(n, 0.0) for n in range(12)]
    assert delays[:5] == [1, 2, 4, 8, 16]  # the old schedule gave up here, after ~31 s
    assert max(delays) == 300
    assert config.retry_in(1000, 3600.0) == 300  # no overflow after many attempts
    # The last try lands on the end of the period, then it gives up.
    assert config.retry_in(50, 6 * 3600 - 10) == 10
    assert config.retry_in(51, 6 * 3600) is None


def test_a_webhook_down_for_a_while_then_back_gets_its_notification(conn, crew_db, tokens):
    port = free_port()
    add_rule(crew_db, "north")
    add_channel(crew_db, "hook", "webhook", f"http://127.0.0.1:{port}/hook", team="north")
    config = NotifierConfig(poll_s=0.2, retry_for_s=60.0, backoff_base_s=0.1, backoff_max_s=0.4)
    notifier = Notifier(conn.database_url, ChannelConfig(timeout_s=1.0), config).start()
    try:
        _write_alert(conn.database_url, "pump-down")
        # Down for 3 s: more tries than the old six-attempt limit allowed.
        assert _wait(lambda: (_deliveries(crew_db).get("hook") or (0, 0))[1] >= 7, 10)
        assert _deliveries(crew_db)["hook"][0] == "pending"
        with WebhookReceiver(port) as receiver:
            got = receiver.wait_for(lambda p, b: p == "/hook", timeout=10)
            assert got is not None and got[3]["event"] == "alert.open"
            assert _wait(lambda: _deliveries(crew_db)["hook"][0] == "sent", 5)
        assert notifier.health()["alive"]
    finally:
        notifier.stop()
    status, attempts, last_error = _deliveries(crew_db)["hook"]
    assert (status, last_error) == ("sent", None) and attempts >= 8
    assert len(receiver.received) == 1


def test_unexpected_errors_neither_kill_the_loop_nor_block_other_deliveries(
    conn, crew_db, tokens, receiver
):
    from crew.api import create_app
    from crew.server import BackgroundServer

    add_rule(crew_db, "north")
    add_channel(crew_db, "good", "webhook", receiver.url + "/good", team="north")
    # A control character in the URL: httpx raises InvalidURL, which is not an
    # httpx.HTTPError, so the channel fails with an error nobody planned for.
    bad_url = "http://hooks.example.org/\x01"
    upsert_channel(crew_db, "broken", "webhook", bad_url, team="north")
    with pytest.raises(httpx.InvalidURL):
        httpx.Client().post(bad_url)
    assert not issubclass(httpx.InvalidURL, httpx.HTTPError)
    # An alert whose escalation overflows an integer: PostgreSQL refuses it every pass.
    set_escalation(crew_db, "north", 1, None)
    _write_alert(conn.database_url, "pump-stuck")
    crew_db.execute(
        "UPDATE alerts SET escalation_level = 2147483647, raised_at = now() - interval '1 hour'"
        " WHERE asset_id = 'pump-stuck'"
    )
    config = NotifierConfig(
        poll_s=0.2, escalation_check_s=0.0, retry_for_s=1.0, backoff_base_s=0.2, stale_after_s=1.0
    )
    notifier = Notifier(conn.database_url, ChannelConfig(timeout_s=1.0), config).start()
    try:
        with BackgroundServer(
            create_app(conn.database_url, health=notifier.health), free_port()
        ) as api:
            _write_alert(conn.database_url, "pump-ok")
            assert receiver.wait_for(lambda p, b: b["alert"]["asset_id"] == "pump-ok", 10)
            assert _wait(lambda: _deliveries(crew_db).get("broken", ("",))[0] == "failed", 10)
            health = notifier.health()
            assert health["thread_running"] and health["errors"] >= 1
            assert "escalation" in health["last_error"] and "out of range" in health["last_error"]
            # The escalation step keeps failing, so no clean pass: /healthz says so.
            time.sleep(1.2)
            response = httpx.get(api.url + "/healthz")
            assert response.status_code == 503 and not response.json()["notifier"]["alive"]
            # Fixed data: the next clean pass makes the service healthy again.
            crew_db.execute("UPDATE alerts SET status = 'resolved' WHERE asset_id = 'pump-stuck'")
            assert _wait(lambda: httpx.get(api.url + "/healthz").status_code == 200, 5)
    finally:
        notifier.stop()
    broken = [
        r
        for r in crew_db.execute(
            "SELECT status, last_error, failed_at FROM alert_deliveries WHERE channel_id = 'broken'"
        )
    ]
    assert len(broken) >= 2 and all("InvalidURL" in e for _, e, _ in broken)
    assert any(s == "failed" and f is not None for s, _, f in broken)


def test_a_given_up_delivery_shows_on_the_panel_and_fires_the_rule(conn, crew_db, tokens):
    add_rule(crew_db, "north")
    add_channel(crew_db, "gone", "webhook", f"http://127.0.0.1:{free_port()}/x", team="north")
    config = NotifierConfig(retry_for_s=1.0, backoff_base_s=0.2)
    notifier = Notifier(conn.database_url, ChannelConfig(timeout_s=1.0), config)
    _write_alert(conn.database_url, "pump-gone")

    def drained() -> bool:
        with psycopg.connect(conn.database_url) as c:
            notifier.run_once(c)
        return _deliveries(crew_db)["gone"][0] != "pending"

    start = time.monotonic()
    assert _wait(drained, 10)
    elapsed = time.monotonic() - start
    status, attempts, last_error = _deliveries(crew_db)["gone"]
    assert status == "failed" and "ConnectError" in last_error
    assert attempts >= 3 and elapsed >= 1.0  # retried for the whole (short) period

    now = datetime.now(UTC)
    sql = expand(PANEL_SQL, Context(now - timedelta(minutes=10), now + timedelta(minutes=1)))
    with psycopg.connect(conn.database_url) as c:
        series: dict[str, float] = {}
        for _, metric, value in c.execute(sql):
            series[metric] = series.get(metric, 0) + float(value)
        assert c.execute(RULE_SQL).fetchone()[0] == 1
    assert series["alert transitions"] == 1 and "sent" not in series
    assert series["given up: gone"] == 1
    assert series["failing: gone"] >= 1  # failing from its first failure until given up
