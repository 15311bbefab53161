"""``citywatch demo``: the whole pipeline on the embedded stack, then a summary."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import psycopg

from citywatch.runtime import connect
from citywatch.stack import EmbeddedStack
from core.settings import Settings
from services.demo import DemoOptions, ensure_models, reset_tables, run_demo
from services.fleet import SimulationOptions


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


def loop_lines(s: dict) -> list[str]:
    """Summary lines of the adaptive-sampling loop (empty when it did not run)."""
    if "downlinks_sent" not in s:
        return []
    lines = [
        f"  downlinks sent    {s['downlinks_sent']:>8}   ({s['downlinks_obeyed']} obeyed, "
        f"{s['downlinks_refused']} refused; {s['readings_not_transmitted']} readings not "
        "transmitted between reports)"
    ]
    for loop in s["interval_loops"][:3]:
        path = " -> ".join(f"{v // 60} min" for v in loop["intervals_s"])
        lines.append(f"  interval with risk  {loop['device']}: {path}")
    if not s["interval_loops"]:
        lines.append("  interval with risk  no sensor was sped up and restored in this run")
    return lines


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
    wq_file = None
    if water_quality:
        from services.water_quality_demo import default_file

        wq_file = default_file()
        if not wq_file.is_file():
            raise click.ClickException(f"--water-quality needs {wq_file} (CITYWATCH_DATASETS)")
    stack = EmbeddedStack(settings)
    say("starting the embedded stack (Tansu broker, PostgreSQL) ...")
    conn = connect(settings)
    try:
        options = DemoOptions(
            SimulationOptions(devices, rate, duration, bad_rate, seed, progress=not as_json),
            mqtt_url=stack.mqtt_url() if lorawan_share > 0 else None,
            lorawan_share=lorawan_share,
            water_quality_file=wq_file,
        )
        summary = run_demo(settings, conn, options, say)
    finally:
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
    from networks.scenarios import NETWORK_FILES
    from services.network_demo import format_network_summary, run_network_demo

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
