"""Dashboard 5, water networks: the districts' sensors on a map, the leak statistic of each
district, the suspected leaks with their ranked candidates (docs/water-networks.md)."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as dm

from . import panels as p
from .sdk import SQL
from .sql import bucket, gapfilled_series

UID = "citywatch-networks"
MODEL = "leak-residual-v1"  # streams.leaks.MODEL_VERSION

SENSORS_MAP_SQL = """
SELECT d.device_id AS asset_id, d.asset_type, d.lat AS latitude, d.lon AS longitude,
       0.0 AS risk
FROM devices d JOIN network_sensors s USING (device_id)
WHERE d.lat IS NOT NULL AND d.lon IS NOT NULL
""".strip()

# The latest ranking of each district in the range; rank 1 red, the others orange.
CANDIDATES_MAP_SQL = """
SELECT c.asset_id || ' #' || c.rank || ' node ' || c.node AS asset_id,
       'leak candidate' AS asset_type,
       c.lat AS latitude, c.lon AS longitude, CASE WHEN c.rank = 1 THEN 1.0 ELSE 0.6 END AS risk
FROM leak_candidates c
JOIN (SELECT asset_id, max(ts) AS ts FROM leak_candidates WHERE $__timeFilter(ts)
      GROUP BY asset_id) latest USING (asset_id, ts)
WHERE c.lat IS NOT NULL AND c.lon IS NOT NULL
""".strip()

STATISTIC_SQL = gapfilled_series(
    f"""SELECT {bucket("ts")} AS bucket, asset_id AS metric, max(risk) AS value
FROM scores
WHERE model_version = '{MODEL}' AND role = 'champion' AND $__timeFilter(ts)
GROUP BY 1, 2"""
)

SUSPECTED_SQL = f"""
SELECT a.asset_id AS district, a.status, a.opened_at, round(a.peak_risk::numeric, 3) AS peak,
       (SELECT string_agg('node ' || c.node, ', ' ORDER BY c.rank) FROM leak_candidates c
        WHERE c.asset_id = a.asset_id AND c.rank <= 3 AND c.ts = (
            SELECT max(ts) FROM leak_candidates
            WHERE asset_id = a.asset_id AND ts >= a.opened_at - interval '1 day')) AS top3
FROM alerts a
WHERE a.model_version = '{MODEL}' AND $__timeFilter(a.opened_at)
ORDER BY a.opened_at DESC
LIMIT 100
""".strip()

CANDIDATES_SQL = """
SELECT c.ts, c.asset_id AS district, c.rank, c.node, round(c.score::numeric, 2) AS statistic,
       c.lat, c.lon
FROM leak_candidates c
WHERE $__timeFilter(c.ts)
ORDER BY c.ts DESC, c.rank
LIMIT 200
""".strip()


def build() -> dm.Dashboard:
    return (
        p.new_dashboard(
            UID,
            "citywatch: water networks",
            "Districts of the water networks: where their sensors are, each district's leak "
            "statistic against what the hydraulics predict, and the suspected leaks with "
            "their most likely nodes.",
            ["networks", "leaks"],
        )
        .with_panel(
            p.geomap_panel(
                "District sensors",
                "Pressure, flow and level sensors on the nodes and pipes of each network.",
                SQL(SENSORS_MAP_SQL),
            )
        )
        .with_panel(
            p.geomap_panel(
                "Suspected leak locations",
                "Each district's latest candidate nodes in the range: the most likely red, "
                "the next ones orange.",
                SQL(CANDIDATES_MAP_SQL),
            )
        )
        .with_panel(
            p.time_series(
                "Leak statistic by district",
                "Each district's residual test as a risk (0.5 = the detector's threshold): "
                "pressures against the model's prediction for the measured inflow.",
                SQL(STATISTIC_SQL),
                w=24,
            )
        )
        .with_panel(
            p.table_panel(
                "Suspected leaks",
                "Leak alerts opened in the range with the first three candidate nodes.",
                SQL(SUSPECTED_SQL),
            )
        )
        .with_panel(
            p.table_panel(
                "Candidate rankings",
                "Every ranking the worker stored in the range, newest first.",
                SQL(CANDIDATES_SQL),
            )
        )
        .build()
    )
