"""Migrations 10-13: what the worker records beside readings: maintenance events, dead
letters' original size, notification give-ups and model load failures, stream offsets."""

from __future__ import annotations

from core.vocabulary import MODEL_ROLES
from storage.migrations.base import Migration, sql_in

MIGRATIONS: list[Migration] = [
    # -- M: maintenance events from the stream (10) ---------------------------------------------
    (
        10,
        "maintenance_events: repairs seen by the worker (feature baseline resets)",
        """
        -- One row per repair the worker absorbed; training reads them as resets
        -- so offline features restart where the worker's did.
        CREATE TABLE maintenance_events (
            device_id   text NOT NULL,
            asset_id    text NOT NULL,
            asset_type  text NOT NULL,
            ts          timestamptz NOT NULL,
            source      jsonb NOT NULL DEFAULT '{}'::jsonb,
            ingested_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (device_id, ts)
        );
        CREATE INDEX maintenance_events_asset_idx ON maintenance_events (asset_id, ts);
        """,
    ),
    # -- F: dead letters keep the size and hash of what arrived (11) ---------------------------
    (
        11,
        "deadletters.raw_size and raw_sha256: the original payload's size and hash",
        """
        -- An oversized payload is kept truncated; its original size and sha256
        -- still identify it (and let an operator match it against a capture).
        ALTER TABLE deadletters ADD COLUMN raw_size bigint, ADD COLUMN raw_sha256 text;
        """,
    ),
    # -- F: failed notifications and model load failures (12) -------------------------------
    (
        12,
        "notification give-ups and failing-since; model file checksums and load failures",
        f"""
        -- When a delivery started failing and when it was given up: the pipeline
        -- dashboard and an engineers' alert rule read them.
        ALTER TABLE alert_deliveries
            ADD COLUMN first_error_at timestamptz,
            ADD COLUMN failed_at      timestamptz;
        UPDATE alert_deliveries SET failed_at = next_attempt_at WHERE status = 'failed';
        CREATE INDEX alert_deliveries_trouble_idx ON alert_deliveries (channel_id)
            WHERE status = 'failed' OR (status = 'pending' AND last_error IS NOT NULL);

        -- sha256 of every bundle file at registration ({{"card.json": "ab12..", ...}});
        -- NULL for versions registered earlier (re-register to fill it in).
        ALTER TABLE model_registry ADD COLUMN file_sha256 jsonb;

        -- Why a model was refused at promotion or could not be loaded by a worker.
        -- No foreign key: a worker may report a version known only to its file store.
        CREATE TABLE model_load_failures (
            failure_id bigserial PRIMARY KEY,
            at         timestamptz NOT NULL DEFAULT clock_timestamp(),
            version    text NOT NULL,
            role       text NOT NULL CHECK (role IN {sql_in(MODEL_ROLES)}),
            stage      text NOT NULL CHECK (stage IN ('promote', 'load')),
            reason     text NOT NULL,
            kept       text,
            worker     text NOT NULL
        );
        CREATE INDEX model_load_failures_version_idx
            ON model_load_failures (version, failure_id DESC);
        """,
    ),
    # -- F: which Kafka offsets the stored readings came from (13) -----------------------------
    (
        13,
        "stream_offsets: the highest readings offset stored, per topic partition",
        """
        -- Written in each batch's transaction with its rows, so it never disagrees
        -- with them: a reading at or below it that finds its key taken is a replay
        -- (stored before a crash), above it another message: a duplicate dead letter.
        CREATE TABLE stream_offsets (
            topic      text NOT NULL,
            partition  integer NOT NULL,
            max_offset bigint NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (topic, partition)
        );
        """,
    ),
]
