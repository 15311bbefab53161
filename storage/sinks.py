"""Idempotent PostgreSQL sink: binary COPY into staging tables, then upsert.

Delivery guarantee: exactly-once *storage* on top of at-least-once delivery.
The worker may hand the same rows again after a restart or replay; natural
primary keys ((device_id, ts) for readings and maintenance events,
(device_id, ts, model_version) for scores, alert_id, deadletter_id) make the
second write a no-op. One batch is one transaction, so a batch is stored wholly or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from core.records import Alert, DeadLetter, Explanation, Maintenance, Reading, Score
from storage.alerts.worker import apply_worker_alerts
from storage.deadletters import DEADLETTERS
from storage.tables import EXPLANATIONS, MAINTENANCE, READINGS, SCORES, Table, copy_rows

log = logging.getLogger(__name__)


class SinkUnavailableError(RuntimeError):
    """The database cannot take writes now; retry the same batch after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class SinkBatch:
    """Rows of one worker batch, written in one transaction."""

    readings: list[Reading] = field(default_factory=list)
    scores: list[Score] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    deadletters: list[DeadLetter] = field(default_factory=list)
    explanations: list[Explanation] = field(default_factory=list)
    maintenance: list[Maintenance] = field(default_factory=list)
    #: Where each of ``readings`` came from: ``(topic, partition, offset)``. With it the
    #: sink tells a replay from a duplicate and records the offsets it stored.
    reading_positions: list[tuple[str, int, int]] | None = None
    #: The dead letter of ``readings[i]`` when another message's reading holds its key;
    #: written in the same transaction, so a crash cannot separate the two.
    conflict_deadletter: Callable[[int], DeadLetter] | None = None

    def __len__(self) -> int:
        return (
            len(self.readings)
            + len(self.maintenance)
            + len(self.scores)
            + len(self.alerts)
            + len(self.deadletters)
            + len(self.explanations)
        )


@dataclass(frozen=True)
class WriteResult:
    """Rows actually inserted (duplicates from replays are not counted)."""

    readings: int = 0
    scores: int = 0
    alerts: int = 0
    deadletters: int = 0
    maintenance: int = 0
    #: Indices into ``batch.readings`` of rows not stored because another message's
    #: reading holds their ``(device_id, ts)``; replays of stored offsets are not listed.
    conflicts: list[int] = field(default_factory=list)


# Tables written through a staging table: "INSERT ... ON CONFLICT DO NOTHING" from it
# makes a replayed row a no-op. Readings and scores try a direct COPY first.
_STAGED = (READINGS, SCORES, DEADLETTERS, EXPLANATIONS, MAINTENANCE)
_STAGING_DDL = "".join(
    f"CREATE TEMP TABLE IF NOT EXISTS stage_{t.name}"
    f" (LIKE {t.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;"
    for t in _STAGED
)


class PostgresSink:
    """Writes :class:`SinkBatch` objects idempotently; one connection, reopened on failure.

    Parameters
    ----------
    database_url : str
        A libpq connection string.
    """

    def __init__(self, database_url: str, application_name: str = "citywatch-sink") -> None:
        self._database_url = database_url
        self._application_name = application_name
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self._database_url, connect_timeout=5, application_name=self._application_name
            )
            with self._conn.transaction():
                self._conn.execute(_STAGING_DDL)
        return self._conn

    def write(self, batch: SinkBatch) -> WriteResult:
        """Store one batch in a single transaction.

        Raises
        ------
        SinkUnavailableError
            When the database is unreachable; nothing of the batch was stored
            and the caller should retry the same batch.
        """
        if not len(batch):
            return WriteResult()
        try:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cur:
                stored_before = _lock_offsets(cur, batch.reading_positions)
                if _copy_direct(cur, batch):
                    readings, scores, conflicts = len(batch.readings), len(batch.scores), []
                else:
                    readings, scores, conflicts = _copy_upsert_readings(cur, batch, stored_before)
                _record_offsets(cur, batch.reading_positions)
                if conflicts and batch.conflict_deadletter is not None:
                    batch.deadletters.extend(batch.conflict_deadletter(i) for i in conflicts)
                maintenance, _, deadletters = (
                    _copy_upsert(cur, table, rows)
                    for table, rows in (
                        (MAINTENANCE, batch.maintenance),
                        (EXPLANATIONS, batch.explanations),
                        (DEADLETTERS, batch.deadletters),
                    )
                )
                # Alerts are few (transitions only); the lifecycle SQL, the
                # transition outbox and its pg_notify commit with this batch.
                alerts = apply_worker_alerts(cur, batch.alerts) if batch.alerts else 0
        except psycopg.OperationalError as exc:
            if (exc.sqlstate or "").startswith("54"):
                # "program limit exceeded" (an index row too big, JSON too deep):
                # caused by the rows, not the server; retrying would never end.
                raise
            self.close()
            raise SinkUnavailableError(f"database unavailable: {exc}".strip()) from exc
        return WriteResult(readings, scores, alerts, deadletters, maintenance, conflicts)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


def _copy_direct(cur: psycopg.Cursor, batch: SinkBatch) -> bool:
    """COPY readings and scores straight into their tables, the fast path.

    False, with nothing of them written, when a key is already stored: a replay
    after a crash, or another message's reading of the device at that time.
    The caller then takes :func:`_copy_upsert_readings`, which tells the two
    apart. Exactly-once does not depend on this path: the offsets are locked and
    recorded in the same transaction either way.
    """
    if not batch.readings and not batch.scores:
        return True
    try:
        with cur.connection.transaction():  # a savepoint: a conflict undoes only this
            copy_rows(cur, READINGS, batch.readings)
            copy_rows(cur, SCORES, batch.scores)
    except psycopg.errors.UniqueViolation:
        return False
    return True


def _copy_upsert_readings(
    cur: psycopg.Cursor, batch: SinkBatch, stored_before: dict[tuple[str, int], int]
) -> tuple[int, int, list[int]]:
    """Readings and scores through staging tables, skipping what is stored; the
    readings that lost their key to another message come back as conflicts."""
    inserted = _copy_upsert(
        cur,
        READINGS,
        batch.readings,
        returning="device_id, ts" if batch.reading_positions else None,
    )
    readings = inserted if isinstance(inserted, int) else len(inserted)
    conflicts = (
        _not_stored(batch, inserted, stored_before)
        if readings < len(batch.readings) and batch.reading_positions
        else []
    )
    # A reading not inserted now is a replay, whose scores were stored with it, or lost
    # its key to another message's reading, whose scores those are. Scored again after
    # a model switch (a champion promoted, a water-quality file reloaded) they would
    # carry another model_version and slip past the primary key: leave them out.
    if isinstance(inserted, set) and readings < len(batch.readings):
        not_inserted = {(r.device_id, r.ts) for r in batch.readings} - inserted
        fresh = [s for s in batch.scores if (s.device_id, s.ts) not in not_inserted]
    else:
        fresh = batch.scores
    scores = _copy_upsert(cur, SCORES, fresh)
    return readings, int(scores), conflicts


def _copy_upsert(
    cur: psycopg.Cursor, table: Table, records: Sequence[Any], returning: str | None = None
) -> int | set[tuple]:
    """COPY records into ``stage_<table>`` (binary), then insert what is new.

    Returns how many rows were inserted, or with ``returning`` the set of those
    columns of the inserted rows.
    """
    if not records:
        return set() if returning else 0
    copy_rows(cur, table, records, into=f"stage_{table.name}")
    cols = ", ".join(table.columns)
    # DO NOTHING also absorbs a key repeated inside one batch.
    cur.execute(
        f"INSERT INTO {table.name} ({cols}) SELECT {cols} FROM stage_{table.name}"
        " ON CONFLICT DO NOTHING" + (f" RETURNING {returning}" if returning else "")
    )
    if returning:
        return set(cur.fetchall())
    return cur.rowcount  # the staging rows vanish at commit (ON COMMIT DELETE ROWS)


def _lock_offsets(
    cur: psycopg.Cursor, positions: list[tuple[str, int, int]] | None
) -> dict[tuple[str, int], int]:
    """The highest stored offset of each partition in the batch, locked until commit
    (during a rebalance two workers may briefly write the same partition)."""
    if not positions:
        return {}
    parts = sorted({(topic, partition) for topic, partition, _ in positions})
    # One statement: a missing row is created (a second writer then waits for the
    # first to commit instead of reading "nothing stored yet"), an existing one is
    # locked by the no-op update, and either way its offset comes back.
    cur.execute(
        "INSERT INTO stream_offsets (topic, partition, max_offset)"
        " SELECT t, p, -1 FROM unnest(%s::text[], %s::int[]) AS u(t, p) ORDER BY t, p"
        " ON CONFLICT (topic, partition) DO UPDATE SET max_offset = stream_offsets.max_offset"
        " RETURNING topic, partition, max_offset",
        ([t for t, _ in parts], [p for _, p in parts]),
    )
    return {(t, p): o for t, p, o in cur.fetchall()}


def _record_offsets(cur: psycopg.Cursor, positions: list[tuple[str, int, int]] | None) -> None:
    if not positions:
        return
    highest: dict[tuple[str, int], int] = {}
    for topic, partition, offset in positions:
        if offset > highest.get((topic, partition), -1):
            highest[(topic, partition)] = offset
    cur.execute(
        "INSERT INTO stream_offsets (topic, partition, max_offset)"
        " SELECT * FROM unnest(%s::text[], %s::int[], %s::bigint[])"
        " ON CONFLICT (topic, partition) DO UPDATE SET"
        " max_offset = GREATEST(stream_offsets.max_offset, EXCLUDED.max_offset),"
        " updated_at = now()",
        (
            [t for t, _ in highest],
            [p for _, p in highest],
            list(highest.values()),
        ),
    )


def _not_stored(
    batch: SinkBatch, inserted: set[tuple], stored_before: dict[tuple[str, int], int]
) -> list[int]:
    # A row not inserted whose offset was stored before is a replay (a crash between
    # commit and acknowledgement): already counted. Any other lost its key to
    # another message. Keys are unique within a batch (the worker sees to it).
    lost = []
    for i, (row, (topic, partition, offset)) in enumerate(
        zip(batch.readings, batch.reading_positions or (), strict=True)
    ):
        if (row.device_id, row.ts) in inserted:
            continue
        if offset <= stored_before.get((topic, partition), -1):
            continue
        lost.append(i)
    return lost


def record_worker_stats(database_url: str, row: dict[str, Any]) -> None:
    """Store one ``worker_stats`` sample (the pipeline-health dashboard reads them)."""
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        conn.execute(
            "INSERT INTO worker_stats (ts, worker_id, consumed, stored, scored, deadletters,"
            " consumer_lag, batch_ms_p50, batch_ms_p99) VALUES (%(ts)s, %(worker_id)s,"
            " %(consumed)s, %(stored)s, %(scored)s, %(deadletters)s, %(consumer_lag)s,"
            " %(batch_ms_p50)s, %(batch_ms_p99)s) ON CONFLICT DO NOTHING",
            row,
        )
