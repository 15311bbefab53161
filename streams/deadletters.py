"""The worker's dead letters: rows for the table, headers for the ``deadletter`` topic.

Every way a message of the ``readings`` or ``scores`` topic can become a dead
letter is built here: refused by validation, a duplicate found in the
database, or poison (its processing kept raising). docs/delivery.md lists the
reasons.
"""

from __future__ import annotations

import hashlib

from core.records import DeadLetter, Reading
from storage.deadletters import MAX_DEADLETTER_TEXT

from .containment import describe
from .validation import Rejection


def deadletter_row(
    rejection: Rejection, message, raw: bytes | None, stage: str = "validate"
) -> DeadLetter:
    """The dead letter of one Kafka message, identified by its position."""
    return DeadLetter(
        deadletter_id=f"{message.topic}:{message.partition}:{message.offset}",
        stage=stage,
        reason=rejection.reason,
        detail=rejection.detail,
        source_topic=message.topic,
        source_partition=message.partition,
        source_offset=message.offset,
        device_id=rejection.device_id,
        raw=raw or b"",
    )


#: Raw bytes republished with a worker dead letter (the table keeps them whole).
MAX_REPUBLISHED_RAW = 65536


def deadletter_headers(reason: str, raw: bytes) -> dict[str, bytes]:
    """Headers of a worker dead letter on the ``deadletter`` topic (no ``stage``: the
    worker stored it already, so its own dead-letter agent skips it)."""
    return {
        "reason": reason.encode(),
        "raw_size": str(len(raw)).encode(),
        "raw_sha256": hashlib.sha256(raw).hexdigest().encode(),
    }


def poison_row(event, stage: str, exc: BaseException) -> DeadLetter:
    """The dead letter of a message whose processing kept raising."""
    message = event.message
    device_id = (message.key or b"").decode("utf-8", "replace")[:200] or None
    rejection = Rejection("poison", describe(exc, MAX_DEADLETTER_TEXT - 100), device_id)
    return deadletter_row(rejection, message, message.value, stage)


def duplicate_deadletter(row: Reading, message) -> DeadLetter:
    """The dead letter of a reading the sink could not store because another
    message's reading of the device at that time is stored."""
    rejection = Rejection(
        "duplicate",
        f"another reading of {row.device_id} at {row.ts.isoformat()} is already stored",
        row.device_id,
    )
    return deadletter_row(rejection, message, message.value)
