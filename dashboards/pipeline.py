"""Dashboard 3, pipeline health: throughput, lag, dead letters, latency, failing
notifications, LoRaWAN links."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as dm

from . import panels as p
from .sdk import SQL
from .sql import BUCKET, BUCKET_SECONDS, bucket, buckets, gapfilled_series

UID = "citywatch-pipeline"
# Throughput is bucketed by arrival time, but readings and scores are indexed and
# partitioned by reading time: bound ts too (readings up to a day late still count).
LATE_GUARD = "ts > $__timeFrom()::timestamptz - interval '1 day'"

THROUGHPUT_SQL = gapfilled_series(
    f"""SELECT {bucket("ingested_at")} AS bucket, 'readings stored' AS metric,
       count(*) / {BUCKET_SECONDS} AS value
FROM readings WHERE $__timeFilter(ingested_at) AND {LATE_GUARD} GROUP BY 1
UNION ALL
SELECT {bucket("scored_at")}, 'scores', count(*) / {BUCKET_SECONDS}
FROM scores WHERE $__timeFilter(scored_at) AND {LATE_GUARD} GROUP BY 1
UNION ALL
SELECT {bucket("received_at")}, 'dead letters', count(*) / {BUCKET_SECONDS}
FROM deadletters WHERE $__timeFilter(received_at) GROUP BY 1""",
    fill="0",
)

LAG_SQL = gapfilled_series(
    f"""SELECT {bucket("ts")} AS bucket, worker_id AS metric, max(consumer_lag) AS value
FROM worker_stats
WHERE $__timeFilter(ts) AND consumer_lag IS NOT NULL
GROUP BY 1, 2"""
)

BATCH_SQL = gapfilled_series(
    f"""SELECT {bucket("ts")} AS bucket, worker_id || ' p50' AS metric, avg(batch_ms_p50) AS value
FROM worker_stats WHERE $__timeFilter(ts) GROUP BY 1, 2
UNION ALL
SELECT {bucket("ts")}, worker_id || ' p99', max(batch_ms_p99)
FROM worker_stats WHERE $__timeFilter(ts) GROUP BY 1, 2"""
)

DEADLETTERS_SQL = gapfilled_series(
    f"""SELECT {bucket("received_at")} AS bucket, stage || ': ' || reason AS metric,
       count(*) AS value
FROM deadletters
WHERE $__timeFilter(received_at)
GROUP BY 1, 2""",
    fill="0",
)

LATENCY_SQL = gapfilled_series(
    f"""SELECT {bucket("ts")} AS bucket, 'scored p50' AS metric,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM scored_at - ts)) AS value
FROM scores WHERE role = 'champion' AND $__timeFilter(ts) GROUP BY 1
UNION ALL
SELECT {bucket("ts")}, 'scored p99',
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM scored_at - ts))
FROM scores WHERE role = 'champion' AND $__timeFilter(ts) GROUP BY 1
UNION ALL
SELECT {bucket("ts")}, 'stored p50',
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM ingested_at - ts))
FROM readings WHERE $__timeFilter(ts) GROUP BY 1"""
)

LORAWAN_SQL = gapfilled_series(
    f"""SELECT {bucket("ts")} AS bucket, l.metric, avg(l.value) AS value
FROM readings r
CROSS JOIN LATERAL (VALUES
    ('rssi dBm', (r.source ->> 'rssi')::double precision),
    ('snr dB', (r.source ->> 'snr')::double precision),
    ('gateways', (r.source ->> 'gateways')::double precision)
) AS l(metric, value)
WHERE r.source ->> 'kind' = 'lorawan' AND $__timeFilter(r.ts) AND l.value IS NOT NULL
GROUP BY 1, 2"""
)

# Crew notifications per bucket: transitions to notify, deliveries sent, given up (per
# channel), and deliveries failing during the bucket (from first failure until sent,
# given up, or now). A table of failures would be empty when all is well, which
# `dashboards check` cannot tell from broken SQL; this series has rows whenever alerts flow.
NOTIFICATIONS_SQL = gapfilled_series(
    f"""SELECT {bucket("at")} AS bucket, 'alert transitions' AS metric, count(*) AS value
FROM alert_transitions WHERE $__timeFilter(at) GROUP BY 1
UNION ALL
SELECT {bucket("delivered_at")}, 'sent', count(*)
FROM alert_deliveries WHERE status = 'sent' AND $__timeFilter(delivered_at) GROUP BY 1
UNION ALL
SELECT {bucket("failed_at")}, 'given up: ' || channel_id, count(*)
FROM alert_deliveries WHERE status = 'failed' AND $__timeFilter(failed_at) GROUP BY 1, 2
UNION ALL
SELECT b.bucket, 'failing: ' || x.channel_id, count(*)
FROM {buckets()}
JOIN alert_deliveries x ON x.first_error_at < b.bucket + {BUCKET}
    AND coalesce(x.delivered_at, x.failed_at, now()) >= b.bucket
WHERE x.first_error_at IS NOT NULL AND x.first_error_at <= $__timeTo()::timestamptz
GROUP BY 1, 2""",
    fill="0",
)


def build() -> dm.Dashboard:
    return (
        p.new_dashboard(
            UID,
            "citywatch: pipeline health",
            "How the pipeline itself is doing: throughput, consumer lag, batch times, "
            "dead letters by reason, latency from reading to score, crew notifications "
            "(failing and given up), and LoRaWAN link quality.",
            ["pipeline"],
        )
        .with_panel(
            p.time_series(
                "Throughput",
                "Readings stored, scores written and dead letters per second.",
                SQL(THROUGHPUT_SQL),
                unit="reqps",
            )
        )
        .with_panel(
            p.time_series(
                "Consumer lag",
                "Messages behind the end of the readings topic, per worker (worker_stats).",
                SQL(LAG_SQL),
            )
        )
        .with_panel(
            p.bars(
                "Dead letters by reason",
                "Messages rejected per bucket, by stage and reason; each keeps its raw bytes "
                "in the deadletters table.",
                SQL(DEADLETTERS_SQL),
            )
        )
        .with_panel(
            p.time_series(
                "Scoring latency",
                "Seconds from the reading's timestamp to its score (p50, p99) and to its row "
                "in the database (p50).",
                SQL(LATENCY_SQL),
                unit="s",
            )
        )
        .with_panel(
            p.time_series(
                "Worker batch time",
                "Milliseconds per take() batch, p50 and p99, per worker (worker_stats).",
                SQL(BATCH_SQL),
                unit="ms",
            )
        )
        .with_panel(
            p.time_series(
                "Crew notifications",
                "Alert transitions to notify, deliveries sent, deliveries failing (still "
                "retried, per channel) and given up after the retry period (6 h by default). "
                "alert_deliveries.last_error holds each failure's reason.",
                SQL(NOTIFICATIONS_SQL),
            )
        )
        .with_panel(
            p.time_series(
                "LoRaWAN link health",
                "Average RSSI, SNR and gateways hearing each uplink, for LoRaWAN readings.",
                SQL(LORAWAN_SQL),
            )
        )
        .build()
    )
