"""``citywatch ingest lorawan|http`` and ``citywatch devices load|list|show|versions``.

The glue between the LoRaWAN ingest code (``ingest.lorawan``), the device
registry in the database (``storage.device_registry``) and Kafka.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import click

from citywatch.runtime import connect
from core.settings import Settings
from core.weak_secrets import weakness
from services.lorawan_ingest import DatabaseRegistry, build_processor, load_registry_file

log = logging.getLogger(__name__)

FORMATS = ("chirpstack", "tts")


def _stop_on_signals() -> Callable[[], bool]:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop.is_set


def _auto_options(func):
    func = click.option(
        "--auto-register",
        envvar="CITYWATCH_AUTO_REGISTER",
        default=None,
        metavar="ASSET_TYPE",
        help="Register unknown devices as this asset type instead of dead-lettering "
        "them as unknown_device (operator opt-in; asset id auto-<dev_eui>).",
    )(func)
    func = click.option(
        "--auto-codec",
        envvar="CITYWATCH_AUTO_CODEC",
        default="passthrough",
        show_default=True,
        help="Codec for auto-registered devices.",
    )(func)
    func = click.option(
        "--registry",
        "registry_file",
        envvar="CITYWATCH_REGISTRY",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="Load this registry file into the database first (a new version if it changed).",
    )(func)
    func = click.option(
        "--max-bytes",
        envvar="CITYWATCH_INGEST_MAX_BYTES",
        type=click.IntRange(1024, 512 << 10),
        default=64 << 10,
        show_default=True,
        help="Larger uplinks are dead-lettered as too_large; a dead letter keeps at most "
        "this many raw bytes (plus the original size and sha256).",
    )(func)
    return func


@click.group()
def ingest() -> None:
    """Bring LoRaWAN uplinks into Kafka (MQTT bridge, HTTP webhooks)."""


def _tls_file(name: str, help_text: str):
    """``--mqtt-<name>`` / ``CITYWATCH_MQTT_<NAME>``: an existing file for the MQTT TLS set-up."""
    return click.option(
        f"--mqtt-{name}",
        envvar=f"CITYWATCH_MQTT_{name.upper()}",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help=help_text,
    )


@ingest.command("lorawan")
@click.option(
    "--mqtt",
    "mqtt_url",
    envvar="CITYWATCH_MQTT",
    default=None,
    help="MQTT broker, mqtt://host:port or mqtts://host:port (TLS). Default: the embedded "
    "stack's Mosquitto.",
)
@click.option(
    "--mqtt-username", envvar="CITYWATCH_MQTT_USERNAME", default=None, help="MQTT user name."
)
@click.option(
    "--mqtt-password",
    envvar="CITYWATCH_MQTT_PASSWORD",
    default=None,
    help="MQTT password; prefer the environment variable to a flag or a URL (never logged).",
)
@_tls_file("ca", "CA certificate file for mqtts:// (default: the system's CAs); implies TLS.")
@_tls_file("cert", "Client certificate for brokers that require one (with --mqtt-key).")
@_tls_file("key", "Client private key for --mqtt-cert.")
@click.option(
    "--format",
    "fmt",
    envvar="CITYWATCH_LORAWAN_FORMAT",
    type=click.Choice(FORMATS),
    required=True,
    help="Network server: ChirpStack v4 (application/+/device/+/event/up) or "
    "The Things Stack v3 (v3/+/devices/+/up).",
)
@click.option(
    "--client-id",
    envvar="CITYWATCH_MQTT_CLIENT_ID",
    default=None,
    help="MQTT client id; the broker keeps this session's messages while the bridge is "
    "down. Default: citywatch-lorawan-<format>.",
)
@click.option(
    "--dedup-window",
    envvar="CITYWATCH_DEDUP_WINDOW_S",
    type=float,
    default=0.2,
    show_default=True,
    help="Seconds a frame is held to merge copies from other gateways.",
)
@click.option(
    "--duration",
    envvar="CITYWATCH_BRIDGE_DURATION_S",
    type=float,
    default=None,
    help="Stop after this many seconds (default: run until Ctrl-C / SIGTERM).",
)
@click.option(
    "--stats-every",
    envvar="CITYWATCH_BRIDGE_STATS_S",
    type=float,
    default=10.0,
    show_default=True,
    help="Log the counters this often (seconds).",
)
@_auto_options
@click.pass_obj
def ingest_lorawan(
    settings: Settings,
    mqtt_url,
    mqtt_username,
    mqtt_password,
    mqtt_ca,
    mqtt_cert,
    mqtt_key,
    fmt,
    client_id,
    dedup_window,
    duration,
    stats_every,
    auto_register,
    auto_codec,
    registry_file,
    max_bytes,
):
    """MQTT bridge: network-server uplinks -> decode -> de-duplicate -> Kafka `readings`.

    Subscribes with QoS 1 on a persistent session and acks each MQTT message
    only after Kafka acknowledged the reading (or dead letter) it became, so
    nothing is lost across bridge or Kafka restarts. Copies of a frame from
    several gateways become one reading with the best RSSI/SNR and the gateway
    count. Unknown devices, undecodable payloads and malformed JSON go to the
    `deadletter` topic with stage=ingest and a reason. Devices come from the
    newest registry version in the database (`citywatch devices load FILE`).
    """
    from pydantic import SecretStr

    from citywatch.stack import EmbeddedStack
    from ingest.lorawan.bridge import MqttBridge
    from ingest.lorawan.mqtt_conn import parse_mqtt_url

    conn = connect(settings, start_embedded=False)
    mqtt_url = mqtt_url or EmbeddedStack(settings).mqtt_url()
    if not mqtt_url:
        raise click.ClickException("no MQTT broker: pass --mqtt or run `citywatch stack up`")
    try:
        target = parse_mqtt_url(mqtt_url).with_credentials(
            mqtt_username,
            SecretStr(mqtt_password) if mqtt_password else None,
            mqtt_ca,
            mqtt_cert,
            mqtt_key,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--mqtt") from None
    if target.password is not None and (why := weakness(target.password.get_secret_value())):
        raise click.ClickException(f"the MQTT password {why}; choose another")
    if registry_file is not None:
        result = load_registry_file(conn.database_url, registry_file)
        log.info("registry version %d (%d devices)", result.version, result.entries)
    processor = build_processor(
        settings,
        conn,
        network=fmt,
        channel="mqtt",
        dedup_window_s=dedup_window,
        auto_register=auto_register,
        auto_codec=auto_codec,
        max_bytes=max_bytes,
    )
    bridge = MqttBridge(target, fmt, processor, client_id=client_id or f"citywatch-lorawan-{fmt}")
    stopped = _stop_on_signals()
    started = time.monotonic()
    last_stats = [started]

    def should_stop() -> bool:
        now = time.monotonic()
        if now - last_stats[0] >= stats_every:
            last_stats[0] = now
            log.info("bridge %s: %s", fmt, json.dumps(processor.stats.as_dict()))
        return stopped() or (duration is not None and now - started >= duration)

    if not bridge.start():
        log.warning("not subscribed yet to %s; retrying in the background", target.redacted)
    log.info("LoRaWAN bridge (%s) running: %s -> Kafka %s", fmt, target.redacted, conn.kafka)
    stats = bridge.run(should_stop)
    processor.publisher.close()
    log.info("bridge %s stopped: %s", fmt, json.dumps(stats.as_dict()))


@ingest.command("http")
@click.option("--host", envvar="CITYWATCH_WEBHOOK_HOST", default="127.0.0.1", show_default=True)
@click.option("--port", envvar="CITYWATCH_WEBHOOK_PORT", type=int, default=8081, show_default=True)
@click.option(
    "--secret",
    envvar="CITYWATCH_WEBHOOK_SECRET",
    default=None,
    help="Shared secret expected in the X-Citywatch-Secret header (required).",
)
@_auto_options
@click.pass_obj
def ingest_http(
    settings: Settings, host, port, secret, auto_register, auto_codec, registry_file, max_bytes
):
    """HTTP webhooks for ChirpStack v4 and The Things Stack v3 uplinks.

    POST /api/v1/lorawan/chirpstack?event=up and POST /api/v1/lorawan/tts, each
    with the X-Citywatch-Secret header. The reply comes after Kafka acknowledged
    the reading: 202 accepted, 400 dead letter (with its reason), 413 body over
    --max-bytes (dead-lettered as too_large), 401 wrong secret, 503 Kafka or
    database unavailable (with Retry-After; the network server may retry).
    """
    import uvicorn

    from ingest.lorawan.webhook import create_webhook_app

    if not secret and settings.webhook_secret is not None:
        secret = settings.webhook_secret.get_secret_value()
    if not secret:
        raise click.ClickException("set CITYWATCH_WEBHOOK_SECRET (or --secret)")
    if (why := weakness(secret)) is not None:
        raise click.ClickException(f"the webhook secret {why}; choose another")
    conn = connect(settings, start_embedded=False)
    if registry_file is not None:
        load_registry_file(conn.database_url, registry_file)
    registry = DatabaseRegistry(conn.database_url)
    processors = {
        fmt: build_processor(
            settings,
            conn,
            network=fmt,
            channel="http",
            dedup_window_s=0.0,
            auto_register=auto_register,
            auto_codec=auto_codec,
            registry=registry,
            max_bytes=max_bytes,
        )
        for fmt in FORMATS
    }
    app = create_webhook_app(processors, secret, max_body=max_bytes)
    uvicorn.run(app, host=host, port=port, log_level=settings.log_level)


# -- devices ------------------------------------------------------------------


@click.group()
def devices() -> None:
    """The LoRaWAN device registry in the database (versioned)."""


@devices.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def devices_load(settings: Settings, file: Path, as_json: bool) -> None:
    """Validate a registry FILE (.yaml/.yml/.csv) and store it as a new version.

    Loading content equal to the newest version creates no version. Each
    device is upserted into `devices` (device id = DevEUI) with its zone and
    registry version, so the worker accepts its readings.
    """
    from ingest.lorawan.registry import RegistryError

    conn = connect(settings)
    try:
        result = load_registry_file(conn.database_url, file)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result.__dict__))
    else:
        what = "new version" if result.created else "unchanged, still version"
        click.echo(f"{file.name}: {result.entries} devices, {what} {result.version}")


@devices.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the devices as JSON.")
@click.pass_obj
def devices_list(settings: Settings, as_json: bool) -> None:
    """List the devices of the newest registry version."""
    from storage.device_registry import latest_registry

    conn = connect(settings)
    latest = latest_registry(conn.database_url)
    rows = latest[1] if latest else []
    if as_json:
        click.echo(json.dumps({"version": latest[0] if latest else None, "devices": rows}))
        return
    if not latest:
        click.echo("no registry loaded (citywatch devices load FILE)")
        return
    click.echo(f"registry version {latest[0]}, {len(rows)} devices")
    for r in rows:
        click.echo(
            f"{r.get('dev_eui') or r.get('device_id')}  {r['asset_id']:<16} {r['asset_type']:<12}"
            f" {r['codec']:<22} "
            f"{r.get('zone') or '-'}"
        )


@devices.command("show")
@click.argument("dev_eui")
@click.pass_obj
def devices_show(settings: Settings, dev_eui: str) -> None:
    """Show one device: its `devices` row and its entry in the newest registry."""
    from storage.device_registry import show_device

    conn = connect(settings)
    device = show_device(conn.database_url, dev_eui)
    if device is None:
        raise click.ClickException(f"no device {dev_eui}")
    click.echo(json.dumps(device, indent=2, default=str))


@devices.command("versions")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def devices_versions(settings: Settings, as_json: bool) -> None:
    """The registry's version history (when, from which file, how many devices)."""
    from storage.device_registry import registry_versions

    conn = connect(settings)
    versions = registry_versions(conn.database_url)
    if as_json:
        click.echo(json.dumps(versions, default=str))
        return
    for v in versions:
        click.echo(
            f"v{v['version']:<4} {v['loaded_at']:%Y-%m-%d %H:%M:%S}  {v['entries']:>5} devices  "
            f"{v['sha256'][:12]}  {v['source']}"
        )
