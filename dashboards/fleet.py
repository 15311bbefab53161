"""Dashboard 1, fleet overview: where the risky assets are, which ones, open alerts, traffic."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as dm

from . import panels as p
from .sdk import SQL
from .sql import BUCKET_SECONDS, LATEST_RISK, bucket, gapfilled_series

UID = "citywatch-fleet"
TOP_N = 10

MAP_SQL = f"""
SELECT asset_id, asset_type, lat AS latitude, lon AS longitude, round(risk::numeric, 3) AS risk
FROM ({LATEST_RISK}) latest
WHERE lat IS NOT NULL AND lon IS NOT NULL
""".strip()

RISKIEST_SQL = f"""
SELECT latest.asset_id, latest.asset_type, round(latest.risk::numeric, 3) AS risk,
       round(latest.threshold::numeric, 3) AS threshold, latest.ts AS scored,
       EXISTS (SELECT 1 FROM alerts a
               WHERE a.asset_id = latest.asset_id AND a.status = 'open') AS alert_open
FROM ({LATEST_RISK}) latest
ORDER BY latest.risk DESC
LIMIT {TOP_N}
""".strip()

OPEN_ALERTS_SQL = """
SELECT a.asset_id, a.asset_type, a.device_id, a.opened_at,
       round(a.peak_risk::numeric, 3) AS peak_risk,
       round(a.last_risk::numeric, 3) AS last_risk, a.model_version
FROM alerts a
WHERE a.status = 'open'
ORDER BY a.peak_risk DESC, a.opened_at
LIMIT 200
""".strip()

OPEN_ALERT_COUNT_SQL = """
SELECT count(*) FILTER (WHERE status = 'open') AS open_alerts,
       count(*) FILTER (WHERE $__timeFilter(opened_at)) AS opened_in_range
FROM alerts
""".strip()

READINGS_RATE_SQL = gapfilled_series(
    f"""SELECT {bucket("ts")} AS bucket, asset_type AS metric,
       count(*) / {BUCKET_SECONDS} AS value
FROM readings
WHERE $__timeFilter(ts)
GROUP BY 1, 2""",
    fill="0",
)


def build() -> dm.Dashboard:
    return (
        p.new_dashboard(
            UID,
            "citywatch: fleet overview",
            "Fleet health at a glance: assets coloured by their latest failure risk, "
            "the riskiest assets, open alerts and the readings arriving per second.",
            ["fleet"],
        )
        .with_panel(
            p.geomap_panel(
                "Assets by failure risk",
                "Each asset at its location, coloured by its latest champion risk score "
                "in the time range (green < 0.5, orange < 0.8, red above).",
                SQL(MAP_SQL),
            )
        )
        .with_panel(
            p.table_panel(
                f"Riskiest {TOP_N} assets",
                "Assets ranked by their latest champion risk score in the time range.",
                SQL(RISKIEST_SQL),
                h=12,
            )
        )
        .with_panel(
            p.stat_panel(
                "Alert count",
                "Alerts open now, and alerts opened in the time range.",
                SQL(OPEN_ALERT_COUNT_SQL),
                w=6,
            )
        )
        .with_panel(
            p.table_panel(
                "Open alerts",
                "Every open alert, highest peak risk first.",
                SQL(OPEN_ALERTS_SQL),
                w=18,
                h=4,
            )
        )
        .with_panel(
            p.time_series(
                "Readings per second",
                "Readings per second by asset type, by reading time.",
                SQL(READINGS_RATE_SQL),
                unit="reqps",
                w=24,
            ).stacking(p.cb.StackingConfig().mode(p.cm.StackingMode.NORMAL))
        )
        .build()
    )
