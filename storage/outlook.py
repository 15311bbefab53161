"""The ``station_outlook`` table: water-quality incident probabilities per reading.

The worker (``streams.water_quality``, docs/water-quality.md) turns each
:meth:`models.water_quality_model.StationScorer.score` result into an
:class:`OutlookRow` and writes a batch with :func:`write_outlook` inside its
own transaction, beside the batch's readings and scores. Writes are
idempotent: a replayed batch (at-least-once delivery) stores nothing twice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from storage.sinks import PostgresSink, SinkBatch, SinkUnavailableError, WriteResult

__all__ = ["HORIZON_COLUMNS", "OutlookRow", "OutlookSink", "latest_outlook", "write_outlook"]


@dataclass(frozen=True, slots=True)
class OutlookRow:
    """One scored reading of a water-quality station (probabilities in [0, 1]).

    ``p_1h`` .. ``p_48h`` are None while the station has no supervised model.
    """

    ts: datetime
    device_id: str
    asset_id: str
    model_version: str
    event_probability: float
    alarm: bool
    p_1h: float | None = None
    p_6h: float | None = None
    p_24h: float | None = None
    p_48h: float | None = None


#: Hours ahead -> column of ``station_outlook``.
HORIZON_COLUMNS = {1: "p_1h", 6: "p_6h", 24: "p_24h", 48: "p_48h"}


def latest_outlook(conn: psycopg.Connection, asset_id: str) -> dict | None:
    """The asset's latest scored reading: its incident probability now and within
    1/6/24/48 h (None where the station's model has no such horizon); None for an
    asset that is not a scored water-quality station."""
    row = conn.execute(
        "SELECT ts, device_id, model_version, event_probability, alarm, "
        + ", ".join(HORIZON_COLUMNS.values())
        + " FROM station_outlook WHERE asset_id = %s ORDER BY ts DESC LIMIT 1",
        (asset_id,),
    ).fetchone()
    if row is None:
        return None
    ts, device_id, version, p_now, alarm, *ps = row
    return {
        "ts": ts,
        "device_id": device_id,
        "model_version": version,
        "event_probability": p_now,
        "alarm": alarm,
        "horizons": [
            {"hours": h, "probability": p} for h, p in zip(HORIZON_COLUMNS, ps, strict=True)
        ],
    }


def _prob(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return min(max(float(x), 0.0), 1.0)


def write_outlook(cur: psycopg.Cursor, rows: Sequence[OutlookRow]) -> int:
    """Insert ``rows`` (one statement, arrays as parameters); returns how many were new.

    Rows without an event probability (a gap in the readings) are skipped:
    a gap has no score, not a score of zero.
    """
    rows = [r for r in rows if _prob(r.event_probability) is not None]
    if not rows:
        return 0
    cur.execute(
        "INSERT INTO station_outlook (ts, device_id, asset_id, model_version,"
        " event_probability, alarm, p_1h, p_6h, p_24h, p_48h)"
        " SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::text[], %s::text[],"
        " %s::float8[], %s::bool[], %s::float8[], %s::float8[], %s::float8[], %s::float8[])"
        " ON CONFLICT (device_id, ts) DO NOTHING",
        (
            [r.ts for r in rows],
            [r.device_id for r in rows],
            [r.asset_id for r in rows],
            [r.model_version for r in rows],
            [_prob(r.event_probability) for r in rows],
            [bool(r.alarm) for r in rows],
            [_prob(r.p_1h) for r in rows],
            [_prob(r.p_6h) for r in rows],
            [_prob(r.p_24h) for r in rows],
            [_prob(r.p_48h) for r in rows],
        ),
    )
    return cur.rowcount


class OutlookSink(PostgresSink):
    """:class:`~storage.sinks.PostgresSink` that also writes ``station_outlook`` rows
    in the same transaction as the batch they score (exactly once: a replayed
    batch stores nothing twice, and a failed one stores neither)."""

    def write_with_outlook(
        self, batch: SinkBatch, outlook: Sequence[OutlookRow]
    ) -> tuple[WriteResult, int]:
        """Store ``batch`` and ``outlook`` atomically; returns the batch's result and
        the new outlook rows. Raises ``SinkUnavailableError`` like :meth:`write`."""
        if not outlook:
            return self.write(batch), 0
        try:
            conn = self._connection()
            # The batch's own transaction becomes a savepoint inside this one.
            with conn.transaction():
                result = self.write(batch)
                with conn.cursor() as cur:
                    written = write_outlook(cur, outlook)
        except psycopg.OperationalError as exc:
            self.close()
            raise SinkUnavailableError(f"database unavailable: {exc}".strip()) from exc
        return result, written
