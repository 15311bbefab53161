"""Migrations 5 and 15: the alert lifecycle for crews (teams, users, routing, channels,
deliveries) and the webhook-only role."""

from __future__ import annotations

from core.vocabulary import (
    ALERT_ACTIONS,
    ALERT_OUTCOMES,
    ALERT_STATUSES,
    CHANNEL_KINDS,
    DELIVERY_STATUSES,
    ROLES,
    SEVERITIES,
)
from storage.migrations.base import Migration, sql_in

# CHECK constraints are spelled from core.vocabulary, except crew_users' roles in 5:
# those are the words of that time, and 15 widens them to ROLES.
MIGRATIONS: list[Migration] = [
    (
        5,
        "alert lifecycle for crews: transitions, teams, users, routing, channels, deliveries",
        f"""
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
                CHECK (status IN {sql_in(ALERT_STATUSES)}),
            ADD CONSTRAINT alerts_severity_check
                CHECK (severity IN {sql_in(SEVERITIES)}),
            ADD CONSTRAINT alerts_outcome_check
                CHECK (outcome IN {sql_in(ALERT_OUTCOMES)});
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
                {sql_in(ALERT_ACTIONS)}),
            from_status   text,
            to_status     text NOT NULL,
            actor         text NOT NULL,
            at            timestamptz NOT NULL DEFAULT clock_timestamp(),
            team          text,
            level         integer NOT NULL DEFAULT 0,
            detail        jsonb NOT NULL DEFAULT '{{}}'::jsonb,
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
                CHECK (min_severity IN {sql_in(SEVERITIES)}),
            team         text NOT NULL REFERENCES crew_teams (team),
            created_at   timestamptz NOT NULL DEFAULT now()
        );

        -- A team's channels; min_level > 0 is only used once an alert escalated that far.
        CREATE TABLE notification_channels (
            channel_id text PRIMARY KEY,
            team       text REFERENCES crew_teams (team),
            kind       text NOT NULL CHECK (kind IN {sql_in(CHANNEL_KINDS)}),
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
                CHECK (status IN {sql_in(DELIVERY_STATUSES)}),
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
    # -- M: a webhook-only API role for Grafana (15) ---------------------------------------------
    (
        15,
        "crew_users: role 'webhook' (may only post Grafana's webhook)",
        f"""
        -- Grafana held a full engineer token; this role can open and resolve
        -- Grafana's alerts and nothing else (enforced by the API's guard).
        ALTER TABLE crew_users DROP CONSTRAINT crew_users_role_check;
        ALTER TABLE crew_users ADD CONSTRAINT crew_users_role_check
            CHECK (role IN {sql_in(ROLES)});
        """,
    ),
]
