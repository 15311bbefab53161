"""SQL building blocks for panels: gap-filled time buckets that run on plain PostgreSQL 15+
and on TimescaleDB alike.

``time_bucket_gapfill`` exists only on TimescaleDB, and ``time_bucket($__interval, ...)``
is not valid SQL once Grafana has expanded the macro (``time_bucket(1m, ...)``). So we
bucket with ``date_bin`` (PostgreSQL 14+) and fill gaps by joining a
``generate_series`` of bucket starts. The stride comes from ``$__interval_ms``, an
integer after expansion, so it is valid everywhere, and Grafana derives it from the
panel's ``maxDataPoints``: point counts stay bounded however long the range.
"""

from __future__ import annotations

# One bucket: the panel's interval as a PostgreSQL interval.
BUCKET = "make_interval(secs => $__interval_ms / 1000.0)"
# Bucket seconds, to turn counts per bucket into rates per second.
BUCKET_SECONDS = "($__interval_ms / 1000.0)"


def bucket(column: str) -> str:
    """The start of ``column``'s bucket (aligned to the Unix epoch, like Grafana's)."""
    return f"date_bin({BUCKET}, {column}, timestamptz 'epoch')"


def buckets() -> str:
    """Every bucket start in the dashboard's time range, as rows of ``bucket``."""
    return (
        f"generate_series({bucket('$__timeFrom()::timestamptz')}, "
        f"$__timeTo()::timestamptz, {BUCKET}) AS b(bucket)"
    )


def gapfilled(per_bucket: str, value_columns: list[str], fill: str = "NULL") -> str:
    """One row per bucket of the range: ``per_bucket``'s rows, ``fill`` where it has none.

    ``per_bucket`` must select ``bucket`` and the ``value_columns`` (one row per bucket).
    Use ``fill='0'`` for counts and rates, ``NULL`` for gauges (Grafana draws a gap).
    """
    values = ", ".join(f"coalesce(d.{c}, {fill}) AS {c}" for c in value_columns)
    return (
        f"SELECT b.bucket AS time, {values}\n"
        f"FROM {buckets()}\n"
        f"LEFT JOIN (\n{per_bucket}\n) d ON d.bucket = b.bucket\n"
        "ORDER BY 1"
    )


def gapfilled_series(per_bucket: str, value: str = "value", fill: str = "NULL") -> str:
    """Long-format series (time, metric, value), every metric in every bucket.

    ``per_bucket`` selects ``bucket``, ``metric`` and ``value``; metrics seen anywhere in
    the range get a row in each bucket, so Grafana's long-to-wide conversion lines up.
    """
    return (
        f"WITH d AS (\n{per_bucket}\n)\n"
        f"SELECT b.bucket AS time, m.metric, coalesce(d.{value}, {fill}) AS {value}\n"
        f"FROM {buckets()}\n"
        "CROSS JOIN (SELECT DISTINCT metric FROM d) m\n"
        "LEFT JOIN d ON d.bucket = b.bucket AND d.metric = m.metric\n"
        "ORDER BY 1, 2"
    )


# Each asset's latest champion score in the range, with its position. One index probe
# per asset (scores_asset_ts_idx), not a scan of every score in a long range.
LATEST_RISK = """
SELECT a.asset_id, a.asset_type, a.lat, a.lon, r.risk, r.threshold, r.ts
FROM (
    SELECT asset_id, min(asset_type) AS asset_type, avg(lat) AS lat, avg(lon) AS lon
    FROM devices GROUP BY asset_id
) a
CROSS JOIN LATERAL (
    SELECT s.risk, s.threshold, s.ts FROM scores s
    WHERE s.asset_id = a.asset_id AND s.role = 'champion' AND $__timeFilter(s.ts)
    ORDER BY s.ts DESC LIMIT 1
) r
""".strip()
