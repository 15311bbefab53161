"""Refuse the secrets an attacker tries first: defaults from examples, and short ones.

A deployment that forgot to set a secret must fail at start-up with a message
that says which one, not run with ``citywatch`` / ``change-me`` / ``admin``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

MIN_LENGTH = 12

#: Defaults this project (or its compose file, earlier) shipped, and the usual guesses.
KNOWN_WEAK = frozenset(
    {
        "admin",
        "change-me",
        "changeme",
        "citywatch",
        "default",
        "grafana",
        "letmein",
        "mosquitto",
        "password",
        "postgres",
        "root",
        "secret",
        "test",
        "123456",
        "12345678",
        "123456789012",
    }
)


def weakness(secret: str) -> str | None:
    """Why ``secret`` must not be used, or None when it may."""
    if secret.lower() in KNOWN_WEAK:
        return "is a well-known default"
    if len(secret) < MIN_LENGTH:
        return f"is shorter than {MIN_LENGTH} characters"
    return None


def url_password_weakness(url: str) -> str | None:
    """Like :func:`weakness` for the password inside a URL; None when it has none
    (the embedded PostgreSQL trusts loopback connections and needs no password)."""
    password = urlsplit(url).password
    return None if password is None else weakness(password)
