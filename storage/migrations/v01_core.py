"""Migrations 1-4: devices, readings, scores, alerts, dead letters; contracts; the
device registry; the model registry."""

from __future__ import annotations

from core.vocabulary import LABEL_OUTCOMES, LABEL_SOURCES, MODEL_ROLES, WORKER_ALERT_STATUSES
from storage.migrations.base import Migration, sql_in

MIGRATIONS: list[Migration] = [
    (
        1,
        "core tables",
        f"""
        CREATE TABLE devices (
            device_id     text PRIMARY KEY,
            asset_id      text NOT NULL,
            asset_type    text NOT NULL,
            lat           double precision,
            lon           double precision,
            installed_at  timestamptz,
            codec         text,
            registered_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX devices_asset_idx ON devices (asset_id);

        CREATE TABLE readings (
            ts          timestamptz NOT NULL,
            device_id   text NOT NULL,
            asset_id    text NOT NULL,
            asset_type  text NOT NULL,
            metrics     jsonb NOT NULL,
            source      jsonb NOT NULL DEFAULT '{{}}'::jsonb,
            ingested_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (device_id, ts)
        );
        CREATE INDEX readings_ts_idx ON readings (ts DESC);

        CREATE TABLE scores (
            ts            timestamptz NOT NULL,
            device_id     text NOT NULL,
            asset_id      text NOT NULL,
            asset_type    text NOT NULL,
            model_version text NOT NULL,
            risk          double precision NOT NULL,
            threshold     double precision NOT NULL,
            scored_at     timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (device_id, ts, model_version)
        );
        CREATE INDEX scores_asset_ts_idx ON scores (asset_id, ts DESC);

        CREATE TABLE alerts (
            alert_id      text PRIMARY KEY,
            asset_id      text NOT NULL,
            device_id     text NOT NULL,
            asset_type    text NOT NULL,
            status        text NOT NULL CHECK (status IN {sql_in(WORKER_ALERT_STATUSES)}),
            opened_at     timestamptz NOT NULL,
            closed_at     timestamptz,
            peak_risk     double precision NOT NULL,
            last_risk     double precision NOT NULL,
            threshold     double precision NOT NULL,
            model_version text NOT NULL,
            updated_at    timestamptz NOT NULL DEFAULT now()
        );
        -- The database enforces the worker's rule: one open alert per asset.
        CREATE UNIQUE INDEX alerts_one_open_per_asset ON alerts (asset_id)
            WHERE status = 'open';

        CREATE TABLE deadletters (
            deadletter_id    text PRIMARY KEY,
            received_at      timestamptz NOT NULL DEFAULT now(),
            stage            text NOT NULL,
            reason           text NOT NULL,
            detail           text NOT NULL,
            source_topic     text,
            source_partition integer,
            source_offset    bigint,
            device_id        text,
            raw              bytea NOT NULL
        );
        CREATE INDEX deadletters_reason_idx ON deadletters (reason, received_at DESC);

        -- Ground truth: injected (simulator) or recorded (work orders) failures.
        -- failed_at is NULL while an asset is still degrading.
        CREATE TABLE failures (
            asset_id               text NOT NULL,
            device_id              text NOT NULL,
            asset_type             text NOT NULL,
            mode                   text NOT NULL,
            degradation_started_at timestamptz NOT NULL,
            failed_at              timestamptz,
            source                 text NOT NULL DEFAULT 'simulator',
            PRIMARY KEY (asset_id, degradation_started_at)
        );
        """,
    ),
    (
        2,
        "shared contracts: device zones, score roles, explanations, labels, stats",
        f"""
        -- LoRaWAN identity and routing zone of a device (B fills them, E routes by zone).
        ALTER TABLE devices
            ADD COLUMN dev_eui          text,
            ADD COLUMN zone             text,
            ADD COLUMN registry_version integer;
        CREATE UNIQUE INDEX devices_dev_eui_idx ON devices (dev_eui) WHERE dev_eui IS NOT NULL;

        -- A challenger scores in shadow beside the champion; only the champion alerts.
        ALTER TABLE scores
            ADD COLUMN role text NOT NULL DEFAULT 'champion'
                CHECK (role IN {sql_in(MODEL_ROLES)});

        -- Why the model scored high: LightGBM pred_contrib for scores at or above
        -- the threshold, {{feature: contribution}}, plus the bias under "_bias".
        CREATE TABLE score_explanations (
            ts            timestamptz NOT NULL,
            device_id     text NOT NULL,
            asset_id      text NOT NULL,
            model_version text NOT NULL,
            risk          double precision NOT NULL,
            contributions jsonb NOT NULL,
            PRIMARY KEY (device_id, ts, model_version)
        );
        CREATE INDEX score_explanations_asset_idx ON score_explanations (asset_id, ts DESC);

        -- Labels for training beyond the simulator's ground truth: crews' alert
        -- outcomes (E) and imported work orders (C). label_id is 'alert:<id>' or
        -- 'work_order:<id>', so re-importing is idempotent.
        CREATE TABLE labels (
            label_id     text PRIMARY KEY,
            asset_id     text NOT NULL,
            device_id    text,
            observed_at  timestamptz NOT NULL,
            window_start timestamptz,
            outcome      text NOT NULL CHECK (outcome IN
                {sql_in(LABEL_OUTCOMES)}),
            source       text NOT NULL CHECK (source IN {sql_in(LABEL_SOURCES)}),
            detail       jsonb NOT NULL DEFAULT '{{}}'::jsonb
        );
        CREATE INDEX labels_asset_idx ON labels (asset_id, observed_at);

        -- One row per worker per stats interval, for the pipeline-health dashboard.
        CREATE TABLE worker_stats (
            ts               timestamptz NOT NULL,
            worker_id        text NOT NULL,
            consumed         bigint NOT NULL,
            stored           bigint NOT NULL,
            scored           bigint NOT NULL,
            deadletters      bigint NOT NULL,
            consumer_lag     bigint,
            batch_ms_p50     double precision,
            batch_ms_p99     double precision,
            PRIMARY KEY (worker_id, ts)
        );
        """,
    ),
    (
        3,
        "versioned LoRaWAN device registry",
        """
        -- Every distinct registry document loaded, newest = highest version. The
        -- document is the normalised entry list; sha256 is over its canonical JSON,
        -- so reloading unchanged content (YAML or CSV alike) adds no version.
        CREATE TABLE device_registry_versions (
            version   serial PRIMARY KEY,
            loaded_at timestamptz NOT NULL DEFAULT now(),
            source    text NOT NULL,
            sha256    text NOT NULL,
            entries   integer NOT NULL,
            document  jsonb NOT NULL
        );
        CREATE INDEX device_registry_versions_sha_idx ON device_registry_versions (sha256);
        """,
    ),
    (
        4,
        "model registry, promotions, feature drift",
        f"""
        -- One row per registered model version; the files stay in the model store
        -- (settings.models_path/<version>/), the card is copied here so it can be
        -- queried and audited without the files.
        CREATE TABLE model_registry (
            version        text PRIMARY KEY,
            created_at     timestamptz NOT NULL,
            registered_at  timestamptz NOT NULL DEFAULT now(),
            owner          text,
            data_from      timestamptz,
            data_to        timestamptz,
            data_sha256    text NOT NULL,
            asset_types    text[] NOT NULL,
            card           jsonb NOT NULL
        );

        -- Append-only log of champion/challenger changes; the latest row per role
        -- is the active model (version NULL: no challenger). Never updated, so it
        -- is the audit trail too.
        CREATE TABLE model_promotions (
            promotion_id bigserial PRIMARY KEY,
            at           timestamptz NOT NULL DEFAULT clock_timestamp(),
            role         text NOT NULL CHECK (role IN {sql_in(MODEL_ROLES)}),
            version      text REFERENCES model_registry (version),
            previous     text,
            action       text NOT NULL CHECK (action IN
                ('promote', 'rollback', 'set_challenger', 'clear_challenger')),
            actor        text NOT NULL
        );
        CREATE INDEX model_promotions_role_idx ON model_promotions (role, promotion_id DESC);

        -- Population stability index of each feature over a recent window against
        -- the model's training reference.
        CREATE TABLE feature_drift (
            window_start  timestamptz NOT NULL,
            window_end    timestamptz NOT NULL,
            model_version text NOT NULL,
            asset_type    text NOT NULL,
            feature       text NOT NULL,
            psi           double precision NOT NULL,
            n             integer NOT NULL,
            computed_at   timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (model_version, asset_type, feature, window_end)
        );

        CREATE TABLE drift_alerts (
            model_version text NOT NULL,
            asset_type    text NOT NULL,
            feature       text NOT NULL,
            window_start  timestamptz NOT NULL,
            window_end    timestamptz NOT NULL,
            psi           double precision NOT NULL,
            threshold     double precision NOT NULL,
            raised_at     timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (model_version, asset_type, feature, window_end)
        );
        CREATE INDEX drift_alerts_raised_idx ON drift_alerts (raised_at DESC);
        """,
    ),
]
