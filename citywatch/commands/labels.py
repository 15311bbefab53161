"""``citywatch labels``: bring maintenance outcomes in as training labels."""

from __future__ import annotations

import json
from pathlib import Path

import click

from core.settings import Settings


@click.group()
def labels() -> None:
    """Training labels beyond the simulator's ground truth (work orders, alert outcomes)."""


@labels.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.pass_obj
def labels_import(settings: Settings, file: Path, as_json: bool) -> None:
    """Import a work-order CSV into the labels table (source 'work_order'; idempotent).

    \b
    Columns: work_order_id, asset_id, observed_at (ISO; UTC if no zone),
    outcome (fault_confirmed | false_alarm | no_access | maintenance), and
    optionally device_id and window_start; other columns are kept as detail.
    Rows that cannot be used are counted by reason and stored in the
    deadletters table (stage 'labels') with their raw text; the rest load.
    Importing the same file again adds nothing.
    """
    import psycopg

    from citywatch.runtime import connect
    from models.labels import parse_work_orders
    from storage.deadletters import insert_deadletters
    from storage.training_data import insert_labels

    try:
        parsed = parse_work_orders(file)
    except (ValueError, UnicodeDecodeError) as exc:
        raise click.ClickException(str(exc)) from exc
    conn = connect(settings)
    with psycopg.connect(conn.database_url) as db, db.transaction():
        new = insert_labels(db, parsed.labels)
        insert_deadletters(db, parsed.rejected)
    counts = {
        "file": str(file),
        "rows": parsed.rows,
        "labels": len(parsed.labels),
        "repeated_rows": parsed.repeats,
        "new": new,
        "already_imported": len(parsed.labels) - new,
        "rejected": len(parsed.rejected),
        "rejected_by_reason": parsed.reasons(),
    }
    if as_json:
        click.echo(json.dumps(counts, indent=2))
        return
    click.echo(
        f"{counts['labels']} labels ({new} new, {counts['already_imported']} already there), "
        f"{counts['rejected']} rejected"
    )
    for reason, n in sorted(counts["rejected_by_reason"].items()):
        click.echo(f"  {reason}: {n} (see the deadletters table, stage 'labels')")
