"""Ingest-stage dead letters: from the ``deadletter`` topic's headers to table rows.

The LoRaWAN bridge and webhooks publish what they cannot use to the
``deadletter`` topic (value = raw bytes, headers ``reason``, ``detail``,
``stage=ingest``, ``deadletter_id``, and ``raw_size`` / ``raw_sha256`` of the
original payload, which the value may hold truncated). The worker stores them with
:func:`ingest_deadletter_row` plus its usual sink; the row's id is the
publisher's stable ``deadletter_id``, so a redelivered message is stored once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from storage.sinks import DeadLetterRow

__all__ = ["ingest_deadletter_row"]

Headers = Mapping[str, bytes | None] | Iterable[tuple[str, bytes | None]] | None


def _headers(headers: Headers) -> dict[str, str]:
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
    return {k: (v or b"").decode("utf-8", "replace") for k, v in pairs}


def ingest_deadletter_row(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
) -> DeadLetterRow | None:
    """The table row of one ``stage=ingest`` message, or None for any other message.

    Messages the worker itself published (no ``stage`` header) return None: the
    worker stored them already. A missing ``deadletter_id`` falls back to the
    message's position, a missing reason to ``unknown``.
    """
    meta = _headers(headers)
    if meta.get("stage") != "ingest":
        return None
    raw_size = meta.get("raw_size", "")
    return DeadLetterRow(
        deadletter_id=meta.get("deadletter_id") or f"{topic}:{partition}:{offset}",
        stage="ingest",
        reason=meta.get("reason") or "unknown",
        detail=meta.get("detail", ""),
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        device_id=key.decode("utf-8", "replace") if key else None,
        raw=value or b"",
        # The publisher's description of the original payload when it truncated it.
        raw_size=int(raw_size)
        if raw_size.isascii() and raw_size.isdigit() and len(raw_size) < 19
        else None,
        raw_sha256=meta.get("raw_sha256") or None,
    )
