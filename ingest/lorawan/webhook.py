"""HTTP webhooks for ChirpStack v4 and The Things Stack v3 uplinks (FastAPI).

Endpoints (served by ``citywatch ingest http``, port 8081 by default):

``POST /api/v1/lorawan/chirpstack?event=up``
    ChirpStack's HTTP integration (JSON marshaler). It posts every event type
    to one URL with ``?event=<type>``; events other than ``up`` are answered
    ``204`` and counted as ignored.
``POST /api/v1/lorawan/tts``
    A The Things Stack webhook with "Uplink message" enabled.
``GET /healthz`` and ``GET /api/v1/lorawan/stats``
    Liveness, and the counters (received, published, duplicates, dead letters).

Every POST must carry the shared secret in the ``X-Citywatch-Secret`` header
(both network servers let a webhook add headers); it is compared in constant
time. Answers: ``202`` when the uplink became a reading (or was a repeat of one
already published), ``400`` with ``{"reason", "detail"}`` when it became a dead
letter, ``401`` for a wrong secret, ``503`` when Kafka did not acknowledge (the
network server retries). The response is sent only after Kafka acknowledged
the reading or dead letter: at-least-once.

Network servers already merge gateways before calling a webhook, so frames are
not held: the first copy is published at once and later copies are counted.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ingest.lorawan.bridge import UplinkProcessor
from ingest.lorawan.publisher import PublishError

__all__ = ["SECRET_HEADER", "create_webhook_app"]

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Citywatch-Secret"


def create_webhook_app(
    processors: dict[str, UplinkProcessor], secret: str, *, max_body: int = 1 << 20
) -> FastAPI:
    """Build the webhook app.

    Parameters
    ----------
    processors : dict
        ``{"chirpstack": ..., "tts": ...}``: one processor per format (with
        ``network`` forced, ``channel="http"`` and a zero de-duplication window).
    secret : str
        The shared secret; an empty secret is refused.
    max_body : int
        Larger bodies are dead-lettered as ``too_large`` without being parsed.
    """
    if not secret:
        raise ValueError("a webhook secret is required (CITYWATCH_WEBHOOK_SECRET)")
    expected = secret.encode()
    lock = threading.Lock()  # one processor and producer, many request threads
    ignored: dict[str, int] = {}
    app = FastAPI(title="citywatch LoRaWAN webhooks", version="1")

    def authorised(request: Request) -> bool:
        given = request.headers.get(SECRET_HEADER, "").encode()
        return hmac.compare_digest(given, expected)

    def handle(fmt: str, body: bytes) -> Response:
        processor = processors[fmt]
        with lock:
            before_dead = sum(processor.stats.deadletters.values())
            before_pub = processor.stats.published
            processor.offer(f"http:{fmt}", body[: max_body + 1], time.monotonic())
            try:
                processor.publisher.flush()
            except PublishError as exc:
                log.error("Kafka did not acknowledge a webhook uplink: %s", exc)
                processor.reset_dedup()
                return JSONResponse({"error": "kafka unavailable, retry"}, status_code=503)
            dead = sum(processor.stats.deadletters.values()) - before_dead
            published = processor.stats.published - before_pub
            reason = processor.last_deadletter
        if dead:
            return JSONResponse(
                {"status": "dead_letter", "reason": reason[0], "detail": reason[1]},
                status_code=400,
            )
        return JSONResponse({"status": "accepted", "readings": published}, status_code=202)

    @app.post("/api/v1/lorawan/chirpstack")
    async def chirpstack(request: Request, event: str = "up") -> Response:
        """ChirpStack v4 HTTP integration (JSON)."""
        if not authorised(request):
            return JSONResponse({"error": "wrong or missing secret"}, status_code=401)
        if event != "up":
            ignored[event] = ignored.get(event, 0) + 1
            return Response(status_code=204)
        return await run_in_threadpool(handle, "chirpstack", await request.body())

    @app.post("/api/v1/lorawan/tts")
    async def tts(request: Request) -> Response:
        """The Things Stack v3 webhook, uplink message."""
        if not authorised(request):
            return JSONResponse({"error": "wrong or missing secret"}, status_code=401)
        return await run_in_threadpool(handle, "tts", await request.body())

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/v1/lorawan/stats")
    def stats() -> dict[str, Any]:
        with lock:
            return {
                fmt: {**p.stats.as_dict(), **({"ignored": ignored} if fmt == "chirpstack" else {})}
                for fmt, p in processors.items()
            }

    return app
