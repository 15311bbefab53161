"""``citywatch grafana push``: provision a live Grafana from the code, idempotently."""

from __future__ import annotations

import json

import click


@click.group()
def grafana() -> None:
    """Talk to a live Grafana (11.x) over its HTTP API."""


@grafana.command("push")
@click.option("--url", envvar="CITYWATCH_GRAFANA_URL", required=True, help="Grafana base URL.")
@click.option(
    "--token",
    envvar="CITYWATCH_GRAFANA_TOKEN",
    required=True,
    help="Service-account token with Editor (or Admin for alerting) rights.",
)
@click.option(
    "--db-url",
    envvar="CITYWATCH_GRAFANA_DB_URL",
    default="timescaledb:5432",
    show_default=True,
    help="host:port of the database as Grafana's server reaches it.",
)
@click.option(
    "--db-name", envvar="CITYWATCH_GRAFANA_DB_NAME", default="citywatch", show_default=True
)
@click.option(
    "--db-user",
    envvar="CITYWATCH_GRAFANA_DB_USER",
    default="citywatch_grafana",
    show_default=True,
    help="Read-only database role for Grafana.",
)
@click.option(
    "--db-password", envvar="CITYWATCH_GRAFANA_DB_PASSWORD", default=None, help="Its password."
)
@click.option(
    "--webhook-token",
    envvar="CITYWATCH_GRAFANA_WEBHOOK_TOKEN",
    required=True,
    help="Bearer token Grafana sends to the citywatch alert service's webhook.",
)
@click.option(
    "--rotate-secrets",
    is_flag=True,
    envvar="CITYWATCH_GRAFANA_ROTATE_SECRETS",
    help="Send the database password and webhook token even if Grafana holds some already.",
)
def push(url, token, db_url, db_name, db_user, db_password, webhook_token, rotate_secrets):
    """Provision folder, datasource, dashboards, alert rules, contact point and policy.

    Each object is read first and written only if it differs from the code, so
    running it twice changes nothing the second time. Prints a JSON report of
    what was created, updated and left unchanged.
    """
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaException

    from dashboards.push import DatabaseTarget
    from dashboards.push import push as run_push

    api = GrafanaApi.from_url(url, credential=token)
    try:
        report = run_push(
            api,
            DatabaseTarget(db_url, db_name, db_user, db_password),
            webhook_token,
            rotate_secrets=rotate_secrets,
        )
    except GrafanaException as exc:
        raise click.ClickException(
            f"Grafana at {url} answered {exc.status_code}: {exc.message}"
        ) from exc
    click.echo(json.dumps(report.as_dict(), indent=2))
