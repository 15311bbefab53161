"""Database schema: versioned, idempotent migrations.

Two flavours share every table and view name, so every query and dashboard
works on both:

- ``timescaledb`` when the extension is available: hypertables, compression,
  continuous aggregates;
- ``postgres`` otherwise: native daily range partitions and incrementally
  refreshed rollup tables (see ``storage/partitioning.sql``, ``storage/rollups.py``).

A migration's SQL is either one string (both flavours) or a dict keyed by
flavour. The flavour is chosen once, when the first flavoured migration runs,
and recorded in ``schema_migrations``; later runs keep it even if TimescaleDB
appears or disappears. Each migration runs once, inside a transaction; an
advisory lock keeps concurrent workers from racing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg

from storage.rollups import realtime_sql, rollup_sql

log = logging.getLogger(__name__)

_LOCK_KEY = 0x63697479  # "city": one advisory lock for all schema changes

POSTGRES = "postgres"
TIMESCALEDB = "timescaledb"
FLAVOURS = (POSTGRES, TIMESCALEDB)
_SQL_DIR = Path(__file__).resolve().parent

MIGRATIONS: list[tuple[int, str, str | dict[str, str]]] = [
    (
        1,
        "core tables",
        """
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
            source      jsonb NOT NULL DEFAULT '{}'::jsonb,
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
            status        text NOT NULL CHECK (status IN ('open', 'closed')),
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
        """
        -- LoRaWAN identity and routing zone of a device (B fills them, E routes by zone).
        ALTER TABLE devices
            ADD COLUMN dev_eui          text,
            ADD COLUMN zone             text,
            ADD COLUMN registry_version integer;
        CREATE UNIQUE INDEX devices_dev_eui_idx ON devices (dev_eui) WHERE dev_eui IS NOT NULL;

        -- A challenger scores in shadow beside the champion; only the champion alerts.
        ALTER TABLE scores
            ADD COLUMN role text NOT NULL DEFAULT 'champion'
                CHECK (role IN ('champion', 'challenger'));

        -- Why the model scored high: LightGBM pred_contrib for scores at or above
        -- the threshold, {feature: contribution}, plus the bias under "_bias".
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
                ('fault_confirmed', 'false_alarm', 'no_access', 'maintenance')),
            source       text NOT NULL CHECK (source IN ('alert', 'work_order')),
            detail       jsonb NOT NULL DEFAULT '{}'::jsonb
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
        """
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
            role         text NOT NULL CHECK (role IN ('champion', 'challenger')),
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
    (
        5,
        "alert lifecycle for crews: transitions, teams, users, routing, channels, deliveries",
        """
        -- The worker's 'closed' becomes the lifecycle's automatic resolution.
        ALTER TABLE alerts DROP CONSTRAINT IF EXISTS alerts_status_check;
        DROP INDEX IF EXISTS alerts_one_open_per_asset;
        ALTER TABLE alerts
            ADD COLUMN source           text NOT NULL DEFAULT 'model',
            ADD COLUMN severity         text NOT NULL DEFAULT 'warning',
            ADD COLUMN zone             text,
            ADD COLUMN team             text,
            ADD COLUMN title            text,
            ADD COLUMN acknowledged_at  timestamptz,
            ADD COLUMN acknowledged_by  text,
            ADD COLUMN assigned_to      text,
            ADD COLUMN assigned_at      timestamptz,
            ADD COLUMN assigned_by      text,
            ADD COLUMN resolved_by      text,
            ADD COLUMN outcome          text,
            ADD COLUMN escalation_level integer NOT NULL DEFAULT 0,
            ADD COLUMN escalated_at     timestamptz,
            -- Wall-clock time the alert reached us (opened_at is the reading's time);
            -- the acknowledgement timeout counts from here.
            ADD COLUMN raised_at        timestamptz NOT NULL DEFAULT now();
        UPDATE alerts SET status = 'resolved', resolved_by = 'system', outcome = 'auto'
            WHERE status = 'closed';
        ALTER TABLE alerts
            ADD CONSTRAINT alerts_status_check
                CHECK (status IN ('open', 'acknowledged', 'assigned', 'resolved')),
            ADD CONSTRAINT alerts_severity_check
                CHECK (severity IN ('info', 'warning', 'critical')),
            ADD CONSTRAINT alerts_outcome_check
                CHECK (outcome IN ('fault_confirmed', 'false_alarm', 'no_access', 'auto'));
        -- One live (not yet resolved) alert per asset, whoever raised it.
        CREATE UNIQUE INDEX alerts_one_live_per_asset ON alerts (asset_id)
            WHERE status <> 'resolved';
        CREATE INDEX alerts_team_status_idx ON alerts (team, status);

        -- The outbox: every transition, who and when; pg_notify wakes the notifier.
        -- No foreign key to alerts: `TRUNCATE alerts` (tests, resets) must keep working.
        CREATE TABLE alert_transitions (
            transition_id bigserial PRIMARY KEY,
            alert_id      text NOT NULL,
            action        text NOT NULL CHECK (action IN
                ('open', 'acknowledge', 'assign', 'resolve', 'escalate')),
            from_status   text,
            to_status     text NOT NULL,
            actor         text NOT NULL,
            at            timestamptz NOT NULL DEFAULT clock_timestamp(),
            team          text,
            level         integer NOT NULL DEFAULT 0,
            detail        jsonb NOT NULL DEFAULT '{}'::jsonb,
            fanned_out    boolean NOT NULL DEFAULT false
        );
        CREATE INDEX alert_transitions_alert_idx ON alert_transitions (alert_id, at);
        CREATE INDEX alert_transitions_pending_idx ON alert_transitions (transition_id)
            WHERE NOT fanned_out;

        CREATE TABLE alert_comments (
            comment_id bigserial PRIMARY KEY,
            alert_id   text NOT NULL,
            author     text NOT NULL,
            at         timestamptz NOT NULL DEFAULT now(),
            body       text NOT NULL
        );

        CREATE TABLE crew_teams (
            team       text PRIMARY KEY,
            -- Escalate when nobody acknowledges within this time (NULL: never).
            ack_timeout_s integer CHECK (ack_timeout_s > 0),
            escalate_to   text REFERENCES crew_teams (team),
            created_at timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE crew_users (
            user_name  text PRIMARY KEY,
            role       text NOT NULL CHECK (role IN ('crew', 'engineer', 'admin')),
            team       text REFERENCES crew_teams (team),
            email      text,
            created_at timestamptz NOT NULL DEFAULT now(),
            CHECK (role <> 'crew' OR team IS NOT NULL)
        );

        -- Only a SHA-256 of each token is stored; the token is shown once.
        CREATE TABLE crew_tokens (
            token_hash text PRIMARY KEY,
            user_name  text NOT NULL REFERENCES crew_users (user_name) ON DELETE CASCADE,
            created_at timestamptz NOT NULL DEFAULT now(),
            revoked_at timestamptz
        );

        -- First matching rule by priority wins; NULL matches anything.
        CREATE TABLE routing_rules (
            rule_id      bigserial PRIMARY KEY,
            priority     integer NOT NULL DEFAULT 100,
            asset_type   text,
            zone         text,
            min_severity text NOT NULL DEFAULT 'info'
                CHECK (min_severity IN ('info', 'warning', 'critical')),
            team         text NOT NULL REFERENCES crew_teams (team),
            created_at   timestamptz NOT NULL DEFAULT now()
        );

        -- A team's channels; min_level > 0 is only used once an alert escalated that far.
        CREATE TABLE notification_channels (
            channel_id text PRIMARY KEY,
            team       text REFERENCES crew_teams (team),
            kind       text NOT NULL CHECK (kind IN ('webhook', 'slack', 'email', 'kafka')),
            target     text NOT NULL,
            min_level  integer NOT NULL DEFAULT 0,
            enabled    boolean NOT NULL DEFAULT true,
            created_at timestamptz NOT NULL DEFAULT now()
        );

        -- The delivery log: one row per (transition, channel) = exactly one notification.
        CREATE TABLE alert_deliveries (
            transition_id   bigint NOT NULL REFERENCES alert_transitions (transition_id)
                ON DELETE CASCADE,
            channel_id      text NOT NULL REFERENCES notification_channels (channel_id)
                ON DELETE CASCADE,
            status          text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'sent', 'failed')),
            attempts        integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            last_error      text,
            created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
            delivered_at    timestamptz,
            PRIMARY KEY (transition_id, channel_id)
        );
        CREATE INDEX alert_deliveries_due_idx ON alert_deliveries (next_attempt_at)
            WHERE status = 'pending';
        """,
    ),
]


# -- D1: time partitioning, rollups, roles (6-9) --------------------------------------------
MIGRATIONS += [
    (
        6,
        "time partitioning: daily range partitions, or TimescaleDB hypertables",
        {
            POSTGRES: (_SQL_DIR / "partitioning.sql").read_text(),
            TIMESCALEDB: (_SQL_DIR / "timescale.sql").read_text(),
        },
    ),
    (
        7,
        "rollups readings_1m and readings_1h (tables + trigger, or continuous aggregates)",
        {POSTGRES: rollup_sql(POSTGRES), TIMESCALEDB: rollup_sql(TIMESCALEDB)},
    ),
    (8, "roles citywatch_writer and citywatch_reader", (_SQL_DIR / "roles.sql").read_text()),
    (
        9,
        "real-time rollups: readings_1m/_1h include the minutes not yet refreshed",
        {POSTGRES: realtime_sql(POSTGRES), TIMESCALEDB: realtime_sql(TIMESCALEDB)},
    ),
]


# -- M: maintenance events from the stream (10) ---------------------------------------------
MIGRATIONS += [
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
]


# -- F: dead letters keep the size and hash of what arrived (11) ---------------------------
MIGRATIONS += [
    (
        11,
        "deadletters.raw_size and raw_sha256: the original payload's size and hash",
        """
        -- An oversized payload is kept truncated; its original size and sha256
        -- still identify it (and let an operator match it against a capture).
        ALTER TABLE deadletters ADD COLUMN raw_size bigint, ADD COLUMN raw_sha256 text;
        """,
    ),
]


# -- F: failed notifications and model load failures (12) -------------------------------
MIGRATIONS += [
    (
        12,
        "notification give-ups and failing-since; model file checksums and load failures",
        """
        -- When a delivery started failing and when it was given up: the pipeline
        -- dashboard and an engineers' alert rule read them.
        ALTER TABLE alert_deliveries
            ADD COLUMN first_error_at timestamptz,
            ADD COLUMN failed_at      timestamptz;
        UPDATE alert_deliveries SET failed_at = next_attempt_at WHERE status = 'failed';
        CREATE INDEX alert_deliveries_trouble_idx ON alert_deliveries (channel_id)
            WHERE status = 'failed' OR (status = 'pending' AND last_error IS NOT NULL);

        -- sha256 of every bundle file at registration ({"card.json": "ab12..", ...});
        -- NULL for versions registered earlier (re-register to fill it in).
        ALTER TABLE model_registry ADD COLUMN file_sha256 jsonb;

        -- Why a model was refused at promotion or could not be loaded by a worker.
        -- No foreign key: a worker may report a version known only to its file store.
        CREATE TABLE model_load_failures (
            failure_id bigserial PRIMARY KEY,
            at         timestamptz NOT NULL DEFAULT clock_timestamp(),
            version    text NOT NULL,
            role       text NOT NULL CHECK (role IN ('champion', 'challenger')),
            stage      text NOT NULL CHECK (stage IN ('promote', 'load')),
            reason     text NOT NULL,
            kept       text,
            worker     text NOT NULL
        );
        CREATE INDEX model_load_failures_version_idx
            ON model_load_failures (version, failure_id DESC);
        """,
    ),
]


# -- F: which Kafka offsets the stored readings came from (13) -----------------------------
MIGRATIONS += [
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


# -- M: a webhook-only API role for Grafana (15) ---------------------------------------------
MIGRATIONS += [
    (
        15,
        "crew_users: role 'webhook' (may only post Grafana's webhook)",
        """
        -- Grafana held a full engineer token; this role can open and resolve
        -- Grafana's alerts and nothing else (enforced by the API's guard).
        ALTER TABLE crew_users DROP CONSTRAINT crew_users_role_check;
        ALTER TABLE crew_users ADD CONSTRAINT crew_users_role_check
            CHECK (role IN ('crew', 'engineer', 'admin', 'webhook'));
        """,
    ),
]


# -- N: LoRaWAN downlinks, every command sent to a sensor and why (20) ------------------------
MIGRATIONS += [
    (
        20,
        "downlink_commands: every command sent (or refused) to a sensor, with its reason",
        """
        -- A crew's request is stored 'requested' and sent by `citywatch downlinks run`;
        -- the adaptive-sampling controller stores what it sent or refused (no encoder,
        -- duty-cycle limit), so a sensor's reporting history can be explained.
        CREATE TABLE downlink_commands (
            command_id   bigserial PRIMARY KEY,
            created_at   timestamptz NOT NULL DEFAULT now(),
            event_at     timestamptz,
            device_id    text NOT NULL,
            asset_id     text,
            command      text NOT NULL CHECK (command IN ('set_interval', 'request_reading')),
            args         jsonb NOT NULL DEFAULT '{}'::jsonb,
            reason       text NOT NULL,
            requested_by text NOT NULL,
            alert_id     text,
            status       text NOT NULL
                CHECK (status IN ('requested', 'sent', 'refused', 'failed')),
            detail       text,
            network      text,
            topic        text,
            f_port       integer,
            payload      bytea,
            sent_at      timestamptz
        );
        CREATE INDEX downlink_commands_device_idx ON downlink_commands (device_id, created_at DESC);
        CREATE INDEX downlink_commands_asset_idx ON downlink_commands (asset_id, created_at DESC);
        CREATE INDEX downlink_commands_requested_idx ON downlink_commands (command_id)
            WHERE status = 'requested';
        """,
    ),
]


# -- I: which model produced a score and an alert; the cold-start anomaly score (50) ---------
MIGRATIONS += [
    (
        50,
        "scores.model_kind and anomaly_score; alerts.model_kind",
        """
        -- 'failure_risk' (supervised) or 'anomaly' (cold-start health baseline, no
        -- labels): which one the alerting risk came from. NULL on rows written
        -- before: those were all failure risk. Nullable and without a CHECK so the
        -- change is metadata-only on compressed hypertables and partitions.
        ALTER TABLE scores
            ADD COLUMN model_kind    text,
            ADD COLUMN anomaly_score double precision;
        ALTER TABLE alerts ADD COLUMN model_kind text;
        """,
    ),
]


# -- I: time to failure with an interval, on every score and alert (51) ----------------------
MIGRATIONS += [
    (
        51,
        "scores.ttf_low_days, ttf_median_days, ttf_high_days; alerts.outlook",
        """
        -- Remaining useful life in days (10 %, median, 90 %) from the champion's
        -- remaining-life model; NULL when it has none (bundles from before).
        ALTER TABLE scores
            ADD COLUMN ttf_low_days    double precision,
            ADD COLUMN ttf_median_days double precision,
            ADD COLUMN ttf_high_days   double precision;
        -- "likely to fail in 9-20 days", as the crew saw it when the alert opened.
        ALTER TABLE alerts ADD COLUMN outlook text;
        """,
    ),
]


def timescale_available(conn: psycopg.Connection) -> bool:
    """True when the TimescaleDB extension can be created in this database."""
    row = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return row is not None


def recorded_flavour(conn: psycopg.Connection) -> str | None:
    """The flavour this database was migrated with, or None before migration 6."""
    if conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is None:
        return None
    has_column = conn.execute(
        "SELECT 1 FROM information_schema.columns"
        " WHERE table_name = 'schema_migrations' AND column_name = 'flavour'"
        " AND table_schema = current_schema()"
    ).fetchone()
    if not has_column:
        return None
    row = conn.execute(
        "SELECT flavour FROM schema_migrations WHERE flavour IS NOT NULL ORDER BY version LIMIT 1"
    ).fetchone()
    return row[0] if row else None


def _choose_flavour(conn: psycopg.Connection, requested: str, done: set[int]) -> str:
    recorded = recorded_flavour(conn)
    if recorded is not None:
        if requested not in ("auto", recorded):
            raise ValueError(
                f"database was migrated as {recorded!r}; it cannot switch to {requested!r}"
            )
        return recorded
    if requested != "auto":
        if requested not in FLAVOURS:
            raise ValueError(f"unknown storage flavour {requested!r}; use one of {FLAVOURS}")
        return requested
    # Version 100 was the old TimescaleDB-only step: such databases are hypertables already.
    if 100 in done or timescale_available(conn):
        return TIMESCALEDB
    return POSTGRES


def _pending(conn: psycopg.Connection, target: int | None) -> bool:
    """True unless every migration up to target is recorded (read-only check)."""
    if recorded_flavour(conn) is None:
        return True
    done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
    return any(v not in done for v, _, _ in MIGRATIONS if target is None or v <= target)


def migrate(database_url: str, flavour: str = "auto", target: int | None = None) -> list[int]:
    """Apply pending migrations; return the versions applied now (empty when current).

    Parameters
    ----------
    database_url : str
        A libpq connection string.
    flavour : str
        'auto' (TimescaleDB when available), 'postgres' or 'timescaledb'. Only the
        first migration that has flavours decides; later calls must agree or say 'auto'.
    target : int, optional
        Stop after this version (for upgrade tests); default: everything.
    """
    applied_now: list[int] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        # Services log in as roles that may not create or alter anything
        # (storage/service_roles.py): a current schema needs no DDL at all.
        if not _pending(conn, target):
            _choose_flavour(conn, flavour, set())  # still refuses a flavour switch
            return applied_now
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS flavour text")
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            chosen = _choose_flavour(conn, flavour, done)
            for version, name, sql in sorted(MIGRATIONS, key=lambda m: m[0]):
                if version in done or (target is not None and version > target):
                    continue
                body = sql[chosen] if isinstance(sql, dict) else sql
                with conn.transaction():
                    conn.execute(body)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, flavour)"
                        " VALUES (%s, %s, %s)",
                        (version, name, chosen if isinstance(sql, dict) else None),
                    )
                log.info("applied migration %d (%s): %s", version, chosen, name)
                applied_now.append(version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


# Water networks (J): a network (its EPANET model), its district metered areas,
# and which node or pipe each sensor device sits on. The sensors themselves are
# ordinary ``devices`` rows (asset_id = '<network>.<district>'), so readings,
# routing and the inbox treat a district like any asset.
MIGRATIONS += [
    (
        30,
        "water networks, districts and network sensors",
        """
        CREATE TABLE water_networks (
            network_id      text PRIMARY KEY,
            inp_file        text NOT NULL,
            inp_sha256      text NOT NULL,
            junctions       integer NOT NULL,
            pipes           integer NOT NULL,
            origin_lat      double precision,
            origin_lon      double precision,
            metres_per_unit double precision NOT NULL DEFAULT 1,
            registered_at   timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE network_districts (
            network_id   text NOT NULL REFERENCES water_networks ON DELETE CASCADE,
            district_id  text NOT NULL,
            asset_id     text NOT NULL UNIQUE,
            nodes        jsonb NOT NULL,
            inlet_links  jsonb NOT NULL,
            PRIMARY KEY (network_id, district_id)
        );
        CREATE TABLE network_sensors (
            device_id    text PRIMARY KEY,  -- a devices row; no FK, devices reload on their own
            network_id   text NOT NULL,
            district_id  text NOT NULL,
            element_kind text NOT NULL CHECK (element_kind IN ('node', 'link')),
            element_id   text NOT NULL,
            metric       text NOT NULL,
            x            double precision,
            y            double precision,
            FOREIGN KEY (network_id, district_id) REFERENCES network_districts ON DELETE CASCADE
        );
        CREATE INDEX network_sensors_district_idx ON network_sensors (network_id, district_id);
        """,
    ),
]

# Ground truth of simulated (or surveyed) leaks: where, how big, when.
MIGRATIONS += [
    (
        31,
        "network leak ground truth",
        """
        CREATE TABLE network_leaks (
            network_id  text NOT NULL,
            asset_id    text NOT NULL,
            node        text NOT NULL,
            diameter_m  double precision NOT NULL,
            kind        text NOT NULL CHECK (kind IN ('abrupt', 'incipient')),
            start_at    timestamptz NOT NULL,
            peak_at     timestamptz NOT NULL,
            end_at      timestamptz,
            source      text NOT NULL DEFAULT 'simulator',
            PRIMARY KEY (network_id, node, start_at)
        );
        """,
    ),
]

# Where the worker thinks a leak is: the ranked candidate nodes of a district at
# each step its leak statistic is above threshold, with map coordinates.
MIGRATIONS += [
    (
        32,
        "leak localisation candidates",
        """
        CREATE TABLE leak_candidates (
            ts        timestamptz NOT NULL,
            asset_id  text NOT NULL,
            rank      smallint NOT NULL,
            node      text NOT NULL,
            score     double precision NOT NULL,
            lat       double precision,
            lon       double precision,
            x         double precision,
            y         double precision,
            PRIMARY KEY (asset_id, ts, rank)
        );
        CREATE INDEX leak_candidates_ts_idx ON leak_candidates (ts);
        """,
    ),
]

# -- K: water-quality outlook (40) ------------------------------------------------------
# One row per scored reading of a water-quality station (models/water_quality_model.py);
# the horizons are NULL while the station has no supervised model (no labels) yet.
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
MIGRATIONS += [
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
