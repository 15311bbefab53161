"""``citywatch demo``: the whole pipeline on the embedded stack, then a summary."""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import psycopg

from citywatch.processes import (
    log_size,
    start_worker,
    stop_process,
    wait_for_drain,
    wait_for_log,
)
from citywatch.runtime import connect
from citywatch.stack import EmbeddedStack
from core.settings import Settings

from .simulate import SimulationOptions, run_fleet

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


def _ingest_deadletters_stored(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM deadletters WHERE stage = 'ingest'").fetchone()[0]


def reset_tables(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(f"TRUNCATE {', '.join(PIPELINE_TABLES)}")


def ensure_models(settings: Settings, database_url: str, say, *, progress: bool) -> None:
    """A registered champion, and a challenger scoring in shadow, trained if missing.

    Both come from simulator history (different fleets and seeds), so the demo
    shows the whole model lifecycle: champion scores alert, the challenger's
    are stored beside them for comparison.
    """
    from models.catalog import ModelRegistry
    from models.registry import list_versions, read_champion

    from .train import train_synthetic

    registry = ModelRegistry(database_url, settings.models_path)
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
    from models.catalog import ModelRegistry
    from models.drift import compute_drift

    active = ModelRegistry(database_url, settings.models_path).active()
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


def format_summary(s: dict) -> str:
    lines = [
        "",
        "citywatch demo summary",
        "======================",
        f"readings produced   {s['readings_produced']:>8}   "
        f"({s['readings_produced_valid']} valid, {s['readings_produced_bad']} deliberately bad)",
        f"readings stored     {s['readings_stored']:>8}",
        f"dead letters        {s['deadletters']:>8}   "
        + (", ".join(f"{k}={v}" for k, v in s["deadletters_by_reason"].items()) or "none"),
        f"maintenance events  {s['maintenance_events']:>8}   "
        f"({s.get('maintenance_produced', 0)} produced: repairs after failures; "
        "feature baselines reset)",
        f"accounted for       {'yes' if s['all_accounted_for'] else 'NO':>8}   "
        "(produced = stored + dead letters + maintenance"
        + (
            f" + {s['ingest_deadletters_on_topic_only']} ingest dead letters on the topic)"
            if s.get("ingest_deadletters_on_topic_only")
            else ")"
        ),
        f"risk scores         {s['scores']:>8}",
        f"alerts opened       {s['alerts_opened']:>8}   "
        f"({s['alerts_matching_failures']} match an injected failure, "
        f"{s['alerts_open_now']} still open)",
        f"alert precision     {_fmt(s['alert_precision']):>8}",
        f"alert recall        {_fmt(s['alert_recall']):>8}   "
        f"({s['failures_detected']} of {s['failures_injected']} failures warned before they "
        f"happened; {s['degradations_in_progress']} assets still degrading)",
        *_lorawan_lines(s),
        *_water_quality_lines(s),
        f"throughput          {_fmt(s['stored_per_s']):>8} readings/s stored "
        f"(simulator rate {s['rate']:.0f}/s)",
        f"lag                 p50 {_fmt(s['lag_p50_s'])} s, p99 {_fmt(s['lag_p99_s'])} s "
        "(reading time to row in the database)",
    ]
    m = s.get("models")
    if m:
        lines += [
            f"champion            {m['champion']}",
            f"challenger          {m['challenger']}   ({m['shadow_scores']} shadow scores, "
            f"alert agreement {_fmt(m['alert_agreement'])}, "
            f"mean |risk diff| {_fmt(m['mean_abs_risk_diff'])})",
            f"model kinds         scores {m['scores_by_kind']}, alerts {m['alerts_by_kind']}",
            f"anomaly scores      {m['anomaly_scores']:>8}   ({m['anomaly_over_limit']} over "
            "the control limit; none while a device learns its baseline)",
            f"time to failure     {m['scores_with_ttf']:>8}   scores with an interval"
            + (f"; latest alert: {m['latest_outlook']}" if m["latest_outlook"] else "")
            + ("" if m["scores_with_ttf"] else " (the champion predates remaining-life models)"),
            f"drift               {m['drift_alerts']} of {m['drift_features']} features at "
            f"PSI >= 0.2 (max {_fmt(m['drift_max_psi'])}); the demo fleet is not the "
            "training fleet",
        ]
    if s["alerts"]:
        lines += ["", "alerts:"]
        for a in s["alerts"][:20]:
            mark = "injected failure" if a["matches_failure"] else "no failure (false alarm)"
            lines.append(
                f"  {a['opened_at'][11:19]}  {a['asset_id']:<14} {a['asset_type']:<12} "
                f"peak risk {a['peak_risk']:.2f}  {a['status']:<8}  {mark}"
            )
        if len(s["alerts"]) > 20:
            lines.append(f"  ... and {len(s['alerts']) - 20} more")
    lines += ["", f"database: {s['database_url']}"]
    return "\n".join(lines)


def _water_quality_lines(s: dict) -> list[str]:
    if "water_quality_readings" not in s:
        return []
    return [
        f"water quality       {s['water_quality_readings']:>8}   readings replayed "
        f"({s['water_quality_gaps']} gaps, {s['water_quality_deadletters']} dead letters); "
        f"incident within 48 h: {_fmt(s.get('water_quality_p48h'))} "
        f"(model {s.get('water_quality_model')}, dashboard 'water quality')",
    ]


def _lorawan_lines(s: dict) -> list[str]:
    from .demo_lorawan import loop_lines

    if not s.get("lorawan_devices"):
        return []
    dead = ", ".join(f"{k}={v}" for k, v in s["ingest_deadletters_by_reason"].items()) or "none"
    return [
        f"lorawan uplinks     {s['uplinks_received']:>8}   "
        f"({s['lorawan_devices']} devices via MQTT, ChirpStack + TTS, "
        f"{s['lorawan_gateways']} gateways each)",
        f"  duplicates removed{s['uplink_duplicates_removed']:>8}   "
        f"-> {s['uplink_readings']} readings to Kafka",
        f"  ingest dead letters{s['ingest_deadletters']:>7}   {dead}",
        *loop_lines(s),
    ]


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value}"


@click.command()
@click.option("--duration", type=float, default=60.0, show_default=True, help="Seconds of traffic.")
@click.option("--devices", type=int, default=50, show_default=True)
@click.option("--rate", type=float, default=500.0, show_default=True, help="Readings per second.")
@click.option(
    "--bad-rate",
    type=float,
    default=0.01,
    show_default=True,
    help="Share of deliberately malformed messages.",
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--lorawan-share",
    envvar="CITYWATCH_DEMO_LORAWAN_SHARE",
    type=float,
    default=0.25,
    show_default=True,
    help="Share of devices sent as LoRaWAN uplinks through Mosquitto and the bridge "
    "(when Mosquitto is installed; 0 turns it off).",
)
@click.option(
    "--network",
    envvar="CITYWATCH_DEMO_NETWORK",
    default=None,
    help="Water-network demo instead: simulate this network (hanoi, net1) with a leak and "
    "show it found and located (docs/water-networks.md).",
)
@click.option(
    "--network-inp",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The network's EPANET model [default: $CITYWATCH_DATASETS/leakdb/<model>.inp].",
)
@click.option(
    "--water-quality",
    is_flag=True,
    envvar="CITYWATCH_DEMO_WATER_QUALITY",
    help="Also replay a real water-quality station's last two days (GECCO 2018, from "
    "$CITYWATCH_DATASETS) and show its 48-hour outlook.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--keep", is_flag=True, help="Leave the stack running afterwards.")
@click.pass_obj
def demo(
    settings: Settings,
    duration,
    devices,
    rate,
    bad_rate,
    seed,
    lorawan_share,
    network,
    network_inp,
    water_quality,
    as_json,
    keep,
):
    """Run broker, database, worker and simulator, then summarise what happened.

    Starts the embedded stack, trains a model if there is none, streams a
    simulated fleet with injected failures through the worker, and prints
    readings produced and stored, dead letters by reason, scores, alerts
    against ground truth (precision, recall), throughput and lag.
    """
    say = (lambda *_: None) if as_json else click.echo
    if network:
        _network_demo(settings, network, network_inp, say, as_json, keep)
        return
    stack = EmbeddedStack(settings)
    say("starting the embedded stack (Tansu broker, PostgreSQL) ...")
    conn = connect(settings)
    worker = None
    try:
        ensure_models(settings, conn.database_url, say, progress=not as_json)
        reset_tables(conn.database_url)
        log_path = settings.home.resolve() / "worker.log"
        wq_file = None
        if water_quality:
            from . import demo_water_quality as wq

            wq_file = wq.default_file()
            if not wq_file.is_file():
                raise click.ClickException(f"--water-quality needs {wq_file} (CITYWATCH_DATASETS)")
            wq.enable_catalogue()  # before the worker starts: it must know the type
        say(f"starting the worker (log: {log_path}) ...")
        written = log_size(log_path)
        worker = start_worker(settings, conn, log_path)
        wait_for_log(log_path, "Worker ready", worker, timeout_s=120, after=written)
        mqtt_url = stack.mqtt_url() if lorawan_share > 0 else None
        leg = None
        if mqtt_url:
            from .demo_lorawan import LorawanLeg

            leg = LorawanLeg(
                settings,
                conn,
                mqtt_url,
                share=lorawan_share,
                corrupt_rate=bad_rate,
                seed=seed,
                rate=rate,
            )
            say(f"routing {lorawan_share:.0%} of the devices through MQTT ({mqtt_url}) ...")
        say(f"simulating {devices} devices at {rate:.0f} readings/s for {duration:.0f}s ...")
        started_at = datetime.now(UTC)
        stats = run_fleet(
            settings,
            conn,
            SimulationOptions(devices, rate, duration, bad_rate, seed, progress=not as_json),
            wrap_send=leg.wrap if leg else None,
        )
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
            0, lorawan.get("ingest_deadletters", 0) - _ingest_deadletters_stored(conn.database_url)
        )
        asleep = lorawan.get("readings_not_transmitted", 0)  # sensors between reports
        say("waiting for the worker to drain ...")
        wait_for_drain(conn.database_url, stats.produced - ingest_elsewhere - asleep, timeout_s=120)
        time.sleep(2 * settings.batch_within_s + 1.0)  # let the alert agent finish its batch
        stop_process(worker)
        from storage.reports import pipeline_summary

        with psycopg.connect(conn.database_url) as db:
            summary = pipeline_summary(db)
        if wq_file is not None:
            say("scoring the station's stored readings (1/6/24/48 h outlook) ...")
            wq_counts |= wq.score_stored(conn, wq.fit_demo_model(wq_file, hours=48))
        summary.update(wq_counts)
        summary["models"] = model_summary(settings, conn.database_url, started_at)
        ingest_elsewhere = max(
            0, lorawan.get("ingest_deadletters", 0) - _ingest_deadletters_stored(conn.database_url)
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
            rate=rate,
            duration_s=duration,
            database_url=conn.database_url,
            kafka=conn.kafka,
        )
    finally:
        if worker is not None:
            stop_process(worker)
        if not keep:
            stack.down()
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        click.echo(format_summary(summary))
        if keep:
            click.echo("stack left running: `citywatch stack status`, `citywatch stack down`")
    if not summary["all_accounted_for"]:
        raise SystemExit(1)


def _network_demo(settings: Settings, network, inp, say, as_json: bool, keep: bool) -> None:
    from citywatch.network_demo import format_network_summary, run_network_demo
    from networks.scenarios import NETWORK_FILES

    if inp is None:
        if network not in NETWORK_FILES:
            raise click.UsageError(f"--network {network} needs --network-inp (the EPANET model)")
        data = Path(os.environ.get("CITYWATCH_DATASETS", "../shared/datasets"))
        inp = data / "leakdb" / NETWORK_FILES[network]
        if not inp.is_file():
            raise click.UsageError(f"{inp} not found: pass --network-inp")
    stack = EmbeddedStack(settings)
    say("starting the embedded stack (Tansu broker, PostgreSQL) ...")
    conn = connect(settings)
    try:
        ensure_models(settings, conn.database_url, say, progress=not as_json)
        reset_tables(conn.database_url)  # a demo counts only its own run
        with psycopg.connect(conn.database_url) as db:
            db.execute("TRUNCATE leak_candidates, network_leaks")
        summary = run_network_demo(settings, conn, network, inp, say=say, progress=not as_json)
    finally:
        if not keep:
            stack.down()
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        click.echo(format_network_summary(summary))
    if not summary["located"]:
        raise SystemExit(1)
