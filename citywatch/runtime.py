"""Resolve where the broker and database are, starting the embedded ones if asked.

The CLI's side of a run: it owns the embedded stack, so it turns settings into
the ``Connection`` the services work with.
"""

from __future__ import annotations

import uuid

import click

from citywatch.stack import EmbeddedStack
from core.settings import Settings
from services.connection import Connection


def connect(settings: Settings, *, start_embedded: bool = True, migrate: bool = True) -> Connection:
    """Where to connect; the schema is migrated on the way (idempotent)."""
    stack = EmbeddedStack(settings)
    if start_embedded:
        stack.up()
    kafka, database_url = stack.urls()
    if settings.broker_flavor == "auto":
        tansu = not settings.kafka
    else:
        tansu = settings.broker_flavor == "tansu"
    if migrate:
        from storage.schema import migrate as run_migrations

        run_migrations(database_url)
    return Connection(kafka, database_url, tansu)


def database_url(settings: Settings, *, migrate: bool) -> str:
    """The database to work on, for commands that need no broker."""
    stack = EmbeddedStack(settings)
    info = stack.status().get("postgres")
    if not info or not info["running"]:
        raise click.ClickException(
            "no database: set CITYWATCH_DATABASE_URL or run `citywatch stack up`"
        )
    if migrate:
        from storage.schema import migrate as run_migrations

        run_migrations(info["url"])
    return info["url"]


def bench_run(settings: Settings, *, progress: bool) -> tuple[Settings, Connection, str]:
    """Settings, connection and id of one benchmark run: topics and consumer group of
    its own on the stack (started if needed), and a champion model (trained if none)."""
    from models.bundle_store import load_champion
    from services.training import train_synthetic
    from streams.topics import ensure_topics

    run_id = uuid.uuid4().hex[:8]
    settings = settings.model_copy(
        update={"topic_prefix": f"bench-{run_id}-", "app_id": f"citywatch-bench-{run_id}"}
    )
    conn = connect(settings)
    if load_champion(settings.models_path) is None:
        train_synthetic(settings, progress=progress)
    ensure_topics(conn.kafka, settings)
    return settings, conn, run_id
