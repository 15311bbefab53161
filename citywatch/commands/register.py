"""``citywatch register``: the public AI register of the models in production use."""

from __future__ import annotations

import json
from pathlib import Path

import click

from core.settings import Settings


@click.group()
def register() -> None:
    """Publish a public AI register (static site plus JSON) of the models in use.

    \b
    One entry per model in production use: the champion (status operational),
    the challenger scoring in shadow (evaluation), and the cold-start anomaly
    model the champion runs beside it. Field names follow the Algorithmic
    Transparency Standard that Amsterdam's and Helsinki's registers use.
    """


@register.command("publish")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    envvar="CITYWATCH_REGISTER_OUT",
    help="Folder to write index.html, register.json and one JSON per entry to.",
)
@click.option(
    "--organization",
    required=True,
    envvar="CITYWATCH_REGISTER_ORGANIZATION",
    help="Responsible organization, e.g. 'City of Example'.",
)
@click.option(
    "--department",
    required=True,
    envvar="CITYWATCH_REGISTER_DEPARTMENT",
    help="Department, team or programme using the models.",
)
@click.option(
    "--contact-email",
    required=True,
    envvar="CITYWATCH_REGISTER_CONTACT_EMAIL",
    help="Where the public sends questions and objections.",
)
@click.option("--area", required=True, envvar="CITYWATCH_REGISTER_AREA", help="City or region.")
@click.option(
    "--website", default=None, envvar="CITYWATCH_REGISTER_WEBSITE", help="Where it is published."
)
@click.option(
    "--codebase-url", default=None, envvar="CITYWATCH_REGISTER_CODEBASE_URL", help="Source code."
)
@click.option(
    "--evidence",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    help="A `citywatch bench model --json` result to quote under performance (repeatable).",
)
@click.option(
    "--title",
    default="Public AI register: city infrastructure maintenance",
    show_default=True,
    envvar="CITYWATCH_REGISTER_TITLE",
)
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@click.pass_obj
def publish(
    settings: Settings,
    out: Path,
    organization: str,
    department: str,
    contact_email: str,
    area: str,
    website: str | None,
    codebase_url: str | None,
    evidence: tuple[Path, ...],
    title: str,
    as_json: bool,
) -> None:
    """Write the register of the champion and challenger models to --out."""
    from citywatch.runtime import connect
    from models.catalog import ModelCatalog
    from models.register import build_entries, write_site

    if "@" not in contact_email:
        raise click.BadParameter("needs an e-mail address", param_hint="--contact-email")
    quoted = []
    for path in evidence:
        try:
            quoted.append(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise click.ClickException(f"{path}: not JSON ({exc})") from exc
    conn = connect(settings)
    registry = ModelCatalog(conn.database_url, settings.models_path)
    active = [registry.show(r["version"]) for r in registry.list() if r["role"]]
    entries = build_entries(
        active,
        organization=organization,
        department=department,
        contact_email=contact_email,
        area=area,
        website=website,
        codebase_url=codebase_url,
        evidence=quoted,
    )
    written = write_site(entries, out, title=title)
    if as_json:
        click.echo(json.dumps(entries, indent=2, default=str))
        return
    click.echo(f"{len(entries)} entries -> {out / 'index.html'} ({len(written)} files)")
