"""The API's front door: a pure ASGI middleware that runs before FastAPI touches a request.

In this order, for ``/api/`` paths:

1. per-client rate limits (``limits``, in memory): failed sign-ins first (a
   stricter limit), then all requests; no database work before either;
2. the body size from ``Content-Length`` (413 without reading a byte);
3. the bearer token (one pooled query); a ``webhook`` token may only post
   Grafana's webhook;
4. the body, read here up to the cap (413 past it, however it is sent), then
   replayed to the app. So no body is read before auth.

Every response gets security headers (CSP with ``frame-ancestors 'none'`` and
friends). The client is the peer address; ``X-Forwarded-For`` is believed only
from addresses in ``trusted_proxies`` (off by default), since anyone can send it.
"""

from __future__ import annotations

import ipaddress
import json
import math
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from storage.alerts.access import Actor

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ACTOR_KEY = "citywatch.actor"  # where the authenticated Actor goes in the ASGI scope
WEBHOOK_PATH = "/api/v1/grafana/webhook"

# The inbox is same-origin files only (no inline script or style), so 'self' suffices.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# FastAPI's /docs and /redoc load Swagger UI / ReDoc from jsDelivr with an inline bootstrap
# script; they show no user data, so they alone get that allowance.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "worker-src 'self' blob:; connect-src 'self'; object-src 'none'; frame-ancestors 'none'"
)
_COMMON_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


@dataclass(frozen=True)
class GuardConfig:
    rate_per_s: float = 10.0  # requests per second per client, sustained ...
    burst: int = 40  # ... with this many at once
    auth_failures_per_min: int = 10  # failed sign-ins per client per minute
    max_body: int = 64 * 1024  # bytes
    trusted_proxies: tuple[str, ...] = ()  # addresses or CIDRs whose X-Forwarded-For we believe


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        config: GuardConfig,
        authenticate: Callable[[str], Actor | None],
    ) -> None:
        self.app = app
        self.config = config
        self.authenticate = authenticate  # sync (psycopg): runs on a worker thread
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        # A burst of B at R/s: B requests per B/R seconds, over a moving window.
        window = max(1, round(config.burst / config.rate_per_s))
        self.rate: RateLimitItem = RateLimitItemPerSecond(config.burst, window)
        self.failures: RateLimitItem = RateLimitItemPerMinute(config.auth_failures_per_min)
        self.proxies = [ipaddress.ip_network(p, strict=False) for p in config.trusted_proxies]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        send = _with_security_headers(send, DOCS_CSP if _is_docs(path) else CSP)
        headers = {k.lower(): v for k, v in scope["headers"]}
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.config.max_body:
            await _reply(send, 413, f"body over {self.config.max_body} bytes")
            return
        if not path.startswith("/api/"):
            await self.app(scope, receive, send)
            return

        client = self.client_address(scope, headers)
        if not self.limiter.test(self.failures, "fail", client):
            await self._too_many(send, self.failures, "fail", client, "too many failed sign-ins")
            return
        if not self.limiter.hit(self.rate, "req", client):
            await self._too_many(send, self.rate, "req", client, "rate limit exceeded")
            return

        token = _bearer(headers.get(b"authorization", b""))
        who = await anyio.to_thread.run_sync(self.authenticate, token) if token else None
        if who is None:
            self.limiter.hit(self.failures, "fail", client)
            await _reply(send, 401, "missing or invalid token", {"WWW-Authenticate": "Bearer"})
            return
        if who.role == "webhook" and path != WEBHOOK_PATH:
            await _reply(send, 403, "a webhook token may only post Grafana's webhook")
            return

        body = await self._read_body(receive)
        if body is None:  # over the cap, or the client went away
            await _reply(send, 413, f"body over {self.config.max_body} bytes")
            return
        scope[ACTOR_KEY] = who
        await self.app(scope, _replay(body, receive), send)

    def client_address(self, scope: Scope, headers: dict[bytes, bytes]) -> str:
        peer = scope["client"][0] if scope.get("client") else "unknown"
        if not self.proxies or not self._trusted(peer):
            return peer
        # Walk right to left past our own proxies: the first other hop is the client
        # (entries left of it are whatever the client chose to send).
        hops = [h.strip() for h in headers.get(b"x-forwarded-for", b"").decode().split(",")]
        for hop in reversed([h for h in hops if h]):
            if not self._trusted(hop):
                return hop
        return peer

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.proxies)

    async def _read_body(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.config.max_body:
                return None  # stop reading: the server closes the connection after the 413
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_many(
        self, send: Send, item: RateLimitItem, kind: str, client: str, detail: str
    ) -> None:
        reset = self.limiter.get_window_stats(item, kind, client).reset_time
        wait = max(1, math.ceil(reset - time.time()))
        await _reply(send, 429, detail, {"Retry-After": str(wait)})


def _is_docs(path: str) -> bool:
    return path.startswith(("/docs", "/redoc"))


def _bearer(value: bytes) -> str | None:
    scheme, _, token = value.decode("latin-1").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _with_security_headers(send: Send, csp: str) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            present = {k.lower() for k, _ in message.get("headers", [])}
            extra = [(b"content-security-policy", csp.encode()), *_COMMON_HEADERS]
            message["headers"] = [
                *message.get("headers", []),
                *((k, v) for k, v in extra if k not in present),
            ]
        await send(message)

    return wrapped


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as ASGI expects

    return replay


async def _reply(
    send: Send, status: int, detail: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw: Iterable[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": list(raw)})
    await send({"type": "http.response.body", "body": body})
