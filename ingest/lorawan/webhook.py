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
time. The response is sent only after Kafka acknowledged the reading or dead
letter the body became (at-least-once):

- ``202`` the uplink became a reading (or repeats a frame already published);
  for a JSON array of uplinks, at least one did, and ``deadletters`` counts
  the elements that became dead letters;
- ``400 {"reason", "detail"}`` it became a dead letter (malformed, unknown device, ...),
  or every element of an array did;
- ``413 {"reason": "too_large"}`` the body is over ``max_body`` (64 KiB by
  default): dead-lettered with its first 64 KiB, its size and sha256;
- ``401`` wrong secret (nothing read, nothing stored);
- ``503`` with ``Retry-After`` when Kafka or the registry's database is
  unavailable: nothing was stored, the frame is forgotten by the
  de-duplicator, so the network server's retry is handled as new.

A dead-lettered frame is safe in the ``deadletter`` topic; The Things Stack's
optional retries resend any non-2xx answer and the repeats carry the same
``deadletter_id``, so they are stored once. Bodies declaring a
``Content-Length`` over ``max_read`` (16 MiB) get ``413`` without being read,
and are only counted (``unread``): there is nothing to keep.

Network servers already merge gateways before calling a webhook, so frames are
not held: the first copy is published at once and later copies are counted.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ingest.lorawan.errors import TransientError
from ingest.lorawan.processor import UplinkProcessor
from ingest.lorawan.publisher import PublishError
from ingest.lorawan.uplink import MAX_MESSAGE_BYTES

__all__ = ["SECRET_HEADER", "create_webhook_app"]

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Citywatch-Secret"
#: Seconds a network server should wait before retrying after a 503.
RETRY_AFTER_S = 5
#: Declared bodies larger than this are refused unread (413).
MAX_READ = 16 << 20


async def _read(request: Request, limit: int) -> tuple[bytes, int, str]:
    """The first ``limit + 1`` bytes of the body, its full size and its sha256."""
    head, size, digest = bytearray(), 0, hashlib.sha256()
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
        if len(head) <= limit:
            head += chunk[: limit + 1 - len(head)]
    return bytes(head), size, digest.hexdigest()


def create_webhook_app(
    processors: dict[str, UplinkProcessor],
    secret: str,
    *,
    max_body: int = MAX_MESSAGE_BYTES,
    max_read: int = MAX_READ,
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
        Larger bodies are dead-lettered as ``too_large`` without being parsed (413).
    max_read : int
        Bodies declaring a larger ``Content-Length`` are refused unread (413).
    """
    if not secret:
        raise ValueError("a webhook secret is required (CITYWATCH_WEBHOOK_SECRET)")
    expected = secret.encode()
    lock = threading.Lock()  # one processor and producer, many request threads
    ignored: dict[str, int] = {}
    unread = dict.fromkeys(processors, 0)  # bodies refused unread, per format
    app = FastAPI(title="citywatch LoRaWAN webhooks", version="1")

    def authorised(request: Request) -> bool:
        given = request.headers.get(SECRET_HEADER, "").encode()
        return hmac.compare_digest(given, expected)

    def unavailable(processor: UplinkProcessor, exc: Exception) -> Response:
        log.error("webhook uplink not stored, answering 503: %s", exc)
        processor.stats.transient_failures += 1
        return JSONResponse(
            {"error": "temporarily unavailable, retry", "detail": str(exc)[:200]},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    def handle(fmt: str, head: bytes, size: int, sha256: str) -> Response:
        processor = processors[fmt]
        topic = f"http:{fmt}"
        with lock:
            before_dead = sum(processor.stats.deadletters.values())
            before_pub = processor.stats.published
            try:
                if size > max_body:
                    processor.too_large(topic, head, size, sha256)
                else:
                    processor.offer(topic, head, time.monotonic())
                processor.confirm()
            except (PublishError, TransientError) as exc:
                # Nothing reached Kafka for sure: the retry must not look like a repeat.
                processor.forget_last()
                return unavailable(processor, exc)
            except Exception:  # the processor contains per-frame faults; this is a bug
                processor.forget_last()
                log.exception("webhook handling failed")
                return JSONResponse({"error": "internal error, retry"}, status_code=500)
            dead = sum(processor.stats.deadletters.values()) - before_dead
            published = processor.stats.published - before_pub
            reason = processor.last_deadletter
        if dead and not published:
            status = 413 if reason[0] == "too_large" else 400
            return JSONResponse(
                {"status": "dead_letter", "reason": reason[0], "detail": reason[1], "count": dead},
                status_code=status,
            )
        # A body of several uplinks: its bad elements are stored dead letters, so a
        # retry would change nothing; the answer says how many of each.
        return JSONResponse(
            {"status": "accepted", "readings": published, "deadletters": dead}, status_code=202
        )

    async def receive(request: Request, fmt: str) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_read:
            unread[fmt] = unread.get(fmt, 0) + 1
            return JSONResponse(
                {"status": "refused", "reason": "too_large", "detail": f"{declared} bytes"},
                status_code=413,
            )
        head, size, sha256 = await _read(request, max_body)
        return await run_in_threadpool(handle, fmt, head, size, sha256)

    @app.post("/api/v1/lorawan/chirpstack")
    async def chirpstack(request: Request, event: str = "up") -> Response:
        """ChirpStack v4 HTTP integration (JSON)."""
        if not authorised(request):
            return JSONResponse({"error": "wrong or missing secret"}, status_code=401)
        if event != "up":
            ignored[event] = ignored.get(event, 0) + 1
            return Response(status_code=204)
        return await receive(request, "chirpstack")

    @app.post("/api/v1/lorawan/tts")
    async def tts(request: Request) -> Response:
        """The Things Stack v3 webhook, uplink message."""
        if not authorised(request):
            return JSONResponse({"error": "wrong or missing secret"}, status_code=401)
        return await receive(request, "tts")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/v1/lorawan/stats")
    def stats() -> dict[str, Any]:
        with lock:
            return {
                fmt: {
                    **p.stats.as_dict(),
                    "unread": unread.get(fmt, 0),
                    **({"ignored": ignored} if fmt == "chirpstack" else {}),
                }
                for fmt, p in processors.items()
            }

    return app
