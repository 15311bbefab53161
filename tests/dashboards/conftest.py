"""A database filled by a real pipeline run, shared by the dashboard tests of a session.

The simulator's readings (a few of them carrying LoRaWAN radio metadata) go through
the real worker on the real broker into the real database; then rows the worker
does not write yet on this branch are added by hand, each marked below.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from core.wire import encode_reading
from ingest.simulator import FleetSimulator
from tests.pipeline_helpers import Worker, produce, register_fleet, wait_for_total

DEVICES = 12
TICKS = 480  # 8 minutes of 1-second readings per device, ending a minute ago
LORAWAN_DEVICES = 3


def _source(device_index: int, seq: int) -> dict:
    if device_index >= LORAWAN_DEVICES:
        return {"kind": "simulator", "seq": seq}
    # The shape B's LoRaWAN ingest writes (common brief, readings.source contract).
    return {
        "kind": "lorawan",
        "network": "chirpstack",
        "f_cnt": seq,
        "f_port": 2,
        "gateways": 1 + seq % 3,
        "rssi": -95.0 - device_index * 4 - (seq % 7),
        "snr": 7.5 - device_index - (seq % 5) * 0.5,
        "sf": 9,
        "frequency": 868_100_000,
        "gateway_ids": [f"gw-{g}" for g in range(1 + seq % 3)],
        "codec": "cayenne_lpp",
    }


def _messages(fleet: FleetSimulator, start: datetime) -> list[tuple[bytes, bytes]]:
    readings, _ = fleet.history(TICKS, start, timedelta(seconds=1))
    index = {d.device_id: i for i, d in enumerate(fleet.devices)}
    messages = []
    for seq, r in enumerate(readings):
        d = r.device
        value = encode_reading(
            device_id=d.device_id,
            asset_id=d.asset_id,
            asset_type=d.asset_type,
            ts=r.ts,
            metrics=r.metrics,
            source=_source(index[d.device_id], seq),
        )
        messages.append((d.device_id.encode(), value))
    # Deliberately bad input, so the dead-letter panel has reasons to show.
    messages += [(b"bad", b'{"device_id": "trunc')] * 5
    messages += [(b"bad", json.dumps({"device_id": "nobody", "ts": "x"}).encode())] * 3
    return messages


def _add_rows_other_branches_write(c: psycopg.Connection, now: datetime) -> None:
    c.execute("TRUNCATE feature_drift")
    champion = c.execute(
        "SELECT model_version FROM scores WHERE role = 'champion' LIMIT 1"
    ).fetchone()[0]
    # Challenger scores (C scores a challenger in shadow): the champion's scores
    # shifted a little, on the same readings, under another model version.
    c.execute(
        "INSERT INTO scores (ts, device_id, asset_id, asset_type, model_version, risk,"
        " threshold, scored_at, role)"
        " SELECT ts, device_id, asset_id, asset_type, 'challenger-test',"
        "        least(1, greatest(0, risk * 0.9 + 0.03)), threshold, scored_at, 'challenger'"
        " FROM scores WHERE role = 'champion'"
        " ON CONFLICT DO NOTHING"
    )
    # Score explanations: the worker writes them only for scores at or above the
    # threshold, which a short healthy run may not reach; these keep the panel covered.
    c.execute(
        "INSERT INTO score_explanations (ts, device_id, asset_id, model_version, risk,"
        " contributions)"
        " SELECT ts, device_id, asset_id, model_version, risk,"
        "        jsonb_build_object('vibration_rms_mean_60', risk * 1.8,"
        "                           'bearing_temp_slope_60', risk * 0.9 - 0.2,"
        "                           'motor_current_std_60', -0.3 * risk, '_bias', -2.1)"
        " FROM scores WHERE role = 'champion' AND risk >= threshold * 0.5"
        " ON CONFLICT DO NOTHING"
    )
    # Sensor commands (N's downlink service): one sped-up interval per asset, now.
    c.execute("TRUNCATE downlink_commands")
    c.execute(
        "INSERT INTO downlink_commands (device_id, asset_id, command, args, reason,"
        " requested_by, status, created_at)"
        " SELECT device_id, asset_id, 'set_interval', '{\"interval_s\": 300}',"
        "        'risk 0.80 >= 0.50', 'adaptive-sampling', 'sent', %s FROM devices",
        (now,),
    )
    # Worker stats: the worker writes one row per 10 s; a minute of history for the panels.
    c.execute(
        "INSERT INTO worker_stats (ts, worker_id, consumed, stored, scored, deadletters,"
        " consumer_lag, batch_ms_p50, batch_ms_p99)"
        " SELECT t, 'worker-1', 500 * i, 495 * i, 495 * i, 5 * i, mod(i * 37, 400),"
        "        8 + mod(i, 5), 25 + mod(i, 11)"
        " FROM generate_series(1, 60) i,"
        "      LATERAL (SELECT %s::timestamptz - (60 - i) * interval '10 seconds') x(t)"
        " ON CONFLICT DO NOTHING",
        (now,),
    )
    # Feature drift (C's drift job): PSI per feature every 2 minutes of the last 10.
    c.execute(
        "INSERT INTO feature_drift (window_start, window_end, model_version, asset_type,"
        " feature, psi, n)"
        " SELECT e - interval '10 minutes', e, %s, t, f, 0.02 + 0.03 * k + 0.01 * j, 500"
        " FROM generate_series(0, 4) k,"
        "      LATERAL (SELECT %s::timestamptz - k * interval '2 minutes') w(e),"
        "      unnest(ARRAY['water_pump', 'bridge']) t,"
        "      unnest(ARRAY['vibration_rms', 'strain']) WITH ORDINALITY AS fs(f, j)"
        " ON CONFLICT DO NOTHING",
        (champion, now),
    )

    # Crew notifications (the alert service's notifier): one delivery given up after
    # its retry period and one still failing, for "Crew notifications failing".
    c.execute(
        "INSERT INTO notification_channels (channel_id, kind, target)"
        " VALUES ('dash-hook', 'webhook', 'http://127.0.0.1:9/down') ON CONFLICT DO NOTHING"
    )
    for status, age in (("failed", "7 hours"), ("pending", "20 minutes")):
        tid = c.execute(
            "INSERT INTO alert_transitions (alert_id, action, to_status, actor, fanned_out)"
            " VALUES ('dash-alert', 'open', 'open', 'system', true) RETURNING transition_id"
        ).fetchone()[0]
        c.execute(
            "INSERT INTO alert_deliveries (transition_id, channel_id, status, attempts,"
            " last_error, first_error_at, failed_at, next_attempt_at)"
            " VALUES (%s, 'dash-hook', %s, 80, 'ConnectError: connection refused',"
            "         %s::timestamptz - %s::interval,"
            "         CASE WHEN %s = 'failed' THEN %s::timestamptz - interval '1 minute' END,"
            "         %s::timestamptz + interval '5 minutes')",
            (tid, status, now, age, status, now, now),
        )
    # Water-quality outlook (K's scorer; written by the worker once I hooks it in):
    # two stations, a reading a minute for the last 20 minutes, horizons on one.
    c.execute("TRUNCATE station_outlook")
    c.execute(
        "INSERT INTO station_outlook (ts, device_id, asset_id, model_version,"
        " event_probability, alarm, p_1h, p_6h, p_24h, p_48h)"
        " SELECT %s::timestamptz - i * interval '1 minute', 'wq-' || s, 'station-' || s,"
        "        CASE s WHEN 1 THEN 'wq-test' ELSE 'wq-unsupervised' END,"
        "        0.02 + 0.01 * mod(i, 7), mod(i, 11) = 0,"
        "        CASE s WHEN 1 THEN 0.05 + 0.01 * mod(i, 5) END,"
        "        CASE s WHEN 1 THEN 0.15 + 0.01 * mod(i, 5) END,"
        "        CASE s WHEN 1 THEN 0.35 + 0.01 * mod(i, 5) END,"
        "        CASE s WHEN 1 THEN 0.55 + 0.01 * mod(i, 5) END"
        " FROM generate_series(0, 19) i, generate_series(1, 2) s",
        (now,),
    )


def _add_network_rows(c: psycopg.Connection, now: datetime) -> None:
    # Water networks (J's leak detection; streams.leaks writes these in a network run):
    # one district with three sensors, its leak statistic, a leak alert and a ranking.
    c.execute("TRUNCATE water_networks CASCADE")
    c.execute("TRUNCATE leak_candidates")
    c.execute(
        "INSERT INTO water_networks (network_id, inp_file, inp_sha256, junctions, pipes,"
        " origin_lat, origin_lon) VALUES ('dash-net', 'Hanoi_CMH.inp', 'x', 31, 34, 21.03, 105.8)"
    )
    c.execute(
        "INSERT INTO network_districts (network_id, district_id, asset_id, nodes, inlet_links)"
        " VALUES ('dash-net', 'all', 'dash-net.all', '[\"2\", \"3\"]', '[\"1\"]')"
    )
    for i, (kind, element, metric) in enumerate(
        (("node", "2", "pressure"), ("node", "3", "pressure"), ("link", "1", "flow"))
    ):
        device = f"dash-net-s{i}"
        c.execute(
            "INSERT INTO devices (device_id, asset_id, asset_type, lat, lon, installed_at)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (device_id) DO NOTHING",
            (device, device, f"network_{metric}", 21.03 + i / 1000, 105.8, now),
        )
        c.execute(
            "INSERT INTO network_sensors (device_id, network_id, district_id, element_kind,"
            " element_id, metric) VALUES (%s, 'dash-net', 'all', %s, %s, %s)",
            (device, kind, element, metric),
        )
    c.execute(
        "INSERT INTO scores (ts, device_id, asset_id, asset_type, model_version, risk,"
        " threshold) SELECT %s::timestamptz - i * interval '1 minute', 'dash-net.all',"
        " 'dash-net.all', 'network_flow', 'leak-residual-v1', 0.1 + 0.05 * mod(i, 9), 0.5"
        " FROM generate_series(0, 19) i",
        (now,),
    )
    c.execute(
        "INSERT INTO alerts (alert_id, asset_id, device_id, asset_type, status, opened_at,"
        " peak_risk, last_risk, threshold, model_version)"
        " VALUES ('dash-net.all:leak', 'dash-net.all', 'dash-net.all', 'network_flow',"
        " 'open', %s::timestamptz - interval '5 minutes', 0.9, 0.8, 0.5, 'leak-residual-v1')"
        " ON CONFLICT (alert_id) DO NOTHING",
        (now,),
    )
    c.execute(
        "INSERT INTO leak_candidates (ts, asset_id, rank, node, score, lat, lon)"
        " SELECT %s::timestamptz - interval '4 minutes', 'dash-net.all', r, (r + 1)::text,"
        " 10.0 / r, 21.03 + r / 1000.0, 105.8 FROM generate_series(1, 3) r",
        (now,),
    )


def _wait_for_alert_agent(database_url: str, timeout_s: float = 60.0) -> None:
    """Scores trail stored readings by a batch, and alerts trail scores by one more."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(database_url, autocommit=True) as c:
        while time.monotonic() < deadline:
            scored, stored = c.execute(
                "SELECT (SELECT count(*) FROM scores), (SELECT count(*) FROM readings)"
            ).fetchone()
            if scored >= stored:
                break
            time.sleep(0.3)
    time.sleep(1.5)  # one more batch window for the alert agent (batch_within_s is 0.3 s)


@pytest.fixture(scope="session")
def filled_db(conn, base_settings, trained_models, tmp_path_factory) -> str:
    """Database URL of a database holding one real pipeline run (and the extras)."""
    run = uuid.uuid4().hex[:8]
    settings = base_settings.model_copy(
        update={"topic_prefix": f"d{run}-", "app_id": f"citywatch-dash-{run}"}
    )
    with psycopg.connect(conn.database_url, autocommit=True) as c:
        c.execute(
            "TRUNCATE readings, scores, alerts, deadletters, failures, devices, labels,"
            " score_explanations, worker_stats"
        )
    fleet = FleetSimulator(n_devices=DEVICES, seed=11, initial_degrading_fraction=0.5)
    register_fleet(conn, fleet)
    now = datetime.now(UTC)
    messages = _messages(fleet, now - timedelta(seconds=TICKS + 60))
    produce(conn, settings, messages)
    log = tmp_path_factory.mktemp("dash-worker") / "worker.log"
    # Degraded assets fail and recover within minutes; a crew would keep the alert
    # open until it closes it, so the worker here never auto-closes (open-alert panels).
    os.environ["CITYWATCH_ALERT_CLOSE_AFTER"] = "1000000"
    try:
        worker = Worker(settings, conn, log).start()
    finally:
        os.environ.pop("CITYWATCH_ALERT_CLOSE_AFTER")
    try:
        assert wait_for_total(conn, len(messages), timeout_s=180) == len(messages)
        _wait_for_alert_agent(conn.database_url)
    finally:
        worker.stop()
    with psycopg.connect(conn.database_url, autocommit=True) as c:
        _add_rows_other_branches_write(c, now)
        _add_network_rows(c, now)
    return conn.database_url
