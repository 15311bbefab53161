"""``citywatch model``: the model registry (cards in the database, files in the model store)."""

from __future__ import annotations

import getpass
import json
import math
from datetime import UTC, datetime
from typing import Any

import click

from core.settings import Settings


def _registry(settings: Settings):
    from citywatch.runtime import connect
    from models.catalog import ModelCatalog

    conn = connect(settings)
    return ModelCatalog(conn.database_url, settings.models_path), conn


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=_json_default))


def _json_default(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    return str(v)


_ACTOR = click.option(
    "--actor",
    envvar="CITYWATCH_ACTOR",
    default=lambda: getpass.getuser(),
    show_default="current user",
    help="Who made the change (recorded in model_promotions).",
)
_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group()
def model() -> None:
    """List, inspect, promote and roll back risk-model versions.

    \b
    Every trained version has a model card (training data date range and
    content hash, features, metrics, intended use, limits, owner) stored in
    the database; the model files live in the model store
    (CITYWATCH_MODEL_DIR, default <home>/models). The champion alerts; a
    challenger scores in shadow beside it (role 'challenger' in scores).
    """


@model.command("list")
@_JSON
@click.pass_obj
def model_list(settings: Settings, as_json: bool) -> None:
    """Registered versions, newest first, with their role and training-data range."""
    reg, _ = _registry(settings)
    rows = reg.list()
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("no registered models (run `citywatch train`)")
    for r in rows:
        span = f"{_d(r['data_from'])} .. {_d(r['data_to'])}"
        click.echo(
            f"{r['version']:28s} {r['role'] or '-':10s} owner={r['owner'] or '-':12s} "
            f"data {span}  {','.join(r['asset_types'])}"
        )
        if r["load_failure"]:
            what = "REFUSED" if r["load_failed_stage"] == "promote" else "LOAD FAILED"
            click.echo(f"  {what} {_d(r['load_failed_at'])}: {r['load_failure']}")


def _d(v: datetime | None) -> str:
    return v.strftime("%Y-%m-%d %H:%M") if v else "?"


@model.command("show")
@click.argument("version")
@_JSON
@click.pass_obj
def model_show(settings: Settings, version: str, as_json: bool) -> None:
    """A version's model card and promotion history."""
    from models.catalog import CatalogError

    reg, _ = _registry(settings)
    try:
        row = reg.show(version)
    except (CatalogError, ValueError) as exc:
        raise _fail(exc) from exc
    if as_json:
        _echo_json(row)
        return
    card = row["card"]
    click.echo(f"version        {row['version']}  ({row['role'] or 'not active'})")
    click.echo(f"created        {card.get('created_at')}   owner {row['owner']}")
    data = card.get("training_data") or {}
    click.echo(
        f"training data  {data.get('ts_min')} .. {data.get('ts_max')}  rows={data.get('rows')} "
        f"failures={data.get('failures')} sha256={str(data.get('sha256'))[:16]}"
    )
    if data.get("labels"):
        click.echo(f"labels         {json.dumps(data['labels'])}")
    for asset_type, m in sorted((card.get("metrics") or {}).items()):
        shown = " ".join(f"{k}={_f(m.get(k))}" for k in ("auc", "precision", "recall"))
        click.echo(
            f"  {asset_type:12s} {shown} threshold={_f(m.get('threshold'))} "
            f"({m.get('threshold_strategy', m.get('skipped', ''))})"
        )
    for asset_type, names in sorted((card.get("features") or {}).items()):
        click.echo(f"  features[{asset_type}]: {len(names)} ({', '.join(names[:4])}, ...)")
    files = row.get("file_sha256")
    click.echo(
        f"files          {len(files)} with sha256 checked on every load"
        if files
        else "files          no checksums (registered before they existed; register again)"
    )
    click.echo(f"intended use   {card.get('intended_use')}")
    click.echo(f"limits         {card.get('limits')}")
    for p in row["promotions"]:
        click.echo(
            f"  {p['at']:%Y-%m-%d %H:%M:%S} {p['action']:16s} {p['role']:10s} "
            f"{p['version'] or '-'} (was {p['previous'] or '-'}) by {p['actor']}"
        )
    for f in row["load_failures"]:
        what = "refused" if f["stage"] == "promote" else "not loaded"
        click.echo(
            f"  {f['at']:%Y-%m-%d %H:%M:%S} {what:16s} {f['role']:10s} by {f['worker']}, "
            f"kept {f['kept'] or '-'}: {f['reason']}"
        )


def _f(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, int | float) and math.isfinite(v) else "n/a"


@model.command("register")
@click.argument("version")
@click.option("--owner", envvar="CITYWATCH_MODEL_OWNER", help="Override the card's owner.")
@click.pass_obj
def model_register(settings: Settings, version: str, owner: str | None) -> None:
    """Record a version saved in the model store in the database (idempotent)."""
    reg, _ = _registry(settings)
    try:
        reg.register(version, owner=owner)
    except (FileNotFoundError, ValueError) as exc:  # BundleError is a ValueError
        raise _fail(exc) from exc
    click.echo(f"registered {version}")


@model.command("promote")
@click.argument("version")
@_ACTOR
@click.pass_obj
def model_promote(settings: Settings, version: str, actor: str) -> None:
    """Make VERSION the champion; running workers switch to it without a restart.

    \b
    The bundle is loaded, checked against the sha256 of its files recorded at
    registration, and smoke-tested (one zero row per asset type) first; a
    bundle that fails is refused and the champion stays as it was.
    """
    from models.catalog import CatalogError

    reg, _ = _registry(settings)
    try:
        reg.promote(version, actor=actor)
    except (CatalogError, ValueError) as exc:
        raise _fail(exc) from exc
    click.echo(f"champion is now {version}")


@model.command("rollback")
@_ACTOR
@click.pass_obj
def model_rollback(settings: Settings, actor: str) -> None:
    """Bring back the champion the current one replaced (repeat to go further back)."""
    from models.catalog import CatalogError

    reg, _ = _registry(settings)
    try:
        version = reg.rollback(actor=actor)
    except CatalogError as exc:
        raise _fail(exc) from exc
    click.echo(f"rolled back; champion is now {version}")


@model.command("challenger")
@click.argument("version", required=False)
@click.option("--clear", is_flag=True, help="Stop shadow scoring.")
@_ACTOR
@click.pass_obj
def model_challenger(settings: Settings, version: str | None, clear: bool, actor: str) -> None:
    """Score VERSION in shadow beside the champion (scores with role 'challenger', no alerts)."""
    from models.catalog import CatalogError

    if clear == (version is not None):
        raise click.UsageError("give either a VERSION or --clear")
    reg, _ = _registry(settings)
    try:
        reg.set_challenger(None if clear else version, actor=actor)
    except (CatalogError, ValueError) as exc:
        raise _fail(exc) from exc
    click.echo("challenger cleared" if clear else f"challenger is now {version}")


def comparison_figures(raw: dict[str, Any]) -> dict[str, Any]:
    """Add precision and recall per model to the counts of ``model_comparison``."""

    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    out = {
        k: raw[k]
        for k in (
            "n",
            "mean_abs_diff",
            "correlation",
            "champion_alert_rate",
            "challenger_alert_rate",
            "agreement",
            "positives",
        )
    }
    for side in ("champion", "challenger"):
        out[f"{side}_precision"] = ratio(raw[f"{side}_tp"], raw[f"{side}_alerts"])
        out[f"{side}_recall"] = ratio(raw[f"{side}_tp"], raw["positives"])
    return {k: (float(v) if hasattr(v, "is_finite") else v) for k, v in out.items()}


@model.command("compare")
@click.option(
    "--champion",
    "champion",
    envvar="CITYWATCH_COMPARE_CHAMPION",
    help="First version [default: the champion].",
)
@click.option(
    "--challenger",
    "challenger",
    envvar="CITYWATCH_COMPARE_CHALLENGER",
    help="Second version [default: the challenger].",
)
@click.option(
    "--since",
    envvar="CITYWATCH_COMPARE_SINCE",
    help="Only readings at or after this time (ISO).",
)
@click.option(
    "--horizon",
    "horizon_s",
    type=float,
    default=3600.0,
    show_default=True,
    envvar="CITYWATCH_COMPARE_HORIZON_S",
    help="A score counts as a true alarm if its device fails within this many seconds.",
)
@_JSON
@click.pass_obj
def model_compare(settings: Settings, champion, challenger, since, horizon_s, as_json) -> None:
    """Champion vs challenger on the same readings (scores joined on device and time).

    \b
    n: readings both models scored; mean |diff| and correlation of the risks;
    each model's alert rate at its own recorded threshold; agreement (both
    alert or both stay quiet); and each model's precision and recall against
    the failures table (ground truth), a reading being positive when its
    device fails within --horizon seconds.
    """
    import psycopg

    from storage.model_registry import model_comparison

    reg, conn = _registry(settings)
    active = reg.active()
    champion = champion or active.champion
    challenger = challenger or active.challenger
    if not champion or not challenger:
        raise click.ClickException(
            "need two versions: set a challenger (`citywatch model challenger VERSION`) "
            "or pass --champion and --challenger"
        )
    start = datetime.fromisoformat(since) if since else None
    if start is not None and start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    with psycopg.connect(conn.database_url) as db:
        raw = model_comparison(db, champion, challenger, since=start, horizon_s=horizon_s)
    figures = {"champion": champion, "challenger": challenger, **comparison_figures(raw)}
    if as_json:
        _echo_json(figures)
        return
    if not figures["n"]:
        click.echo(f"no readings scored by both {champion} and {challenger} yet")
        return
    click.echo(f"{figures['n']} readings scored by both")
    click.echo(
        f"mean |risk diff| {_f(figures['mean_abs_diff'])}  "
        f"correlation {_f(figures['correlation'])}  agreement {_f(figures['agreement'])}"
    )
    for side in ("champion", "challenger"):
        click.echo(
            f"{side:10s} {figures[side]}: alert rate {_f(figures[f'{side}_alert_rate'])} "
            f"precision {_f(figures[f'{side}_precision'])} recall {_f(figures[f'{side}_recall'])}"
        )
