"""The API under abuse, over real HTTP to uvicorn and a real database.

Junk tokens, floods, oversized bodies (declared and streamed), framing and a
webhook-only token. "No database work" is read from the app's own connection
pool: ``requests_num`` counts every connection the app asked for.
"""

from __future__ import annotations

import json
import select
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from citywatch.stack import free_port
from crew.api import create_app
from crew.auth import create_user
from crew.server import BackgroundServer

pytestmark = pytest.mark.stack
FIXTURES = Path(__file__).parent / "fixtures"
WEBHOOK = "/api/v1/grafana/webhook"
MB20 = 20 * 1024 * 1024


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def db_requests(app) -> int:
    return app.state.pool.get_stats().get("requests_num", 0)


def junk_flood(url: str, n: int = 300) -> list[int]:
    with httpx.Client(base_url=url) as http:
        return [
            http.get("/api/v1/alerts", headers=bearer(f"cw_junk{i}")).status_code for i in range(n)
        ]


def test_junk_tokens_get_429_before_any_database_work(conn, crew_db, tokens):
    app = create_app(conn.database_url)  # the defaults `citywatch alerts serve` uses
    with BackgroundServer(app, free_port()) as server:
        codes = junk_flood(server.url)
        # The client is now locked out, even with a good token, and without a query.
        with httpx.Client(base_url=server.url) as http:
            good = http.get("/api/v1/me", headers=bearer(tokens["ana"]))
        used = db_requests(app)
    assert codes.count(401) == 10  # --auth-failures: 10 per client per minute
    assert codes.count(429) == 290
    assert good.status_code == 429 and int(good.headers["Retry-After"]) >= 1
    assert used == 10  # one token lookup per 401; none for any 429


def test_request_rate_alone_limits_a_flood(conn, crew_db):
    # With failed sign-ins unlimited, the per-client request limit (40 at once) still holds.
    app = create_app(conn.database_url, auth_failures_per_min=10_000)
    with BackgroundServer(app, free_port()) as server:
        codes = junk_flood(server.url)
        used = db_requests(app)
    assert codes.count(429) >= 200
    assert used == codes.count(401)


def raw_post(url: str, path: str, headers: dict[str, str], total: int, chunked: bool):
    """POST ``total`` bytes over a raw socket; stop sending once the server answers.

    Returns (status, bytes of body sent, seconds). A server that reads the body in
    full would let all 20 MB through before answering.
    """
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=5)
    lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", "Content-Type: application/json"]
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    piece = b"x" * 65536
    frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece
    sent, t0 = 0, time.monotonic()
    try:
        while sent < total and not select.select([sock], [], [], 0.005)[0]:
            sock.sendall(frame)
            sent += len(piece)
    except OSError:
        pass  # the server closed the connection: it stopped reading, as it should
    status_line = sock.makefile("rb").readline().decode()
    sock.close()
    return int(status_line.split()[1]), sent, time.monotonic() - t0


@pytest.fixture
def small_server(conn, crew_db):
    app = create_app(conn.database_url, max_body=64 * 1024)
    with BackgroundServer(app, free_port()) as server:
        yield app, server.url


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "streamed"])
def test_a_20mb_body_gets_413_without_being_read(small_server, tokens, chunked):
    app, url = small_server
    status, sent, seconds = raw_post(url, WEBHOOK, bearer(tokens["eve"]), MB20, chunked)
    assert status == 413
    assert sent < MB20 / 4 and seconds < 5
    if not chunked:
        assert db_requests(app) == 0  # declared too big: refused before auth
    # The server is fine afterwards.
    with httpx.Client(base_url=url) as http:
        assert http.get("/api/v1/me", headers=bearer(tokens["eve"])).status_code == 200


def test_an_unauthenticated_big_body_is_refused_unread(small_server):
    _, url = small_server
    status, sent, _ = raw_post(url, WEBHOOK, bearer("cw_junk"), MB20, chunked=True)
    assert status == 401 and sent < MB20 / 4
    status, _, _ = raw_post(url, WEBHOOK, {}, MB20, chunked=False)
    assert status == 413


def test_security_headers_on_inbox_and_api(api, tokens):
    with httpx.Client(base_url=api) as http:
        responses = [
            http.get("/inbox/"),
            http.get("/inbox/app.js"),
            http.get("/api/v1/me", headers=bearer(tokens["ana"])),
            http.get("/api/v1/me"),  # the guard's own 401
        ]
    for r in responses:
        csp = r.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self';" in csp
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Referrer-Policy"] == "no-referrer"
    # The inbox needs no inline script or style (else the CSP would block it).
    html = responses[0].text
    assert "<script>" not in html and "<style" not in html and " style=" not in html


def test_webhook_token_may_only_post_grafanas_webhook(api, crew_db):
    token = create_user(crew_db, "grafana", "webhook")
    firing = json.loads((FIXTURES / "grafana_firing.json").read_text())
    with httpx.Client(base_url=api) as http:
        r = http.post(WEBHOOK, json=firing, headers=bearer(token))
        assert r.status_code == 200 and r.json()["results"][0]["result"] == "opened"
        alert_id = r.json()["results"][0]["alert_id"]
        assert http.get("/api/v1/alerts", headers=bearer(token)).status_code == 403
        assert http.get("/api/v1/me", headers=bearer(token)).status_code == 403
        ack = http.post(f"/api/v1/alerts/{alert_id}/acknowledge", json={}, headers=bearer(token))
        assert ack.status_code == 403
    actor = crew_db.execute(
        "SELECT actor FROM alert_transitions WHERE alert_id = %s", (alert_id,)
    ).fetchone()
    assert actor == ("grafana",)
