"""API tokens (stored hashed) and roles (rate limits are per client: ``crew.guard``).

Tokens are 256-bit random strings, so a fast SHA-256 is the right hash: there
is nothing to brute-force, unlike a human password, and every request can be
checked with one indexed lookup. Only the hash is stored; the token is shown
once when it is created.
"""

from __future__ import annotations

import hashlib
import secrets

import psycopg

from core.vocabulary import ROLES
from storage.alerts import admin
from storage.alerts.access import Actor

TOKEN_PREFIX = "cw_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def create_user(
    conn: psycopg.Connection,
    user_name: str,
    role: str,
    team: str | None = None,
    email: str | None = None,
) -> str:
    """Create (or update) a user and return a NEW token for it; only its hash is kept."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if role == "crew" and not team:
        raise ValueError("a crew user needs a team")
    admin.upsert_user(conn, user_name, role, team, email)
    token = new_token()
    admin.add_token(conn, user_name, hash_token(token))
    return token


def authenticate(conn: psycopg.Connection, token: str) -> Actor | None:
    row = admin.user_for_token(conn, hash_token(token))
    return Actor(*row) if row else None
