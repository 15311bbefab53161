"""Fixtures for deployment tests: a fresh database with the per-service roles and logins."""

from __future__ import annotations

import secrets
import uuid

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from storage.migrations import migrate
from storage.service_roles import LOGINS, apply_grants, ensure_login


@pytest.fixture
def roles_db(conn):
    """``(owner_url, {login: url})`` of a new migrated database with every service login.

    Logins are cluster-wide and shared by tests (they get fresh random passwords);
    the grants belong to this database, which is dropped afterwards.
    """
    name = f"cw_roles_{uuid.uuid4().hex[:10]}"
    admin = make_conninfo(conn.database_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    owner = make_conninfo(conn.database_url, dbname=name)
    migrate(owner)
    passwords = {login: secrets.token_urlsafe(18) for login in LOGINS}
    with psycopg.connect(owner, autocommit=True) as c:
        apply_grants(c)
        for login, password in passwords.items():
            ensure_login(c, login, password)
    urls = {
        login: make_conninfo(owner, user=login, password=password)
        for login, password in passwords.items()
    }
    yield owner, urls
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
