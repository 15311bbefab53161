"""``citywatch dashboards``: build the Grafana dashboards, check their SQL, snapshot them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from core.settings import Settings


def _database_url(settings: Settings, database_url: str | None) -> str:
    import psycopg

    from citywatch.runtime import connect
    from citywatch.stack import StackError

    try:
        # The embedded stack when it runs (`citywatch stack up` / `demo --keep`).
        url = database_url or connect(settings, start_embedded=False, migrate=False).database_url
        psycopg.connect(url, connect_timeout=10).close()
    except (StackError, psycopg.Error) as exc:
        raise click.ClickException(f"no database to query: {exc}") from exc
    return url


_DB_OPTION = click.option(
    "--database-url",
    envvar="CITYWATCH_DATABASE_URL",
    default=None,
    help="PostgreSQL/TimescaleDB to query. Unset: the running embedded stack.",
)
_HOURS_OPTION = click.option(
    "--hours",
    type=float,
    envvar="CITYWATCH_DASHBOARD_HOURS",
    default=1.0,
    show_default=True,
    help="Time range: the last HOURS hours, as in Grafana's time picker.",
)


@click.group()
def dashboards() -> None:
    """Grafana dashboards as code: build the JSON, check every panel's SQL, snapshot to HTML.

    \b
    The dashboards are Python (dashboards/*.py, grafana-foundation-sdk); their JSON
    is committed under dashboards/json/ and provisioned into Grafana from there.
    """


@dashboards.command("build")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CITYWATCH_DASHBOARD_DIR",
    default=None,
    help="Where to write the dashboard JSON. Default: dashboards/json/ in the source tree.",
)
@click.option(
    "--check",
    "only_check",
    is_flag=True,
    envvar="CITYWATCH_DASHBOARDS_CHECK_ONLY",
    help="Write nothing; exit 1 if the committed JSON differs from the code.",
)
def build(out: Path | None, only_check: bool) -> None:
    """Generate dashboards/json/*.json and the alerting provisioning from the code."""
    from dashboards import catalog, provision

    if only_check:
        stale = catalog.drift() + provision.drift()
        if stale:
            raise click.ClickException(
                f"out of date: {', '.join(stale)} (run `citywatch dashboards build`)"
            )
        click.echo("dashboards/json and provisioning match the code")
        return
    for path in catalog.write_json(out or catalog.JSON_DIR):
        click.echo(f"wrote {path}")
    if out is None:
        for path in provision.write_all():
            click.echo(f"wrote {path}")


@dashboards.command("check")
@_DB_OPTION
@_HOURS_OPTION
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    envvar="CITYWATCH_DASHBOARDS_JSON",
    help="Print the full report as JSON.",
)
@click.pass_obj
def check(settings: Settings, database_url: str | None, hours: float, as_json: bool) -> None:
    """Run every panel's SQL against the database, with Grafana's macros expanded.

    Macros ($__timeFilter, $__timeFrom/To, $__interval(_ms), $__timeGroup(Alias), ...)
    are expanded for the last HOURS hours and each panel's max data points; template
    variables such as $asset take their first value from their own query. Prints
    panels, panels_with_rows (every target returned rows with data) and per-query
    errors. Exits 1 when a query fails or a panel comes back empty.
    """
    from dashboards.check import run_checks

    report = run_checks(_database_url(settings, database_url), hours=hours)
    report.pop("_results", None)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        click.echo(
            f"{report['panels']} panels in {report['dashboards']} dashboards, "
            f"{report['panels_with_rows']} with rows, {len(report['errors'])} errors"
        )
        for r in report["results"]:
            state = r["error"] or f"{r['rows_with_data']}/{r['rows']} rows with data"
            click.echo(f"  {r['dashboard']:<20} {r['kind']:<10} {r['title'][:40]:<40} {state}")
    if report["errors"] or report["panels_with_rows"] < report["panels"]:
        sys.exit(1)


@dashboards.command("snapshot")
@_DB_OPTION
@_HOURS_OPTION
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="CITYWATCH_SNAPSHOT_OUT",
    default=Path("report.html"),
    show_default=True,
    help="The HTML file to write.",
)
@click.pass_obj
def snapshot(settings: Settings, database_url: str | None, hours: float, out: Path) -> None:
    """Render every panel, from the same SQL, into one self-contained HTML page.

    The page has no external resources (inline SVG charts), so it opens offline
    and can be attached to a report or an issue.
    """
    from dashboards.snapshot import render_html

    url = _database_url(settings, database_url)
    html, summary = render_html(url, hours=hours, progress=True)
    out.write_text(html)
    click.echo(json.dumps({"out": str(out), **summary}))
