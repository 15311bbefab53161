"""Migration 20: LoRaWAN downlink commands, every command sent to a sensor and why."""

from __future__ import annotations

from storage.migrations.base import Migration

MIGRATIONS: list[Migration] = [
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
