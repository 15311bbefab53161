"""Dead letters in the database: what could not be used, with why and the raw bytes.

Every dead-letter row is a :class:`core.records.DeadLetter`, whoever refused the
input (the worker, the LoRaWAN bridge via the ``deadletter`` topic, the work-order
import); :func:`deadletter_values` turns it into table values, so each column is
bounded and cleaned in one place.

Ingest-stage dead letters arrive on the ``deadletter`` topic (value = raw bytes,
headers ``reason``, ``detail``, ``stage=ingest``, ``deadletter_id``, and ``raw_size`` /
``raw_sha256`` of the original payload, which the value may hold truncated). The worker
stores them with :func:`ingest_deadletter_row` plus its usual sink; the row's id is the
publisher's stable ``deadletter_id``, so a redelivered message is stored once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg

from core.records import DeadLetter
from storage.tables import table_of

__all__ = [
    "DEADLETTERS",
    "MAX_DEADLETTER_TEXT",
    "deadletter_values",
    "ingest_deadletter_row",
    "insert_deadletters",
    "safe_text",
]

#: Longest text kept in a dead letter's ``detail`` and ``device_id`` columns.
MAX_DEADLETTER_TEXT = 2000


def safe_text(value: object, limit: int = MAX_DEADLETTER_TEXT) -> str:
    """Text PostgreSQL will take whatever arrived: no NUL, no lone surrogate, bounded.

    Dead letters carry attacker-chosen strings (ids, exception messages); one
    NUL would make the whole batch's transaction fail.
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[:limit] + f"... ({len(text)} chars)"
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")


def deadletter_values(d: DeadLetter) -> tuple:
    """The dead letter's values in field order, each bounded and cleaned."""
    return (
        safe_text(d.deadletter_id, 200),
        d.stage,
        safe_text(d.reason, 64),
        safe_text(d.detail),
        None if d.source_topic is None else safe_text(d.source_topic, 300),
        d.source_partition,
        d.source_offset,
        None if d.device_id is None else safe_text(d.device_id, 200),
        d.raw,
        len(d.raw) if d.raw_size is None else d.raw_size,
        hashlib.sha256(d.raw).hexdigest() if d.raw_sha256 is None else safe_text(d.raw_sha256, 64),
    )


DEADLETTERS = table_of(
    "deadletters", DeadLetter, types={"source_partition": "int4"}, values=deadletter_values
)
_INSERT = (
    f"INSERT INTO deadletters ({', '.join(DEADLETTERS.columns)})"
    f" VALUES ({', '.join(['%s'] * len(DEADLETTERS.columns))})"
    " ON CONFLICT (deadletter_id) DO NOTHING"
)
# What a dead letter from outside any topic (a file import) has no value for.
_NOT_FROM_A_TOPIC = {
    "source_topic": None,
    "source_partition": None,
    "source_offset": None,
    "device_id": None,
}


def insert_deadletters(
    conn: psycopg.Connection, rows: Sequence[DeadLetter | Mapping[str, Any]]
) -> int:
    """Store rejected input; idempotent. Mappings hold at least ``deadletter_id, stage,
    reason, detail, raw``. Returns the rows new to the table."""
    new = 0
    with conn.cursor() as cur:
        for r in rows:
            letter = r if isinstance(r, DeadLetter) else DeadLetter(**{**_NOT_FROM_A_TOPIC, **r})
            cur.execute(_INSERT, deadletter_values(letter))
            new += cur.rowcount
    return new


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
) -> DeadLetter | None:
    """The table row of one ``stage=ingest`` message, or None for any other message.

    Messages the worker itself published (no ``stage`` header) return None: the
    worker stored them already. A missing ``deadletter_id`` falls back to the
    message's position, a missing reason to ``unknown``.
    """
    meta = _headers(headers)
    if meta.get("stage") != "ingest":
        return None
    raw_size = meta.get("raw_size", "")
    return DeadLetter(
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
