"""``citywatch ingest check DIR`` and ``citywatch ingest import FILE...``: captured and
exported uplinks (a storage-integration export, a capture) through the bridge's steps."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import psycopg

from core.settings import Settings


@click.command("check")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--registry",
    "registry_file",
    envvar="CITYWATCH_CHECK_REGISTRY",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Decode and map the registered devices with this registry file (.yaml/.csv).",
)
@click.option(
    "--profile-dir",
    "profile_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Extra directory of profile:<name> codecs (before the shipped ones).",
)
@click.option(
    "--strict",
    is_flag=True,
    help="An unregistered device is a dead letter (unknown_device), as in the bridge.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the per-file results as JSON.")
@click.pass_obj
def ingest_check(
    settings: Settings,
    directory: Path,
    registry_file: Path | None,
    profile_dirs: tuple[Path, ...],
    strict: bool,
    as_json: bool,
) -> None:
    """Run every file named in DIRECTORY/manifest.csv through the bridge's parsing.

    \b
    Each file goes through the same steps as an MQTT or webhook uplink
    (splitting arrays, parsing, topic check, de-duplication, registry, codec,
    mapping) without Kafka or a database, and becomes `reading` or
    `deadletter` with a reason. The manifest's columns are file, network,
    mqtt_topic and expect (`reading` | `deadletter`); the exit status is 1
    when a result disagrees with `expect`.

    Without --strict, an uplink of a device missing from the registry counts
    as a reading (`registered: false`): it parsed, and only its registry
    entry is missing.
    """
    from ingest.lorawan.codecs import PROFILE_DIR
    from ingest.lorawan.conformance import check_directory
    from ingest.lorawan.registry import RegistryError, load_registry

    dirs = [*profile_dirs, PROFILE_DIR] if profile_dirs else None
    registry = None
    if registry_file is not None:
        try:
            registry = load_registry(registry_file, profile_dirs=dirs)
        except RegistryError as exc:
            raise click.ClickException(str(exc)) from None
    try:
        results = check_directory(directory, registry=registry, strict=strict, profile_dirs=dirs)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"manifest: {exc}") from None
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            mark = "" if r.get("agrees", True) else "   <-- expected " + r["expect"]
            reason = f"  {r['reason']}" if r.get("reason") else ""
            click.echo(f"{r['file']:<44} {r['result']:<10}{reason[:100]}{mark}")
        agree = sum(1 for r in results if r.get("agrees"))
        judged = sum(1 for r in results if "agrees" in r)
        click.echo(f"{agree}/{judged} agree with the manifest")
    if any(r.get("agrees") is False for r in results):
        raise SystemExit(1)


@click.command("import")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--format",
    "network",
    type=click.Choice(["chirpstack", "tts"]),
    default=None,
    help="Force the format [default: from each uplink's shape].",
)
@click.option(
    "--max-bytes",
    envvar="CITYWATCH_IMPORT_MAX_BYTES",
    type=click.IntRange(1024),
    default=64 << 20,
    help="Larger files are refused whole (a too_large dead letter).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counters as JSON.")
@click.pass_obj
def ingest_import(
    settings: Settings, files: tuple[Path, ...], network: str | None, max_bytes: int, as_json: bool
) -> None:
    """Publish the uplinks in FILES (one, a JSON array, or newline-delimited) to Kafka.

    \b
    For exports such as The Things Stack's storage integration (`ttn-lw-cli
    ... storage-integration get` or its HTTP stream): every uplink goes
    through the bridge's parsing, registry, codec and mapping, and becomes a
    reading or a dead letter with its reason, each element on its own.
    Devices come from the newest registry in the database (`citywatch
    devices load`); unknown devices are `unknown_device` dead letters.
    """
    from citywatch.runtime import connect
    from ingest.lorawan.dedup import FrameDeduplicator
    from ingest.lorawan.processor import UplinkProcessor
    from ingest.lorawan.publisher import KafkaPublisher
    from ingest.lorawan.registry import parse_registry
    from storage.device_registry import latest_registry
    from streams.topics import DEADLETTER, READINGS, ensure_topics

    conn = connect(settings)
    with psycopg.connect(conn.database_url) as pg:
        latest = latest_registry(pg)
    registry = parse_registry(latest[1], source=f"registry v{latest[0]}") if latest else {}
    ensure_topics(conn.kafka, settings)
    publisher = KafkaPublisher(conn.kafka, settings.topic(READINGS), settings.topic(DEADLETTER))
    processor = UplinkProcessor(
        publisher,
        registry,
        network=network,  # type: ignore[arg-type]
        channel="file",
        dedup=FrameDeduplicator(window_s=0),
        max_bytes=max_bytes,
    )
    try:
        for path in files:
            processor.offer(f"file:{path.name}", path.read_bytes(), time.monotonic())
            processor.drain()
            processor.confirm()
    finally:
        publisher.close()
    stats = processor.stats.as_dict()
    if as_json:
        click.echo(json.dumps(stats))
    else:
        click.echo(
            f"{stats['received']} uplinks: {stats['published']} readings, "
            f"{stats['duplicates']} duplicates, {stats['deadletters']} dead letters "
            f"{stats['deadletters_by_reason']}"
        )
