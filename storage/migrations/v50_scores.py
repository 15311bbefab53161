"""Migrations 50-51: which model produced a score and an alert, and time to failure."""

from __future__ import annotations

from storage.migrations.base import Migration

MIGRATIONS: list[Migration] = [
    # -- I: which model produced a score and an alert; the cold-start anomaly score (50) ---------
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
    # -- I: time to failure with an interval, on every score and alert (51) ----------------------
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
