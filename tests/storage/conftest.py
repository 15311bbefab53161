"""Storage fixtures: a freshly created, migrated database per test on the session server.

Partition, rollup and role tests create and drop tables, partitions and
roles; a database of their own keeps the shared pipeline database untouched.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from storage.migrations import migrate


def other_database(database_url: str, name: str) -> str:
    return make_conninfo(database_url, dbname=name)


@pytest.fixture
def blank_db(conn):
    """URL of an empty database (not migrated); dropped after the test."""
    name = f"cw_storage_{uuid.uuid4().hex[:10]}"
    admin = other_database(conn.database_url, "postgres")
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    yield other_database(conn.database_url, name)
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_db(blank_db) -> str:
    """URL of a database migrated to the latest version (plain PostgreSQL flavour)."""
    migrate(blank_db)
    return blank_db
