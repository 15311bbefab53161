"""Dashboard 3, pipeline health: throughput, lag, dead letters, latency, failing
notifications, LoRaWAN links."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as dm

from . import panels as p
from .sdk import SQL
from .sql import BUCKET_SECONDS, bucket, gapfilled_series

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

# Crew notifications that were given up (in the range) or are failing now, per channel.
NOTIFICATIONS_FAILING_SQL = """SELECT c.channel_id AS channel, c.kind, c.team,
       count(*) FILTER (WHERE d.status = 'failed') AS given_up,
       count(*) FILTER (WHERE d.status = 'pending') AS failing_now,
       min(d.first_error_at) FILTER (WHERE d.status = 'pending') AS failing_since,
       max(d.failed_at) AS last_given_up,
       (array_agg(d.last_error ORDER BY coalesce(d.failed_at, d.first_error_at) DESC))[1]
           AS last_error
FROM alert_deliveries d
JOIN notification_channels c USING (channel_id)
WHERE (d.status = 'failed' AND $__timeFilter(d.failed_at))
   OR (d.status = 'pending' AND d.last_error IS NOT NULL)
GROUP BY 1, 2, 3
ORDER BY failing_now DESC, given_up DESC, channel"""


def build() -> dm.Dashboard:
    return (
        p.new_dashboard(
            UID,
            "citywatch: pipeline health",
            "How the pipeline itself is doing: throughput, consumer lag, batch times, "
            "dead letters by reason, latency from reading to score, crew notifications "
            "failing, and LoRaWAN link quality.",
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
            p.table_panel(
                "Crew notifications failing",
                "Per channel: deliveries given up in the range (retried for the notifier's "
                "retry period, 6 h by default) and deliveries failing now, still being "
                "retried, with the latest error. Empty when every notification got through.",
                SQL(NOTIFICATIONS_FAILING_SQL),
                w=24,
                h=6,
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
