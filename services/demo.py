"""The demo's run: models ready, the worker started, a simulated fleet streamed through it
(part of it as LoRaWAN uplinks, and a water-quality station when asked), then the
pipeline's figures against the fleet's ground truth."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from core.settings import Settings
from services.connection import Connection
from services.fleet import SimulationOptions, run_fleet
from services.processes import log_size, start_worker, stop_process, wait_for_drain, wait_for_log

PIPELINE_TABLES = (
    "readings",
    "scores",
    "alerts",
    "deadletters",
    "failures",
    "score_explanations",
    "worker_stats",
    "maintenance_events",
)


def ingest_deadletters_stored(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM deadletters WHERE stage = 'ingest'").fetchone()[0]


def reset_tables(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(f"TRUNCATE {', '.join(PIPELINE_TABLES)}")


def ensure_models(
    settings: Settings, database_url: str, say: Callable[[str], Any], *, progress: bool
) -> None:
    """A registered champion, and a challenger scoring in shadow, trained if missing.

    Both come from simulator history (different fleets and seeds), so the demo
    shows the whole model lifecycle: champion scores alert, the challenger's
    are stored beside them for comparison.
    """
    from models.bundle_store import list_versions, read_champion
    from models.catalog import ModelCatalog
    from services.training import train_synthetic

    registry = ModelCatalog(database_url, settings.models_path)
    active = registry.active()
    champion = active.champion
    if champion is None:
        champion = read_champion(settings.models_path)
        if champion is None:
            say("no model yet: training one on simulator history ...")
            champion = train_synthetic(settings, progress=progress)[0].version
        registry.register(champion, owner="citywatch demo")
        registry.promote(champion, actor="citywatch demo")
    if active.challenger is None:
        others = [v for v in list_versions(settings.models_path) if v != champion]
        if others:
            challenger = others[-1]
        else:
            say("training a challenger model to score in shadow ...")
            challenger = train_synthetic(
                settings, devices=60, ticks=1500, seed=1, progress=progress, promote=False
            )[0].version
        registry.register(challenger, owner="citywatch demo")
        registry.set_challenger(challenger, actor="citywatch demo")


def model_summary(settings: Settings, database_url: str, since: datetime) -> dict:
    """Champion against challenger on the demo's readings, and one drift pass over them."""
    from models.catalog import ModelCatalog
    from models.drift import compute_drift

    active = ModelCatalog(database_url, settings.models_path).active()
    with psycopg.connect(database_url) as conn:
        n, agree, mean_diff = conn.execute(
            """
            SELECT count(*),
                   avg(((c.risk >= c.threshold) = (s.risk >= s.threshold))::int),
                   avg(abs(c.risk - s.risk))
            FROM scores c JOIN scores s ON s.device_id = c.device_id AND s.ts = c.ts
            WHERE c.role = 'champion' AND s.role = 'challenger'
            """
        ).fetchone()
        # Which model alerted (supervised failure risk or the cold-start anomaly score).
        kinds = dict(
            conn.execute(
                "SELECT coalesce(model_kind, 'failure_risk'), count(*) FROM scores"
                " WHERE role = 'champion' GROUP BY 1"
            ).fetchall()
        )
        anomaly_scored, anomaly_high = conn.execute(
            "SELECT count(anomaly_score), count(*) FILTER (WHERE anomaly_score > 1)"
            " FROM scores WHERE role = 'champion'"
        ).fetchone()
        with_ttf = conn.execute(
            "SELECT count(ttf_median_days) FROM scores WHERE role = 'champion'"
        ).fetchone()[0]
        outlook = conn.execute(
            "SELECT asset_id, outlook FROM alerts WHERE outlook IS NOT NULL"
            " ORDER BY opened_at DESC LIMIT 1"
        ).fetchone()
        alert_kinds = dict(
            conn.execute(
                "SELECT coalesce(model_kind, 'failure_risk'), count(*) FROM alerts"
                " WHERE source = 'model' GROUP BY 1"
            ).fetchall()
        )
    # The summary reports the drift; one warning per drifting feature would bury it.
    drift_log = logging.getLogger("models.drift")
    level = drift_log.level
    drift_log.setLevel(logging.ERROR)
    try:
        drift = compute_drift(
            database_url,
            settings.models_path,
            window=datetime.now(UTC) - since + timedelta(seconds=5),
        )
    finally:
        drift_log.setLevel(level)
    return {
        "champion": active.champion,
        "challenger": active.challenger,
        "shadow_scores": n,
        "alert_agreement": None if agree is None else round(float(agree), 3),
        "mean_abs_risk_diff": None if mean_diff is None else round(float(mean_diff), 4),
        "drift_features": len(drift.rows),
        "drift_alerts": len(drift.alerts),
        "drift_max_psi": round(drift.max_psi(), 3) if drift.rows else None,
        "scores_by_kind": kinds,
        "anomaly_scores": anomaly_scored,
        "anomaly_over_limit": anomaly_high,
        "alerts_by_kind": alert_kinds,
        "scores_with_ttf": with_ttf,
        "latest_outlook": None if outlook is None else f"{outlook[0]}: {outlook[1]}",
    }


@dataclass(frozen=True)
class DemoOptions:
    fleet: SimulationOptions  # the simulated fleet, streamed to Kafka
    mqtt_url: str | None = None  # route ``lorawan_share`` of the devices through it
    lorawan_share: float = 0.25
    water_quality_file: Path | None = None  # also replay this station's last 48 h


def run_demo(
    settings: Settings, conn: Connection, options: DemoOptions, say: Callable[[str], Any]
) -> dict:
    """Run the whole pipeline once on ``conn`` and return its summary."""
    worker = None
    try:
        fleet = options.fleet
        ensure_models(settings, conn.database_url, say, progress=fleet.progress)
        reset_tables(conn.database_url)
        log_path = settings.home.resolve() / "worker.log"
        wq_file = options.water_quality_file
        if wq_file is not None:
            from services import water_quality_demo as wq

            wq.enable_catalogue()  # before the worker starts: it must know the type
        say(f"starting the worker (log: {log_path}) ...")
        written = log_size(log_path)
        worker = start_worker(settings, conn, log_path)
        wait_for_log(log_path, "Worker ready", worker, timeout_s=120, after=written)
        leg = None
        if options.mqtt_url:
            from services.lorawan_demo import LorawanLeg

            leg = LorawanLeg(
                settings,
                conn,
                options.mqtt_url,
                share=options.lorawan_share,
                corrupt_rate=fleet.bad_rate,
                seed=fleet.seed,
                rate=fleet.rate,
            )
            say(
                f"routing {options.lorawan_share:.0%} of the devices through MQTT "
                f"({options.mqtt_url}) ..."
            )
        say(
            f"simulating {fleet.devices} devices at {fleet.rate:.0f} readings/s "
            f"for {fleet.duration_s:.0f}s ..."
        )
        started_at = datetime.now(UTC)
        stats = run_fleet(settings, conn, fleet, wrap_send=leg.wrap if leg else None)
        lorawan = leg.finish() if leg else {}
        wq_counts: dict = {}
        if wq_file is not None:
            say(f"replaying the last 48 h of {wq_file.name} as station {wq.ASSET} ...")
            wq_counts = wq.replay_tail(settings, conn, wq_file, hours=48)
            stats.produced += (
                wq_counts["water_quality_readings"] + wq_counts["water_quality_deadletters"]
            )
            stats.valid += wq_counts["water_quality_readings"]
        # Ingest dead letters reach the table only once the worker stores the
        # deadletter topic's stage=ingest messages; count the others apart.
        ingest_elsewhere = max(
            0, lorawan.get("ingest_deadletters", 0) - ingest_deadletters_stored(conn.database_url)
        )
        asleep = lorawan.get("readings_not_transmitted", 0)  # sensors between reports
        say("waiting for the worker to drain ...")
        wait_for_drain(conn.database_url, stats.produced - ingest_elsewhere - asleep, timeout_s=120)
        time.sleep(2 * settings.batch_within_s + 1.0)  # let the alert agent finish its batch
        stop_process(worker)
        from storage.reports import pipeline_summary

        summary = pipeline_summary(conn.database_url)
        if wq_file is not None:
            say("scoring the station's stored readings (1/6/24/48 h outlook) ...")
            wq_counts |= wq.score_stored(conn, wq.fit_demo_model(wq_file, hours=48))
        summary.update(wq_counts)
        summary["models"] = model_summary(settings, conn.database_url, started_at)
        ingest_elsewhere = max(
            0, lorawan.get("ingest_deadletters", 0) - ingest_deadletters_stored(conn.database_url)
        )
        corrupted = lorawan.get("ingest_deadletters", 0)
        summary.update(lorawan, ingest_deadletters_on_topic_only=ingest_elsewhere)
        readings_produced = stats.produced - stats.maintenance
        summary.update(
            readings_produced=readings_produced,
            readings_produced_valid=stats.valid - corrupted,
            readings_produced_bad=readings_produced - stats.valid + corrupted,
            maintenance_produced=stats.maintenance,
            all_accounted_for=stats.produced
            == summary["readings_stored"]
            + summary["deadletters"]
            + summary["maintenance_events"]
            + ingest_elsewhere
            + asleep,
            rate=fleet.rate,
            duration_s=fleet.duration_s,
            database_url=conn.database_url,
            kafka=conn.kafka,
        )
    finally:
        if worker is not None:
            stop_process(worker)
    return summary
