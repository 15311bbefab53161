"""``citywatch alerts``: the crews' alert service and its administration."""

from __future__ import annotations

import json
import logging

import click
import psycopg

from core.settings import Settings
from core.vocabulary import ROLES, SEVERITIES

log = logging.getLogger(__name__)


def _database_url(settings: Settings, start_embedded: bool = False) -> str:
    from citywatch.runtime import connect

    return connect(settings, start_embedded=start_embedded).database_url


def _blank_to_none(value: str | None) -> str | None:
    return value or None


# Options without an explicit envvar read CITYWATCH_ALERTS_<SUBCOMMAND>_<OPTION>,
# e.g. CITYWATCH_ALERTS_USER_ADD_TEAM.
@click.group(context_settings={"auto_envvar_prefix": "CITYWATCH_ALERTS", "show_default": True})
def alerts() -> None:
    """Alerts for maintenance crews: the service, users, routing and channels.

    \b
    Lifecycle: open -> acknowledged -> assigned -> resolved (fault_confirmed,
    false_alarm or no_access). The worker opens alerts and resolves them
    automatically when risk falls; crews act in the inbox (/inbox) or the API
    (/docs). Resolving with an outcome writes a training label.

    \b
    Typical setup:
      citywatch alerts user add ana --role crew --team north
      citywatch alerts user add grafana --role webhook
      citywatch alerts route add --team north --zone north
      citywatch alerts channel add north-hook webhook https://example.org/hook --team north
      citywatch alerts serve

    Every option also reads an environment variable: the one shown in the
    command's --help, or CITYWATCH_ALERTS_<SUBCOMMAND>_<OPTION>
    (e.g. CITYWATCH_ALERTS_USER_ADD_TEAM).
    """


@alerts.command("serve")
@click.option("--host", envvar="CITYWATCH_ALERTS_HOST", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, envvar="CITYWATCH_ALERTS_PORT", default=8080, show_default=True)
@click.option(
    "--smtp-host",
    envvar="CITYWATCH_SMTP_HOST",
    default="127.0.0.1",
    show_default=True,
    help="SMTP relay for e-mail channels.",
)
@click.option("--smtp-port", type=int, envvar="CITYWATCH_SMTP_PORT", default=25, show_default=True)
@click.option(
    "--smtp-sender",
    envvar="CITYWATCH_SMTP_SENDER",
    default="citywatch@localhost",
    show_default=True,
    help="From address of alert e-mails.",
)
@click.option(
    "--inbox-url",
    envvar="CITYWATCH_INBOX_URL",
    default=None,
    help="Public URL of the inbox, linked from Slack messages and e-mails.",
)
@click.option(
    "--rate-limit",
    type=float,
    envvar="CITYWATCH_ALERTS_RATE_LIMIT",
    default=10.0,
    show_default=True,
    help="Requests per second per client address (burst: 4x).",
)
@click.option(
    "--auth-failures",
    type=click.IntRange(min=1),
    envvar="CITYWATCH_ALERTS_AUTH_FAILURES",
    default=10,
    show_default=True,
    help="Failed sign-ins per client per minute before it gets 429s.",
)
@click.option(
    "--max-body",
    type=click.IntRange(min=1024),
    envvar="CITYWATCH_ALERTS_MAX_BODY",
    default=64 * 1024,
    show_default=True,
    help="Largest request body in bytes (413 beyond it).",
)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    envvar="CITYWATCH_ALERTS_TRUSTED_PROXIES",
    help="Address or CIDR of a reverse proxy whose X-Forwarded-For names the client "
    "(repeatable; env: space-separated). Off by default: the peer address is the client.",
)
@click.option(
    "--retry-for",
    "retry_for_s",
    type=click.FloatRange(min=0),
    envvar="CITYWATCH_ALERTS_RETRY_FOR_S",
    default=6 * 3600.0,
    show_default=True,
    help="Seconds to keep retrying a failing delivery (from its first failure) before "
    "marking it failed.",
)
@click.option(
    "--backoff-max",
    "backoff_max_s",
    type=click.FloatRange(min=0.1),
    envvar="CITYWATCH_ALERTS_BACKOFF_MAX_S",
    default=300.0,
    show_default=True,
    help="Longest wait between two tries of a delivery (the backoff doubles from 1 s).",
)
@click.option(
    "--embedded/--no-embedded",
    envvar="CITYWATCH_ALERTS_EMBEDDED",
    default=False,
    show_default=True,
    help="Start the embedded broker and database if not running.",
)
@click.pass_obj
def serve(
    settings: Settings,
    host: str,
    port: int,
    smtp_host: str,
    smtp_port: int,
    smtp_sender: str,
    inbox_url: str | None,
    rate_limit: float,
    auth_failures: int,
    max_body: int,
    trusted_proxies: tuple[str, ...],
    retry_for_s: float,
    backoff_max_s: float,
    embedded: bool,
) -> None:
    """Run the API, the inbox, the notifier and the escalation loop until Ctrl-C.

    The inbox is at http://HOST:PORT/inbox/, the OpenAPI spec at /openapi.json
    and interactive docs at /docs. Grafana posts to /api/v1/grafana/webhook
    with a webhook token. Kafka channels publish to the stack's broker, and
    every alert resolved as fault_confirmed becomes a maintenance event on the
    readings topic, so the worker resets that device's feature baseline.
    """
    import uvicorn

    from citywatch.runtime import connect
    from crew.api import create_app
    from crew.channels import ChannelConfig
    from crew.notifier import Notifier, NotifierConfig
    from crew.repairs import RepairEvents

    conn = connect(settings, start_embedded=embedded)
    notifier = Notifier(
        conn.database_url,
        ChannelConfig(
            smtp_host=smtp_host,
            smtp_port=smtp_port,
            smtp_sender=smtp_sender,
            kafka_bootstrap=conn.kafka,
            inbox_url=inbox_url,
        ),
        NotifierConfig(retry_for_s=retry_for_s, backoff_max_s=backoff_max_s),
        # Confirmed faults were repaired: tell the worker to reset those devices' features.
        repairs=RepairEvents(conn.kafka, settings.topic("readings")),
    ).start()
    app = create_app(
        conn.database_url,
        rate_per_s=rate_limit,
        burst=max(1, int(4 * rate_limit)),
        auth_failures_per_min=auth_failures,
        max_body=max_body,
        trusted_proxies=trusted_proxies,
        health=notifier.health,  # /healthz answers 503 when the notifier is stuck
    )
    log.info("alert service on http://%s:%d/inbox/ (API docs at /docs)", host, port)
    try:
        uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower())
    finally:
        notifier.stop()


# -- users -----------------------------------------------------------------------


@alerts.group("user")
def user() -> None:
    """API users: crews (one team), engineers and admins."""


@user.command("add")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(ROLES),
    default="crew",
    help="webhook: may only post Grafana's webhook (give Grafana this one).",
)
@click.option("--team", default=None, help="The crew's team (required for crews).")
@click.option("--email", default=None, help="For e-mail channels and the record.")
@click.pass_obj
def user_add(settings: Settings, name: str, role: str, team: str | None, email: str | None) -> None:
    """Create or update a user and print a NEW API token (shown once, stored hashed)."""
    from crew.auth import create_user

    with psycopg.connect(_database_url(settings)) as conn:
        try:
            token = create_user(conn, name, role, team, email)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
    click.echo(token)


@user.command("revoke")
@click.argument("name")
@click.pass_obj
def user_revoke(settings: Settings, name: str) -> None:
    """Revoke every token of a user."""
    from storage.alerts.admin import revoke_tokens

    with psycopg.connect(_database_url(settings)) as conn:
        click.echo(f"revoked {revoke_tokens(conn, name)} token(s)")


# -- routing, escalation, channels ----------------------------------------------------


@alerts.group("route")
def route() -> None:
    """Routing rules: asset type, zone and severity -> team (first match by priority)."""


@route.command("add")
@click.option("--team", required=True)
@click.option("--asset-type", default=None, help="e.g. water_pump; omit for any.")
@click.option("--zone", default=None, help="devices.zone; omit for any.")
@click.option("--min-severity", type=click.Choice(SEVERITIES), default="info")
@click.option("--priority", type=int, default=100, show_default=True, help="Lower wins.")
@click.pass_obj
def route_add(
    settings: Settings,
    team: str,
    asset_type: str | None,
    zone: str | None,
    min_severity: str,
    priority: int,
) -> None:
    """Add a routing rule; prints its id."""
    from crew.routing import add_rule

    with psycopg.connect(_database_url(settings)) as conn:
        rule_id = add_rule(
            conn,
            team,
            asset_type=asset_type,
            zone=zone,
            min_severity=min_severity,
            priority=priority,
        )
    click.echo(f"rule {rule_id}")


@route.command("list")
@click.pass_obj
def route_list(settings: Settings) -> None:
    """Show the routing rules in the order they are tried."""
    from crew.routing import rules

    with psycopg.connect(_database_url(settings)) as conn:
        for r in rules(conn):
            click.echo(
                f"{r['rule_id']:>4} prio {r['priority']:>4}  type={r['asset_type'] or '*'}"
                f" zone={r['zone'] or '*'} severity>={r['min_severity']} -> {r['team']}"
            )


@alerts.command("escalation")
@click.option("--team", required=True)
@click.option(
    "--ack-timeout", type=int, default=None, help="Seconds without acknowledgement; omit: never."
)
@click.option("--escalate-to", default=None, help="Team that takes over after the timeout.")
@click.pass_obj
def escalation(
    settings: Settings, team: str, ack_timeout: int | None, escalate_to: str | None
) -> None:
    """Set a team's escalation policy (escalation channels have --min-level 1 or more)."""
    from crew.routing import set_escalation

    with psycopg.connect(_database_url(settings)) as conn:
        set_escalation(conn, team, ack_timeout, escalate_to)
    click.echo(f"team {team}: escalate after {ack_timeout or 'never'} s -> {escalate_to or team}")


@alerts.group("channel")
def channel() -> None:
    """Notification channels: webhook, slack, email, kafka."""


@channel.command("add")
@click.argument("channel_id")
@click.argument("kind", type=click.Choice(["webhook", "slack", "email", "kafka"]))
@click.argument("target")
@click.option("--team", default=None, help="Omit: the channel receives every team's alerts.")
@click.option("--min-level", type=int, default=0, show_default=True, help="Escalation level.")
@click.pass_obj
def channel_add(
    settings: Settings, channel_id: str, kind: str, target: str, team: str | None, min_level: int
) -> None:
    """Add or update a channel. TARGET: URL (webhook, slack), address (email) or topic (kafka)."""
    from crew.routing import add_channel

    with psycopg.connect(_database_url(settings)) as conn:
        try:
            add_channel(conn, channel_id, kind, target, team=team, min_level=min_level)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
    click.echo(f"channel {channel_id} ({kind} -> {target})")


# -- reading ----------------------------------------------------------------------


@alerts.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include resolved alerts.")
@click.option("--team", default=None)
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def list_cmd(
    settings: Settings, show_all: bool, team: str | None, limit: int, as_json: bool
) -> None:
    """List live alerts (or all), riskiest first."""
    from core.vocabulary import LIVE_STATUSES
    from storage.alerts.access import Actor
    from storage.alerts.inbox import list_alerts

    with psycopg.connect(_database_url(settings)) as conn:
        rows = list_alerts(
            conn,
            Actor("cli", "admin", None),
            statuses=None if show_all else LIVE_STATUSES,
            team=team,
            limit=limit,
        )
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=2))
        return
    if not rows:
        click.echo("no alerts")
    for r in rows:
        click.echo(
            f"{r['status']:12s} {r['severity']:8s} risk {r['last_risk']:.2f}"
            f"  {r['asset_id']:18s} team={r['team'] or '-':10s} {r['alert_id']}"
        )
