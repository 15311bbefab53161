"""``citywatch storage``: migrate, maintain and inspect the database."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time

import click
import psycopg

from citywatch.runtime import database_url
from core.settings import Settings

log = logging.getLogger(__name__)


def wait_for_database(url: str, timeout_s: float) -> None:
    """Connect until PostgreSQL accepts us, with exponential backoff, up to timeout_s.

    Compose starts migrate when the database's healthcheck passes, but a fresh volume's
    first start restarts the server after initialisation, and a managed database may
    be failing over: one refused first connection must not fail the whole stack.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.25
    while True:
        try:
            psycopg.connect(url, connect_timeout=5).close()
            return
        except psycopg.OperationalError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise click.ClickException(
                    f"database unreachable for {timeout_s:.0f} s: {exc}".strip()
                ) from exc
            log.warning("database not ready (%s); retrying in %.1f s", str(exc).strip(), delay)
            time.sleep(min(delay, left))
            delay = min(delay * 2, 5.0)


@click.group()
def storage() -> None:
    """Database schema, partitions, retention and rollups.

    \b
    citywatch storage migrate          apply pending migrations
    citywatch storage maintain         partitions ahead, retention, rollup refresh
    citywatch storage status           flavour, migrations, partitions, rollup freshness

    The database is CITYWATCH_DATABASE_URL, or the embedded one of `citywatch stack up`.
    """


@storage.command("migrate")
@click.option(
    "--flavour",
    type=click.Choice(["auto", "postgres", "timescaledb"]),
    envvar="CITYWATCH_STORAGE_FLAVOUR",
    default="auto",
    show_default=True,
    help="auto: TimescaleDB when the extension is available, else plain PostgreSQL. "
    "Chosen once per database; later runs keep it.",
)
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    envvar="CITYWATCH_DB_WAIT_S",
    default=60.0,
    show_default=True,
    help="Keep retrying the first connection this many seconds before giving up.",
)
@click.pass_obj
def migrate_command(settings: Settings, flavour: str, wait_s: float) -> None:
    """Apply pending schema migrations (idempotent; safe with running workers).

    Then give each service's group role exactly its grants (storage/service_roles.py)
    and create or update the login of every CITYWATCH_<LOGIN>_DB_PASSWORD that is set
    (WORKER, ALERTS, CREW_ADMIN, INGEST, SIMULATOR, TRAINER, GRAFANA). Run it as the
    database owner; weak passwords are refused before anything changes.
    """
    from storage.schema import migrate

    passwords = _login_passwords()  # refuse weak ones before touching anything
    url = database_url(settings, migrate=False)
    wait_for_database(url, wait_s)
    try:
        applied = migrate(url, flavour=flavour)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"applied: {applied}" if applied else "schema is current")
    _apply_service_roles(url, passwords)


def _login_passwords() -> dict[str, str]:
    from pydantic import ValidationError

    from services.db_logins import LoginPasswords

    try:
        return LoginPasswords().passwords()
    except ValidationError as exc:
        raise click.ClickException(
            "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        ) from exc


def _apply_service_roles(url: str, passwords: dict[str, str]) -> None:
    """Per-service group roles and grants, then the logins whose passwords are set."""
    from storage.service_roles import apply_grants, ensure_login

    with psycopg.connect(url, autocommit=True) as conn:
        skipped = apply_grants(conn)
        changed = [login for login, pw in passwords.items() if ensure_login(conn, login, pw)]
    if skipped:
        click.echo(f"roles missing, not created (no CREATEROLE): {', '.join(skipped)}")
    unchanged = [login for login in passwords if login not in changed]
    click.echo(
        f"service roles granted; logins set: {', '.join(changed) or 'none'}"
        + (f"; unchanged: {', '.join(unchanged)}" if unchanged else "")
    )


@storage.command("maintain")
@click.option(
    "--every",
    type=float,
    envvar="CITYWATCH_MAINTENANCE_INTERVAL_S",
    default=None,
    help="Repeat every SECONDS until Ctrl-C. Without it: run once and exit.",
)
@click.option(
    "--days-ahead",
    type=click.IntRange(min=1),
    envvar="CITYWATCH_PARTITION_DAYS_AHEAD",
    default=None,
    help="Daily partitions kept ready beyond today (plain PostgreSQL). [default: 7]",
)
@click.option(
    "--retention-days",
    type=click.IntRange(min=1),
    envvar="CITYWATCH_RETENTION_DAYS",
    default=None,
    help="Drop readings and scores older than this many days (whole days or chunks). "
    "Unset: keep everything.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result of a single run as JSON.")
@click.pass_obj
def maintain(
    settings: Settings,
    every: float | None,
    days_ahead: int | None,
    retention_days: int | None,
    as_json: bool,
) -> None:
    """Create partitions ahead, drop expired data and refresh the rollups.

    On plain PostgreSQL this also moves late or early rows out of the default
    partition into their own day, and recomputes the 1-minute and 1-hour
    rollups of every minute that received rows since the last run. On
    TimescaleDB it applies retention and refreshes the continuous aggregates.
    """
    from storage.maintenance import maintain_forever, run_maintenance

    url = database_url(settings, migrate=True)
    days_ahead = days_ahead or settings.partition_days_ahead
    retention_days = retention_days or settings.retention_days
    if every is None:
        result = run_maintenance(url, days_ahead=days_ahead, retention_days=retention_days)
        if as_json:
            click.echo(json.dumps(result.as_dict(), indent=2))
        else:
            click.echo(
                f"{result.flavour}: {result.partitions_created} partitions created,"
                f" {result.partitions_dropped} dropped, {result.rollup_minutes_refreshed}"
                f" rollup minutes refreshed in {result.seconds:.2f} s"
            )
        return
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    log.info("storage maintenance every %.0f s (Ctrl-C stops)", every)
    maintain_forever(
        url,
        every,
        days_ahead=days_ahead,
        retention_days=retention_days,
        stop=stop,
    )


@storage.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the full status as JSON.")
@click.pass_obj
def status(settings: Settings, as_json: bool) -> None:
    """Show the storage flavour, migrations, partitions (or chunks) and rollup freshness."""
    from storage.maintenance import storage_status

    report = storage_status(database_url(settings, migrate=False))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"flavour     {report['flavour'] or 'not migrated'}")
    versions = ", ".join(str(m["version"]) for m in report["migrations"])
    click.echo(f"migrations  {versions or 'none'}")
    for table, info in report.get("partitions", {}).items():
        click.echo(f"{table:11s} " + ", ".join(f"{k}={v}" for k, v in info.items()))
    rollups = report.get("rollups", {})
    if rollups:
        click.echo(f"newest reading  {rollups['newest_reading']}")
        for view in ("readings_1m", "readings_1h"):
            info = ", ".join(f"{k}={v}" for k, v in rollups[view].items())
            click.echo(f"{view:15s} {info}")
        if "pending_minutes" in rollups:
            click.echo(
                f"pending         {rollups['pending_minutes']} minutes to refresh, oldest"
                f" {rollups['oldest_pending_age_s']} s ago"
            )
