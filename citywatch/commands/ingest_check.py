"""``citywatch ingest check DIR``: does the bridge accept what real network servers send?"""

from __future__ import annotations

import json
from pathlib import Path

import click

from citywatch.settings import Settings


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
