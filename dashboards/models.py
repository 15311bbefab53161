"""Dashboard 4, model monitoring: score distribution, drift, champion against challenger."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as dm

from . import panels as p
from .sdk import SQL
from .sql import bucket, gapfilled_series

UID = "citywatch-models"
BINS = 20

DISTRIBUTION_SQL = f"""
SELECT to_char((bins.i - 1) / {BINS}.0, 'FM0.00') AS risk_from,
       coalesce(s.champion, 0) AS champion, coalesce(s.challenger, 0) AS challenger
FROM generate_series(1, {BINS}) AS bins(i)
LEFT JOIN (
    SELECT least(width_bucket(risk, 0, 1, {BINS}), {BINS}) AS i,
           count(*) FILTER (WHERE role = 'champion') AS champion,
           count(*) FILTER (WHERE role = 'challenger') AS challenger
    FROM scores
    WHERE $__timeFilter(ts)
    GROUP BY 1
) s ON s.i = bins.i
ORDER BY bins.i
""".strip()

DRIFT_SQL = gapfilled_series(
    f"""SELECT {bucket("window_end")} AS bucket,
       asset_type || ' ' || feature || ' (' || model_version || ')' AS metric, max(psi) AS value
FROM feature_drift
WHERE $__timeFilter(window_end)
GROUP BY 1, 2"""
)

ROLES_SQL = gapfilled_series(
    f"""SELECT {bucket("ts")} AS bucket, role || ' ' || model_version AS metric,
       avg(risk) AS value
FROM scores
WHERE $__timeFilter(ts)
GROUP BY 1, 2"""
)

AGREEMENT_SQL = """
SELECT ch.model_version AS challenger, ch_pair.champion_version AS champion, count(*) AS scores,
       round(avg(abs(ch.risk - ch_pair.risk))::numeric, 4) AS mean_abs_diff,
       round(avg((ch_pair.risk >= ch_pair.threshold)::int)::numeric, 4) AS champion_alert_rate,
       round(avg((ch.risk >= ch.threshold)::int)::numeric, 4) AS challenger_alert_rate,
       round(avg(((ch.risk >= ch.threshold) = (ch_pair.risk >= ch_pair.threshold))::int)::numeric,
             4) AS agreement
FROM scores ch
JOIN LATERAL (
    SELECT c.model_version AS champion_version, c.risk, c.threshold FROM scores c
    WHERE c.device_id = ch.device_id AND c.ts = ch.ts AND c.role = 'champion'
    LIMIT 1
) ch_pair ON true
WHERE ch.role = 'challenger' AND $__timeFilter(ch.ts)
GROUP BY 1, 2
ORDER BY 1, 2
""".strip()


def build() -> dm.Dashboard:
    return (
        p.new_dashboard(
            UID,
            "citywatch: model monitoring",
            "How the models behave on live data: the distribution of risk scores, feature "
            "drift (PSI) and the challenger scored in shadow beside the champion.",
            ["models"],
        )
        .with_panel(
            p.bar_chart(
                "Risk score distribution",
                f"Scores in the range by risk, in {BINS} bins, champion and challenger.",
                SQL(DISTRIBUTION_SQL),
                "risk_from",
                horizontal=False,
            )
        )
        .with_panel(
            p.time_series(
                "Feature drift (PSI)",
                "Population stability index per feature and asset type against the training "
                "data. Above 0.2 is a material shift.",
                SQL(DRIFT_SQL),
            )
            .span_nulls(True)  # drift windows are minutes apart: join them
            .thresholds(
                p.dashboard.ThresholdsConfig()
                .mode(dm.ThresholdsMode.ABSOLUTE)
                .steps([dm.Threshold(value=None, color="green"), dm.Threshold(0.2, "red")])
            )
        )
        .with_panel(
            p.time_series(
                "Champion against challenger: mean risk",
                "Mean risk per bucket of each role and model version on the same readings.",
                SQL(ROLES_SQL),
                unit="percentunit",
            )
        )
        .with_panel(
            p.table_panel(
                "Champion against challenger: agreement",
                "On the readings both scored: mean absolute risk difference, each model's "
                "share of scores at or above its threshold, and how often they agree.",
                SQL(AGREEMENT_SQL),
            )
        )
        .build()
    )
