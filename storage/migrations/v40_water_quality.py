"""Migration 40: the water-quality outlook of each station."""

from __future__ import annotations

from storage.migrations.base import POSTGRES, TIMESCALEDB, Migration

_STATION_OUTLOOK = """
        CREATE TABLE station_outlook (
            ts                timestamptz NOT NULL,
            device_id         text NOT NULL,
            asset_id          text NOT NULL,
            model_version     text NOT NULL,
            event_probability double precision NOT NULL
                CHECK (event_probability >= 0 AND event_probability <= 1),
            alarm             boolean NOT NULL,
            p_1h              double precision CHECK (p_1h >= 0 AND p_1h <= 1),
            p_6h              double precision CHECK (p_6h >= 0 AND p_6h <= 1),
            p_24h             double precision CHECK (p_24h >= 0 AND p_24h <= 1),
            p_48h             double precision CHECK (p_48h >= 0 AND p_48h <= 1),
            scored_at         timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (device_id, ts)
        );
        CREATE INDEX station_outlook_asset_idx ON station_outlook (asset_id, ts DESC);
"""

MIGRATIONS: list[Migration] = [
    (
        40,
        "station_outlook: water-quality incident probability now and within 1/6/24/48 h",
        {
            POSTGRES: _STATION_OUTLOOK,
            # Like scores: weekly chunks compressed per device once a week old.
            TIMESCALEDB: _STATION_OUTLOOK
            + """
        SELECT create_hypertable('station_outlook', 'ts', chunk_time_interval => INTERVAL '7 days');
        ALTER TABLE station_outlook SET (timescaledb.compress,
                                         timescaledb.compress_segmentby = 'device_id',
                                         timescaledb.compress_orderby = 'ts DESC');
        SELECT add_compression_policy('station_outlook', INTERVAL '7 days');
""",
        },
    ),
]
