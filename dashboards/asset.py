"""Dashboard 2, asset detail: one asset's sensors with its risk overlaid, alerts, and why."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models import dashboard as dm

from . import panels as p
from .sdk import SQL, SQLAnnotation, datasource_ref
from .sql import bucket, gapfilled, gapfilled_series

UID = "citywatch-asset"

# Assets that have alerted come first (highest peak risk), so the default is interesting.
ASSET_VARIABLE_SQL = """
SELECT asset_id FROM devices
GROUP BY asset_id
ORDER BY (SELECT max(a.peak_risk) FROM alerts a WHERE a.asset_id = devices.asset_id)
         DESC NULLS LAST, asset_id
""".strip()

# Raw readings for short ranges; the 1-minute and 1-hour rollups (storage) once a
# bucket spans them, so a year-long range reads hourly rows, not every reading.
# Re-bucketed rollups are weighted by their reading counts.
SENSOR_SQL = gapfilled_series(
    f"""SELECT {bucket("r.ts")} AS bucket, m.key AS metric, avg(m.value::double precision) AS value
FROM readings r
CROSS JOIN LATERAL jsonb_each_text(r.metrics) m
WHERE $__interval_ms < 60000 AND r.asset_id = '$asset' AND $__timeFilter(r.ts)
  AND jsonb_typeof(r.metrics -> m.key) = 'number'
GROUP BY 1, 2
UNION ALL
SELECT {bucket("bucket")} AS bucket, metric, sum(avg * n) / nullif(sum(n), 0) AS value
FROM readings_1m
WHERE $__interval_ms >= 60000 AND $__interval_ms < 3600000
  AND asset_id = '$asset' AND $__timeFilter(bucket)
GROUP BY 1, 2
UNION ALL
SELECT {bucket("bucket")} AS bucket, metric, sum(avg * n) / nullif(sum(n), 0) AS value
FROM readings_1h
WHERE $__interval_ms >= 3600000 AND asset_id = '$asset' AND $__timeFilter(bucket)
GROUP BY 1, 2"""
)

RISK_SQL = gapfilled(
    f"""SELECT {bucket("ts")} AS bucket, max(risk) AS risk, max(threshold) AS threshold
FROM scores
WHERE asset_id = '$asset' AND role = 'champion' AND $__timeFilter(ts)
GROUP BY 1""",
    ["risk", "threshold"],
)

# The cold-start health model's score: distance from the device's own learned baseline,
# 1.0 = its control limit. Stored for every asset type, whichever model alerts.
ANOMALY_SQL = gapfilled(
    f"""SELECT {bucket("ts")} AS bucket, max(anomaly_score) AS anomaly_score,
       1.0::double precision AS control_limit
FROM scores
WHERE asset_id = '$asset' AND role = 'champion' AND $__timeFilter(ts)
GROUP BY 1""",
    ["anomaly_score", "control_limit"],
)

# Time to failure (days) from the champion's remaining-life model, with its 10-90 % interval.
TTF_SQL = gapfilled(
    f"""SELECT {bucket("ts")} AS bucket, min(ttf_low_days) AS ttf_low,
       avg(ttf_median_days) AS ttf_median, max(ttf_high_days) AS ttf_high
FROM scores
WHERE asset_id = '$asset' AND role = 'champion' AND $__timeFilter(ts)
GROUP BY 1""",
    ["ttf_low", "ttf_median", "ttf_high"],
)

ALERT_ANNOTATION_SQL = """
SELECT opened_at AS time, coalesce(closed_at, now()) AS timeend,
       'alert ' || alert_id || ': peak risk ' || round(peak_risk::numeric, 2)
       || ' (' || status || ', ' || coalesce(model_kind, 'failure_risk') || ' model '
       || model_version || ')' AS text,
       status AS tags
FROM alerts
WHERE asset_id = '$asset' AND opened_at <= $__timeTo()
  AND coalesce(closed_at, now()) >= $__timeFrom()
ORDER BY opened_at
""".strip()

CONTRIBUTIONS_SQL = """
SELECT c.key AS feature, round(c.value::numeric, 4) AS contribution
FROM (
    SELECT contributions FROM score_explanations
    WHERE asset_id = '$asset' AND $__timeFilter(ts)
    ORDER BY ts DESC LIMIT 1
) latest
CROSS JOIN LATERAL jsonb_each_text(latest.contributions) c
WHERE c.key <> '_bias'
ORDER BY abs(c.value::double precision) DESC
LIMIT 10
""".strip()

ALERTS_TABLE_SQL = """
SELECT alert_id, status, opened_at, closed_at, round(peak_risk::numeric, 3) AS peak_risk,
       round(last_risk::numeric, 3) AS last_risk,
       coalesce(model_kind, 'failure_risk') AS model_kind, outlook, model_version
FROM alerts
WHERE asset_id = '$asset'
ORDER BY opened_at DESC
LIMIT 50
""".strip()

# What the sensor was told (adaptive sampling, crews' requests) and why; refused ones
# too (no downlink encoder, duty-cycle limit), so a gap in its readings is explained.
COMMANDS_TABLE_SQL = """
SELECT created_at AS time, command,
       coalesce(args ->> 'interval_s', '') AS interval_s, status, reason,
       requested_by, coalesce(detail, '') AS detail
FROM downlink_commands
WHERE asset_id = '$asset' AND $__timeFilter(created_at)
ORDER BY command_id DESC
LIMIT 50
""".strip()


def _risk_axis() -> list[dm.DynamicConfigValue]:
    return [
        dm.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
        dm.DynamicConfigValue(id_val="min", value=0),
        dm.DynamicConfigValue(id_val="max", value=1),
        dm.DynamicConfigValue(id_val="unit", value="percentunit"),
        dm.DynamicConfigValue(id_val="custom.lineWidth", value=2),
    ]


def build() -> dm.Dashboard:
    asset = (
        dashboard.QueryVariable("asset")
        .label("Asset")
        .description("The asset to inspect; assets that alerted come first.")
        .datasource(datasource_ref())
        .query(ASSET_VARIABLE_SQL)
        .refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dm.VariableSort.DISABLED)
    )
    alerts = (
        dashboard.AnnotationQuery()
        .name("Alerts")
        .datasource(datasource_ref())
        .enable(True)
        .icon_color("red")
        .target(SQLAnnotation(ALERT_ANNOTATION_SQL))
    )
    return (
        p.new_dashboard(
            UID,
            "citywatch: asset detail",
            "One asset: its sensor history with the failure risk overlaid, its alerts as "
            "annotations, and the features that drove its latest high score.",
            ["asset"],
        )
        .with_variable(asset)
        .annotation(alerts)
        .with_panel(
            p.time_series(
                "Sensors and risk: $asset",
                "Sensor metrics (left axis, bucket averages) with the champion risk score "
                "and its alert threshold (right axis). Red regions are alerts.",
                SQL(SENSOR_SQL, "A"),
                SQL(RISK_SQL, "B"),
                w=24,
                h=10,
            )
            .override_by_name("risk", _risk_axis())
            .override_by_name("threshold", _risk_axis())
        )
        .with_panel(
            p.time_series(
                "Anomaly score (no labels needed): $asset",
                "The cold-start health model: how far the device is from the healthy baseline "
                "it learned from its own first readings, over its control limit (1.0). Empty "
                "while it is still learning. It raises the alerts of asset types without "
                "enough failure labels (model card: scoring_policy).",
                SQL(ANOMALY_SQL),
                w=24,
                h=7,
            )
        )
        .with_panel(
            p.time_series(
                "Time to failure: $asset",
                "Days until this asset is likely to fail: median estimate with its 10 % and "
                "90 % bounds (a conformalised quantile LightGBM, trained on the time to each "
                "failure in the history). An upper bound at the cap means 'at least that long'.",
                SQL(TTF_SQL),
                unit="d",
                w=24,
                h=7,
            )
        )
        .with_panel(
            p.bar_chart(
                "Top feature contributions: $asset",
                "LightGBM contributions (pred_contrib) to the latest explained score in the "
                "range: positive values pushed the risk up.",
                SQL(CONTRIBUTIONS_SQL),
                "feature",
                horizontal=True,
            )
        )
        .with_panel(
            p.table_panel(
                "Alerts: $asset",
                "This asset's alerts, newest first.",
                SQL(ALERTS_TABLE_SQL),
            )
        )
        .with_panel(
            p.table_panel(
                "Sensor commands: $asset",
                "Downlinks to this asset's sensor, newest first: reporting-interval changes "
                "as its risk rose and fell, crews' fresh-reading requests, and refusals.",
                SQL(COMMANDS_TABLE_SQL),
                w=24,
            )
        )
        .build()
    )
