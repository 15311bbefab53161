"""Resolve where the broker and database are, starting the embedded ones if asked."""

from __future__ import annotations

from dataclasses import dataclass

from citywatch.stack import EmbeddedStack
from core.settings import Settings


@dataclass(frozen=True)
class Connection:
    kafka: str
    database_url: str
    tansu: bool  # apply the Tansu work-arounds


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
        from storage.migrations import migrate as run_migrations

        run_migrations(database_url)
    return Connection(kafka, database_url, tansu)
