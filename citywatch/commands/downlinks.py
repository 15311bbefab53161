"""``citywatch downlinks run|list``: adaptive sampling, the sensors' side of the loop."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time

import click

from citywatch.runtime import connect
from core.settings import Settings

log = logging.getLogger(__name__)


@click.group(context_settings={"auto_envvar_prefix": "CITYWATCH_DOWNLINKS", "show_default": True})
def downlinks() -> None:
    """Commands to sensors: faster reporting while an asset is at risk, crews' requests."""


@downlinks.command("run")
@click.option(
    "--mqtt", "mqtt_url", envvar="CITYWATCH_MQTT", help="The network server's MQTT broker."
)
@click.option(
    "--risk-level",
    type=click.FloatRange(0, 1),
    default=0.5,
    help="Risk at or above which the sensor reports faster.",
)
@click.option(
    "--release-level",
    type=click.FloatRange(0, 1),
    default=None,
    help="With no alert open, risk below this restores the normal interval "
    "[default: risk level - 0.1].",
)
@click.option(
    "--fast-interval",
    type=click.IntRange(60, 86400),
    default=300,
    help="Reporting interval while at risk (s).",
)
@click.option(
    "--normal-interval",
    type=click.IntRange(60, 86400),
    default=900,
    help="Normal reporting interval (s).",
)
@click.option(
    "--max-per-day",
    type=click.IntRange(1, 1000),
    default=10,
    help="Downlinks per device in any 24 h (TTN fair use: 10).",
)
@click.option(
    "--min-gap",
    type=click.FloatRange(0),
    default=120.0,
    help="Least seconds between two downlinks to one device (duty cycle).",
)
@click.option(
    "--tts-api",
    envvar="CITYWATCH_TTS_API_URL",
    default=None,
    help="Send The Things Stack downlinks through its webhook API at this URL instead of "
    "MQTT; needs --tts-webhook-id and CITYWATCH_TTS_API_KEY.",
)
@click.option("--tts-webhook-id", envvar="CITYWATCH_TTS_WEBHOOK_ID", default=None)
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.pass_obj
def downlinks_run(
    settings: Settings,
    mqtt_url,
    risk_level,
    release_level,
    fast_interval,
    normal_interval,
    max_per_day,
    min_gap,
    tts_api,
    tts_webhook_id,
    duration,
) -> None:
    """Read the worker's scores and alerts, send reporting-interval commands.

    \b
    A sensor is asked for --fast-interval when its asset's risk reaches
    --risk-level or an alert opens, and for --normal-interval when the alert
    closes. Only devices whose profile has a downlink encoder are sent
    anything; each device gets at most --max-per-day downlinks, --min-gap
    apart. Crews' requests for a fresh reading (crew inbox) are sent too.
    Every command, sent or refused, is stored with its reason
    (`citywatch downlinks list`).
    """
    from ingest.lorawan.adaptive import SamplingPolicy
    from services.downlinks import DownlinkService

    if not mqtt_url:
        from citywatch.stack import EmbeddedStack

        mqtt_url = EmbeddedStack(settings).mqtt_url()
    if not mqtt_url:
        raise click.UsageError("no MQTT broker: give --mqtt or CITYWATCH_MQTT")
    if fast_interval >= normal_interval:
        raise click.UsageError("--fast-interval must be shorter than --normal-interval")
    policy = SamplingPolicy(
        risk_level=risk_level,
        release_level=release_level,
        fast_interval_s=fast_interval,
        normal_interval_s=normal_interval,
        max_per_day=max_per_day,
        min_gap_s=min_gap,
    )
    tts_http = None
    if tts_api:
        from services.downlinks import TtsWebhookApi

        if settings.tts_api_key is None or not tts_webhook_id:
            raise click.UsageError("--tts-api needs --tts-webhook-id and CITYWATCH_TTS_API_KEY")
        tts_http = TtsWebhookApi(tts_api, tts_webhook_id, settings.tts_api_key)
    conn = connect(settings)
    service = DownlinkService(settings, conn, mqtt_url, policy, tts_http=tts_http)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    deadline = time.monotonic() + duration if duration else None
    click.echo(f"downlinks: risk level {risk_level}, {fast_interval}s/{normal_interval}s")
    try:
        service.run(lambda: stop.is_set() or (deadline is not None and time.monotonic() > deadline))
    finally:
        service.close()
    click.echo(json.dumps(service.counts))


@downlinks.command("list")
@click.argument("asset_id")
@click.option("--limit", type=click.IntRange(1, 1000), default=20)
@click.option("--json", "as_json", is_flag=True, help="Print the commands as JSON.")
@click.pass_obj
def downlinks_list(settings: Settings, asset_id: str, limit: int, as_json: bool) -> None:
    """The commands sent (or refused) to ASSET_ID's sensor, newest first."""
    import psycopg

    from storage.downlink_store import commands_for_asset

    conn = connect(settings)
    with psycopg.connect(conn.database_url) as db:
        rows = commands_for_asset(db, asset_id, limit)
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=2))
        return
    for r in rows:
        args = ",".join(f"{k}={v}" for k, v in (r["args"] or {}).items())
        click.echo(
            f"{r['created_at']:%Y-%m-%d %H:%M:%S}  {r['status']:<9} {r['command']} {args}"
            f"  {r['reason']}" + (f"  ({r['detail']})" if r["detail"] else "")
        )
