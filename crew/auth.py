"""API tokens (stored hashed), roles, and a per-token rate limit.

Tokens are 256-bit random strings, so a fast SHA-256 is the right hash: there
is nothing to brute-force, unlike a human password, and every request can be
checked with one indexed lookup. Only the hash is stored; the token is shown
once when it is created.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time

import psycopg

from storage import alert_store
from storage.alert_store import Actor

ROLES = ("crew", "engineer", "admin")
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
    alert_store.upsert_user(conn, user_name, role, team, email)
    token = new_token()
    alert_store.add_token(conn, user_name, hash_token(token))
    return token


def authenticate(conn: psycopg.Connection, token: str) -> Actor | None:
    row = alert_store.user_for_token(conn, hash_token(token))
    return Actor(*row) if row else None


class RateLimiter:
    """Token bucket per key (the API token's hash, or the client address).

    Hand-written (20 lines) rather than a dependency: one process serves the
    inbox, so an in-memory bucket is enough and needs no shared store.
    """

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> float:
        """0.0 when the request may go ahead, else seconds until it may."""
        now = time.monotonic()
        with self._lock:
            if len(self._buckets) > 10_000:  # forget idle keys (they would be full again)
                idle = self._burst / self._rate
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < idle}
            tokens, last = self._buckets.get(key, (self._burst, now))
            tokens = min(self._burst, tokens + (now - last) * self._rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self._rate
