"""``citywatch bench alerts``: the alert service end to end against a running stack.

It drives an alert through the whole lifecycle over the HTTP API, checks that
bad or foreign tokens are refused, counts the labels the outcomes wrote, and
measures the time from the worker's alert write (``PostgresSink``, the
worker's own code path) to the webhook arriving at a local receiver. The
baseline, measured in the same run, is a bare HTTP POST to that receiver: the
floor any notifier pays.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import click
import httpx
import numpy as np
import psycopg
from tqdm import tqdm

from citywatch.stack import free_port
from core.settings import Settings
from core.vocabulary import CREW_OUTCOMES as OUTCOME_CYCLE


def _p(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


@click.command("alerts", context_settings={"auto_envvar_prefix": "CITYWATCH_BENCH_ALERTS"})
@click.option(
    "--alerts",
    "n_alerts",
    type=int,
    default=50,
    show_default=True,
    envvar="CITYWATCH_BENCH_ALERTS",
    help="Alerts to time from sink write to webhook.",
)
@click.option("--keep", is_flag=True, help="Keep the benchmark's alerts, users and labels.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.pass_obj
def bench_alerts(settings: Settings, n_alerts: int, keep: bool, as_json: bool) -> None:
    """Alert lifecycle over the API, auth checks, labels, and sink-to-webhook latency.

    Starts the embedded stack if needed, then the alert API and the notifier
    in this process, and a webhook receiver on loopback. Everything it
    creates uses a unique asset type and team, and is removed afterwards
    unless --keep. Prints lifecycle_ok, unauthorized_rejected,
    labels_from_outcomes and notify_p50_ms / notify_p99_ms next to the bare
    POST baseline.
    """
    from citywatch.runtime import connect
    from core.records import Alert
    from crew.api import create_app
    from crew.auth import create_user
    from crew.notifier import Notifier, NotifierConfig
    from crew.receiver import WebhookReceiver
    from crew.routing import add_channel, add_rule
    from crew.server import BackgroundServer
    from storage.sinks import PostgresSink, SinkBatch

    conn = connect(settings)
    run = uuid.uuid4().hex[:8]
    team, other_team, asset_type = f"bench-{run}", f"bench-other-{run}", f"bench_asset_{run}"
    with psycopg.connect(conn.database_url) as db:
        crew_token = create_user(db, f"bench-crew-{run}", "crew", team)
        other_token = create_user(db, f"bench-other-{run}", "crew", other_team)
        add_rule(db, team, asset_type=asset_type, priority=0)

    figures: dict = {"alerts_timed": n_alerts}
    sink = PostgresSink(conn.database_url, application_name="citywatch-bench-alerts")
    notifier = Notifier(
        conn.database_url, config=NotifierConfig(poll_s=1.0, escalation_check_s=3600)
    ).start()
    app = create_app(conn.database_url, rate_per_s=1000.0, burst=1000)
    t0 = datetime.now(UTC) - timedelta(hours=1)

    def alert_row(i: int, status: str = "open") -> Alert:
        opened = t0 + timedelta(seconds=i)
        return Alert(
            f"{asset_type}-{i}:{opened.isoformat()}",
            f"{asset_type}-{i}",
            f"{asset_type}-dev{i}",
            asset_type,
            status,
            opened,
            opened + timedelta(minutes=5) if status == "closed" else None,
            0.93,
            0.93 if status == "open" else 0.1,
            0.7,
            "bench",
        )

    try:
        with (
            WebhookReceiver(free_port()) as receiver,
            BackgroundServer(app, free_port()) as server,
            httpx.Client(base_url=server.url, timeout=10) as http,
        ):
            with psycopg.connect(conn.database_url) as db:
                add_channel(db, f"bench-hook-{run}", "webhook", receiver.url + "/hook", team=team)
            crew = {"Authorization": f"Bearer {crew_token}"}

            def delivered(alert_id: str, event: str, timeout: float = 10.0):
                return receiver.wait_for(
                    lambda _p, b: b["alert"]["alert_id"] == alert_id and b["event"] == event,
                    timeout,
                )

            # 1. One alert through the whole lifecycle, over the API.
            row = alert_row(0)
            sink.write(SinkBatch(alerts=[row]))
            aid = row.alert_id
            steps = [
                http.post(f"/api/v1/alerts/{aid}/acknowledge", json={}, headers=crew),
                http.post(
                    f"/api/v1/alerts/{aid}/assign",
                    json={"assignee": f"bench-crew-{run}"},
                    headers=crew,
                ),
                http.post(f"/api/v1/alerts/{aid}/comments", json={"body": "on site"}, headers=crew),
                http.post(
                    f"/api/v1/alerts/{aid}/resolve",
                    json={"outcome": "fault_confirmed"},
                    headers=crew,
                ),
            ]
            sink.write(SinkBatch(alerts=[alert_row(0, "closed")]))  # the worker closes later
            detail = http.get(f"/api/v1/alerts/{aid}", headers=crew).json()
            events = [
                delivered(aid, f"alert.{a}") for a in ("open", "acknowledge", "assign", "resolve")
            ]
            figures["lifecycle_ok"] = bool(
                all(r.status_code in (200, 201) for r in steps)
                and detail["alert"]["status"] == "resolved"
                and detail["alert"]["outcome"] == "fault_confirmed"
                and [t["action"] for t in detail["transitions"]]
                == ["open", "acknowledge", "assign", "resolve"]
                and all(events)
            )

            # 2. Refusals: no token, a wrong token, another team's crew.
            refusals = [
                http.get("/api/v1/alerts").status_code == 401,
                http.get(
                    "/api/v1/alerts", headers={"Authorization": "Bearer cw_not-a-token"}
                ).status_code
                == 401,
                http.post(
                    f"/api/v1/alerts/{aid}/comments",
                    json={"body": "x"},
                    headers={"Authorization": f"Bearer {other_token}"},
                ).status_code
                == 404,
            ]
            figures["unauthorized_rejected"] = all(refusals)

            # 3. Latency: sink write (worker path) -> webhook received.
            # Baseline: the same POST from a warm, pooled client, nothing else.
            baseline = []
            with httpx.Client(timeout=10) as bare:
                for _ in range(n_alerts):
                    start = time.monotonic()
                    bare.post(receiver.url + "/baseline", json={"alert": {"alert_id": "-"}})
                    baseline.append((time.monotonic() - start) * 1000)
            latencies = []
            ids = []
            for i in tqdm(
                range(1, n_alerts + 1), desc="alerts", disable=None if not as_json else True
            ):
                row = alert_row(i)
                start = time.monotonic()
                sink.write(SinkBatch(alerts=[row]))
                got = delivered(row.alert_id, "alert.open")
                if got is not None:
                    latencies.append((got[0] - start) * 1000)
                ids.append(row.alert_id)
            failed: dict[str, int] = {}
            for i, alert_id in enumerate(ids):
                r = http.post(
                    f"/api/v1/alerts/{alert_id}/resolve",
                    json={"outcome": OUTCOME_CYCLE[i % 3]},
                    headers=crew,
                )
                if r.status_code != 200:
                    key = f"{r.status_code} {r.text[:120]}"
                    failed[key] = failed.get(key, 0) + 1
            figures["resolve_failures"] = failed
            with psycopg.connect(conn.database_url) as db:
                figures["labels_from_outcomes"] = db.execute(
                    "SELECT count(*) FROM labels WHERE label_id = ANY(%s)",
                    ([f"alert:{a}" for a in [aid, *ids]],),
                ).fetchone()[0]
            figures["labels_expected"] = n_alerts + 1
            figures["notify_delivered"] = len(latencies)
            figures["notify_p50_ms"] = _p(latencies, 50)
            figures["notify_p99_ms"] = _p(latencies, 99)
            figures["baseline_bare_post_p50_ms"] = _p(baseline, 50)
            figures["baseline_bare_post_p99_ms"] = _p(baseline, 99)
            notifier.stop()  # before the receiver goes away: no failed retries in the log
    finally:
        notifier.stop()
        sink.close()
        if not keep:
            _clean_up(conn.database_url, run, asset_type)
    if as_json:
        click.echo(json.dumps(figures, indent=2))
    else:
        for key, value in figures.items():
            click.echo(f"{key:28s} {value}")


def _clean_up(database_url: str, run: str, asset_type: str) -> None:
    with psycopg.connect(database_url) as db:
        db.execute(
            "DELETE FROM labels WHERE label_id IN"
            " (SELECT 'alert:' || alert_id FROM alerts WHERE asset_type = %s)",
            (asset_type,),
        )
        for table in ("alert_transitions", "alert_comments"):  # deliveries cascade
            db.execute(
                f"DELETE FROM {table} WHERE alert_id IN"
                " (SELECT alert_id FROM alerts WHERE asset_type = %s)",
                (asset_type,),
            )
        db.execute("DELETE FROM alerts WHERE asset_type = %s", (asset_type,))
        db.execute(
            "DELETE FROM notification_channels WHERE channel_id = %s", (f"bench-hook-{run}",)
        )
        db.execute("DELETE FROM routing_rules WHERE asset_type = %s", (asset_type,))
        db.execute("DELETE FROM crew_users WHERE user_name LIKE %s", (f"bench-%-{run}",))
        db.execute("DELETE FROM crew_teams WHERE team LIKE %s", (f"bench-%{run}",))
