"""Dashboard 5, water quality: a station's incident probability now and the next 48 hours.

Reads ``station_outlook`` (migration 40), one row per scored reading of a
water-quality station (see docs/water-quality.md); the horizons are empty
while a station has no supervised model yet.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models import dashboard as dm

from . import panels as p
from .sdk import SQL, datasource_ref
from .sql import bucket, gapfilled

UID = "citywatch-water-quality"

# Stations with the highest latest 48-hour outlook first, so the default is the one to watch.
STATION_VARIABLE_SQL = """
SELECT asset_id FROM (
    SELECT DISTINCT ON (asset_id) asset_id, p_48h, event_probability
    FROM station_outlook ORDER BY asset_id, ts DESC
) latest
ORDER BY p_48h DESC NULLS LAST, event_probability DESC, asset_id
""".strip()

OUTLOOK_SQL = gapfilled(
    f"""SELECT {bucket("ts")} AS bucket, max(event_probability) AS "incident now",
       avg(p_1h) AS "within 1 h", avg(p_6h) AS "within 6 h", avg(p_24h) AS "within 24 h",
       avg(p_48h) AS "within 48 h"
FROM station_outlook
WHERE asset_id = '$station' AND $__timeFilter(ts)
GROUP BY 1""",
    ['"incident now"', '"within 1 h"', '"within 6 h"', '"within 24 h"', '"within 48 h"'],
)

LATEST_48H_SQL = """
SELECT p_48h AS "incident within 48 h"
FROM station_outlook
WHERE asset_id = '$station' AND $__timeFilter(ts) AND p_48h IS NOT NULL
ORDER BY ts DESC LIMIT 1
""".strip()

STATIONS_SQL = """
SELECT asset_id AS station, ts AS "scored at", round(p_48h::numeric, 3) AS "48 h",
       round(p_24h::numeric, 3) AS "24 h", round(p_6h::numeric, 3) AS "6 h",
       round(event_probability::numeric, 3) AS "now", alarm, model_version
FROM (
    SELECT DISTINCT ON (asset_id) *
    FROM station_outlook
    WHERE $__timeFilter(ts)
    ORDER BY asset_id, ts DESC
) latest
ORDER BY p_48h DESC NULLS LAST, event_probability DESC
LIMIT 100
""".strip()


def build() -> dm.Dashboard:
    station = (
        dashboard.QueryVariable("station")
        .label("Station")
        .description("A water-quality station; the highest 48-hour outlook comes first.")
        .datasource(datasource_ref())
        .query(STATION_VARIABLE_SQL)
        .refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dm.VariableSort.DISABLED)
    )
    return (
        p.new_dashboard(
            UID,
            "citywatch: water quality",
            "Water-quality stations: the probability of a quality incident now and "
            "within the next 1, 6, 24 and 48 hours, from the stream's own features.",
            ["water-quality"],
        )
        .with_variable(station)
        .with_panel(
            p.time_series(
                "Incident outlook: $station",
                "Probability of a quality incident now (max per bucket) and within the "
                "next 1/6/24/48 hours (mean per bucket). The horizons appear once the "
                "station has a supervised model (labelled incidents).",
                SQL(OUTLOOK_SQL, "A"),
                unit="percentunit",
                w=18,
                h=10,
            )
        )
        .with_panel(
            p.stat_panel(
                "Incident within 48 h: $station",
                "The latest 48-hour outlook of the station in the range.",
                SQL(LATEST_48H_SQL),
                unit="percentunit",
            )
        )
        .with_panel(
            p.table_panel(
                "Stations by 48-hour outlook",
                "Each station's latest outlook in the range, highest 48-hour probability first.",
                SQL(STATIONS_SQL),
                w=24,
            )
        )
        .build()
    )
