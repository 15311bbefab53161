"""The water-network demo (``citywatch demo --network hanoi``): a leak found and located.

Registers the network, starts the worker, streams three weeks of simulated
readings with one leak (faster than real time), waits for the district's leak
alert and reports when it opened, where the worker thinks the leak is, and
whether the true node is among the first three candidates: what a crew sees
in the inbox (``citywatch alerts serve``) next to the alert, with its map.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import psycopg

from core.settings import Settings
from services.connection import Connection
from services.network_runs import run_network
from services.processes import log_size, start_worker, stop_process, wait_for_log

# Map placement of the demo networks (their models have plain metre coordinates).
ORIGINS = {"hanoi": (21.0285, 105.8542), "net1": (40.7128, -74.0060)}
DEFAULT_LEAKS = {"hanoi": "21:0.05:480", "net1": "22:0.05:480"}


def run_network_demo(
    settings: Settings,
    conn: Connection,
    network: str,
    inp: Path,
    *,
    leak: str | None = None,
    days: float = 23.0,
    speed: float = 50_000.0,
    timeout_s: float = 240.0,
    say: Callable[[str], None] = print,
    progress: bool = True,
) -> dict:
    """Run the demo on the stack behind ``conn``; return its summary."""
    from ingest.network_sim import NetworkSimOptions, parse_leak
    from storage.water_networks import alert_leak_candidates
    from streams.topics import ensure_topics

    run_id = uuid.uuid4().hex[:8]
    settings = settings.model_copy(
        update={"topic_prefix": f"net-{run_id}-", "app_id": f"citywatch-net-{run_id}"}
    )
    ensure_topics(conn.kafka, settings)
    truth = parse_leak(leak or DEFAULT_LEAKS.get(network, DEFAULT_LEAKS["hanoi"]))
    # The weeks are streamed in about a minute, stamped in the past: the worker
    # must accept old readings. Its settings come from the environment.
    os.environ["CITYWATCH_MAX_READING_AGE_DAYS"] = "0"
    log_path = settings.home.resolve() / f"worker-{network}.log"
    written = log_size(log_path)
    say(f"starting the worker (log: {log_path}) ...")
    worker = start_worker(settings, conn, log_path)
    try:
        wait_for_log(log_path, "Worker ready", worker, timeout_s=120, after=written)
        say(f"streaming {days:g} days of {network} with a leak at node {truth.node} ...")
        run = run_network(
            settings,
            conn,
            inp,
            network,
            NetworkSimOptions(days=days, leaks=(truth,), seed=7, speed=speed),
            origin=ORIGINS.get(network),
            progress=progress,
        )
        leak_at = run.start + timedelta(seconds=truth.start * 1800)
        asset = f"{network}.all"
        say("waiting for the district's leak alert ...")
        alert = None
        deadline = time.monotonic() + timeout_s
        with psycopg.connect(conn.database_url, autocommit=True) as db:
            while alert is None and time.monotonic() < deadline:
                alert = db.execute(
                    "SELECT alert_id, opened_at FROM alerts WHERE asset_id = %s"
                    " AND opened_at >= %s ORDER BY opened_at LIMIT 1",
                    (asset, run.start),
                ).fetchone()
                time.sleep(1.0)
            candidates = alert_leak_candidates(db, asset, alert[1]) if alert is not None else []
            stored, until = 0, time.monotonic() + 60
            while stored < run.readings and time.monotonic() < until:  # let the worker drain
                stored = db.execute(
                    "SELECT count(*) FROM readings WHERE asset_id = %s AND ts >= %s",
                    (asset, run.start),
                ).fetchone()[0]
                time.sleep(0.5)
    finally:
        stop_process(worker)
    top3 = [c["node"] for c in candidates[:3]]
    return {
        "network": network,
        "sensors": run.sensors,
        "readings_produced": run.readings,
        "readings_stored": stored,
        "leak": {"node": truth.node, "diameter_m": truth.diameter_m, "start": leak_at},
        "alert_id": alert[0] if alert else None,
        "alert_opened_at": alert[1] if alert else None,
        "detected_after_h": round((alert[1] - leak_at).total_seconds() / 3600, 1)
        if alert
        else None,
        "candidates": candidates,
        "located": truth.node in top3,
    }


def format_network_summary(s: dict) -> str:
    lines = [
        f"network              {s['network']}   ({s['sensors']} sensors)",
        f"readings             {s['readings_produced']} produced, {s['readings_stored']} stored",
        f"leak (ground truth)  node {s['leak']['node']}, hole {s['leak']['diameter_m']} m, "
        f"from {s['leak']['start']:%Y-%m-%d %H:%M}",
    ]
    if s["alert_id"] is None:
        lines.append("leak alert           none within the wait: not found")
        return "\n".join(lines)
    lines.append(
        f"leak alert           {s['alert_id']} opened "
        f"{s['detected_after_h']} h after the leak began"
    )
    for c in s["candidates"][:3]:
        where = f" ({c['lat']:.5f}, {c['lon']:.5f})" if c["lat"] is not None else ""
        lines.append(
            f"  candidate {c['rank']}        node {c['node']}{where}, statistic {c['score']:.1f}"
        )
    lines.append(
        f"located              {'yes' if s['located'] else 'no'}: the leak's node is "
        f"{'' if s['located'] else 'not '}among the first three candidates"
    )
    lines.append(
        "crew inbox           `citywatch alerts serve`: the alert shows these candidates on a "
        "map, with OpenStreetMap links"
    )
    return "\n".join(lines)
