"""Rollup DDL: 1-minute and 1-hour aggregates of readings, for each device and metric.

``readings.metrics`` is jsonb. TimescaleDB's continuous aggregates cannot use
set-returning functions such as ``jsonb_each``, so the aggregate is *wide*: one
``<metric>_avg/_min/_max/_n`` column group per metric of the asset catalogue.
The contract views ``readings_1m`` and ``readings_1h`` unpivot it to
``(bucket, device_id, asset_id, asset_type, metric, avg, min, max, n)``; they are
the same SQL on both flavours, so dashboards work on either.

On TimescaleDB the wide aggregates are continuous aggregates with refresh
policies. On plain PostgreSQL they are tables kept current incrementally: a
statement trigger on ``readings`` logs each minute that received rows (late data
included) in ``rollup_invalidations``, and ``citywatch_refresh_rollups()``
recomputes exactly those minutes and their hours. A full ``REFRESH MATERIALIZED
VIEW`` would rescan all history every run; this rescans only what changed.

A metric added to the catalogue later needs a migration that calls
:func:`rollup_sql` again (the views are replaced, the wide tables gain columns).
"""

from __future__ import annotations

import re

from core.assets import ASSET_TYPES

ORIGIN = "2000-01-01 00:00:00+00"  # bucket origin in UTC, the same on both flavours
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def metric_names() -> list[str]:
    """Every metric of the catalogue, once, in catalogue order."""
    seen: dict[str, None] = {}
    for asset_type in ASSET_TYPES.values():
        for name in asset_type.metric_names:
            if not _NAME.match(name):  # they become column names
                raise ValueError(f"metric name {name!r} is not a plain identifier")
            seen.setdefault(name, None)
    return list(seen)


def _value(metric: str) -> str:
    # A non-numeric value (never stored by the worker, but possible from other writers)
    # counts as missing rather than failing the whole refresh.
    return (
        f"CASE WHEN jsonb_typeof(metrics->'{metric}') = 'number'"
        f" THEN (metrics->>'{metric}')::float8 END"
    )


def _raw_aggregates(metrics: list[str]) -> str:
    cols = []
    for m in metrics:
        v = _value(m)
        cols += [
            f"avg({v}) AS {m}_avg",
            f"min({v}) AS {m}_min",
            f"max({v}) AS {m}_max",
            f"count({v}) AS {m}_n",
        ]
    return ",\n    ".join(cols)


def _reaggregates(metrics: list[str]) -> str:
    """1-hour columns from 1-minute rows: averages weighted by their counts."""
    cols = []
    for m in metrics:
        cols += [
            f"sum({m}_avg * {m}_n) / NULLIF(sum({m}_n), 0) AS {m}_avg",
            f"min({m}_min) AS {m}_min",
            f"max({m}_max) AS {m}_max",
            f"COALESCE(sum({m}_n), 0)::bigint AS {m}_n",
        ]
    return ",\n    ".join(cols)


def _unpivot_view(view: str, wide: str, metrics: list[str]) -> str:
    values = ",\n        ".join(
        f"('{m}', w.{m}_avg, w.{m}_min, w.{m}_max, w.{m}_n)" for m in metrics
    )
    return f"""
CREATE OR REPLACE VIEW {view} AS
SELECT w.bucket, w.device_id, w.asset_id, w.asset_type, m.metric, m.avg, m.min, m.max, m.n
FROM {wide} w
CROSS JOIN LATERAL (VALUES
        {values}
    ) AS m(metric, avg, min, max, n)
WHERE m.n > 0;
"""


def _extracted_aggregates(metrics: list[str]) -> str:
    """Aggregates over ``v.<metric>`` columns that were extracted from jsonb once per row."""
    cols = []
    for m in metrics:
        cols += [
            f"avg(v.{m}) AS {m}_avg",
            f"min(v.{m}) AS {m}_min",
            f"max(v.{m}) AS {m}_max",
            f"count(v.{m}) AS {m}_n",
        ]
    return ",\n    ".join(cols)


def _extract_once(metrics: list[str]) -> str:
    # OFFSET 0 keeps the planner from inlining the subquery back into every aggregate,
    # which would parse each metric out of the jsonb four times per row.
    values = ", ".join(f"{_value(m).replace('metrics', 'r.metrics')} AS {m}" for m in metrics)
    return f"CROSS JOIN LATERAL (SELECT {values} OFFSET 0) AS v"


def _wide_columns(metrics: list[str]) -> str:
    cols = []
    for m in metrics:
        cols += [
            f"{m}_avg double precision",
            f"{m}_min double precision",
            f"{m}_max double precision",
            f"{m}_n bigint NOT NULL DEFAULT 0",
        ]
    return ",\n    ".join(cols)


def plain_rollup_sql(metrics: list[str]) -> str:
    """Wide rollup tables, the invalidation trigger and the refresh function."""
    names = ", ".join(f"{m}_avg, {m}_min, {m}_max, {m}_n" for m in metrics)
    return f"""
CREATE TABLE IF NOT EXISTS readings_1m_wide (
    bucket timestamptz NOT NULL,
    device_id text NOT NULL,
    asset_id text NOT NULL,
    asset_type text NOT NULL,
    {_wide_columns(metrics)},
    PRIMARY KEY (device_id, bucket, asset_id, asset_type)
);
CREATE INDEX IF NOT EXISTS readings_1m_wide_bucket_idx ON readings_1m_wide (bucket DESC);
CREATE TABLE IF NOT EXISTS readings_1h_wide (LIKE readings_1m_wide INCLUDING ALL);

-- Minutes that received rows since the last refresh. Append-only, no unique key:
-- concurrent writers never wait on each other here.
CREATE TABLE IF NOT EXISTS rollup_invalidations (
    bucket    timestamptz NOT NULL,
    logged_at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION citywatch_log_invalidations() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO rollup_invalidations (bucket)
    SELECT DISTINCT date_bin('1 minute', ts, '{ORIGIN}') FROM new_rows;
    RETURN NULL;
END
$fn$;

DROP TRIGGER IF EXISTS readings_rollup_invalidate ON readings;
CREATE TRIGGER readings_rollup_invalidate
    AFTER INSERT ON readings REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citywatch_log_invalidations();

-- Recompute the invalidated minutes (grouped into contiguous ranges, so partitions are
-- pruned and late rows cost only their own minutes) and the hours around them.
-- Returns the number of minutes refreshed; concurrent callers wait for each other.
CREATE OR REPLACE FUNCTION citywatch_refresh_rollups() RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $fn$
DECLARE
    minutes timestamptz[];
    lo timestamptz;
    hi timestamptz;
    hlo timestamptz;
    hhi timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('citywatch_rollups'));
    WITH gone AS (DELETE FROM rollup_invalidations RETURNING bucket)
    SELECT array_agg(DISTINCT bucket ORDER BY bucket) INTO minutes FROM gone;
    IF minutes IS NULL THEN
        RETURN 0;
    END IF;
    FOR lo, hi IN
        SELECT min(b), max(b) + interval '1 minute'
        FROM (SELECT b, b - (row_number() OVER (ORDER BY b)) * interval '1 minute' AS island
              FROM unnest(minutes) AS b) s
        GROUP BY island ORDER BY 1
    LOOP
        DELETE FROM readings_1m_wide WHERE bucket >= lo AND bucket < hi;
        INSERT INTO readings_1m_wide (bucket, device_id, asset_id, asset_type, {names})
        SELECT date_bin('1 minute', r.ts, '{ORIGIN}'), r.device_id, r.asset_id, r.asset_type,
            {_extracted_aggregates(metrics)}
        FROM readings r {_extract_once(metrics)}
        WHERE r.ts >= lo AND r.ts < hi
        GROUP BY 1, r.device_id, r.asset_id, r.asset_type;

        hlo := date_bin('1 hour', lo, '{ORIGIN}');
        hhi := date_bin('1 hour', hi - interval '1 microsecond', '{ORIGIN}') + interval '1 hour';
        DELETE FROM readings_1h_wide WHERE bucket >= hlo AND bucket < hhi;
        INSERT INTO readings_1h_wide (bucket, device_id, asset_id, asset_type, {names})
        SELECT date_bin('1 hour', bucket, '{ORIGIN}'), device_id, asset_id, asset_type,
            {_reaggregates(metrics)}
        FROM readings_1m_wide WHERE bucket >= hlo AND bucket < hhi
        GROUP BY 1, device_id, asset_id, asset_type;
    END LOOP;
    RETURN cardinality(minutes);
END
$fn$;

-- Build the rollups of data already stored (an upgraded database).
INSERT INTO rollup_invalidations (bucket)
SELECT DISTINCT date_bin('1 minute', ts, '{ORIGIN}') FROM readings;
SELECT citywatch_refresh_rollups();
{_unpivot_view("readings_1m", "readings_1m_wide", metrics)}
{_unpivot_view("readings_1h", "readings_1h_wide", metrics)}
"""


def timescale_rollup_sql(metrics: list[str]) -> str:
    """Continuous aggregates with refresh policies, and the same unpivot views."""
    aggregates = _raw_aggregates(metrics)
    caggs = []
    for wide, width, start, end, every in (
        ("readings_1m_wide", "1 minute", "1 day", "1 minute", "1 minute"),
        ("readings_1h_wide", "1 hour", "7 days", "1 hour", "30 minutes"),
    ):
        caggs.append(f"""
CREATE MATERIALIZED VIEW IF NOT EXISTS {wide}
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '{width}', ts, TIMESTAMPTZ '{ORIGIN}') AS bucket,
    device_id, asset_id, asset_type,
    {aggregates}
FROM readings
GROUP BY 1, device_id, asset_id, asset_type
WITH NO DATA;
SELECT add_continuous_aggregate_policy('{wide}',
    start_offset => INTERVAL '{start}', end_offset => INTERVAL '{end}',
    schedule_interval => INTERVAL '{every}', if_not_exists => true);
""")
    return (
        "".join(caggs)
        + _unpivot_view("readings_1m", "readings_1m_wide", metrics)
        + _unpivot_view("readings_1h", "readings_1h_wide", metrics)
    )


def plain_realtime_sql(metrics: list[str]) -> str:
    """Real-time rollup views on plain PostgreSQL, like ``materialized_only = false``.

    The watermark is the minute after the newest materialised 1-minute bucket. Rows
    from the watermark on are aggregated live from ``readings`` (runtime partition
    pruning keeps that to the newest partition); older buckets come from the wide
    tables. The 1-hour view re-aggregates the real-time minutes of the current hour.
    Late rows older than the watermark show once ``citywatch_refresh_rollups()`` ran.
    """
    names = ", ".join(f"{m}_avg, {m}_min, {m}_max, {m}_n" for m in metrics)
    return f"""
CREATE OR REPLACE VIEW readings_1m_realtime_wide AS
WITH wm AS (
    SELECT COALESCE(max(bucket) + interval '1 minute', '-infinity'::timestamptz) AS t
    FROM readings_1m_wide
)
SELECT w.bucket, w.device_id, w.asset_id, w.asset_type, {names}
FROM readings_1m_wide w
WHERE w.bucket < (SELECT t FROM wm)
UNION ALL
SELECT date_bin('1 minute', r.ts, '{ORIGIN}'), r.device_id, r.asset_id, r.asset_type,
    {_extracted_aggregates(metrics)}
FROM readings r {_extract_once(metrics)}
WHERE r.ts >= (SELECT t FROM wm)
GROUP BY 1, r.device_id, r.asset_id, r.asset_type;

CREATE OR REPLACE VIEW readings_1h_realtime_wide AS
WITH wm AS (
    SELECT date_bin('1 hour', COALESCE(max(bucket) + interval '1 minute',
                                       '-infinity'::timestamptz), '{ORIGIN}') AS t
    FROM readings_1m_wide
)
SELECT h.bucket, h.device_id, h.asset_id, h.asset_type, {names}
FROM readings_1h_wide h
WHERE h.bucket < (SELECT t FROM wm)
UNION ALL
SELECT date_bin('1 hour', bucket, '{ORIGIN}'), device_id, asset_id, asset_type,
    {_reaggregates(metrics)}
FROM readings_1m_realtime_wide
WHERE bucket >= (SELECT t FROM wm)
GROUP BY 1, device_id, asset_id, asset_type;
{_unpivot_view("readings_1m", "readings_1m_realtime_wide", metrics)}
{_unpivot_view("readings_1h", "readings_1h_realtime_wide", metrics)}

-- Harden the SECURITY DEFINER maintenance functions: pg_temp searched last, so a
-- caller's temporary table can never stand in for one of ours.
DO $do$
DECLARE
    fn text;
BEGIN
    FOREACH fn IN ARRAY ARRAY['citywatch_ensure_partitions(integer)',
                              'citywatch_drop_expired(interval)',
                              'citywatch_create_partition(text, date)',
                              'citywatch_refresh_rollups()'] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp',
                       fn, current_schema());
    END LOOP;
END
$do$;
"""


def realtime_sql(flavour: str) -> str:
    """Migration 9: real-time rollup views (TimescaleDB's aggregates already are)."""
    if flavour == "timescaledb":
        return "SELECT 1;  -- continuous aggregates are real-time (materialized_only = false)"
    return plain_realtime_sql(metric_names())


def rollup_sql(flavour: str) -> str:
    """The rollup migration for ``flavour`` ('postgres' or 'timescaledb')."""
    metrics = metric_names()
    if flavour == "timescaledb":
        return timescale_rollup_sql(metrics)
    return plain_rollup_sql(metrics)
