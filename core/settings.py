"""One frozen settings object, read from ``CITYWATCH_*`` environment variables.

Build it once in an entrypoint (``Settings()``) and pass it down; nothing else
reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .weak_secrets import url_password_weakness, weakness


class Settings(BaseSettings):
    """Runtime configuration. Every field maps to ``CITYWATCH_<FIELD>``."""

    # hide_input_in_errors: a refused secret must not be printed back.
    model_config = SettingsConfigDict(
        env_prefix="CITYWATCH_", frozen=True, extra="ignore", hide_input_in_errors=True
    )

    home: Path = Field(Path(".citywatch"), description="Where the embedded stack keeps its data.")
    kafka: str | None = Field(
        None, description="External Kafka bootstrap servers (host:port,...). Unset: embedded Tansu."
    )
    database_url: SecretStr | None = Field(
        None, description="External PostgreSQL/TimescaleDB URL. Unset: embedded PostgreSQL."
    )
    broker_flavor: str = Field(
        "auto",
        description="'tansu' applies the Tansu work-arounds, 'kafka' does not, 'auto' "
        "picks 'tansu' for the embedded broker and 'kafka' for an external one.",
    )
    mqtt: str | None = Field(
        None,
        description="External MQTT broker (mqtt://host:port) for the LoRaWAN bridge. "
        "Unset: the embedded Mosquitto, when installed.",
    )
    webhook_secret: SecretStr | None = Field(
        None, description="Shared secret the LoRaWAN HTTP webhooks require."
    )
    tts_api_key: SecretStr | None = Field(
        None,
        description="The Things Stack API key for its webhook downlink API "
        "(`citywatch downlinks run --tts-api`).",
    )
    partitions: int = Field(4, ge=1, description="Partitions of the readings topic.")
    topic_prefix: str = Field("", description="Prefix for every Kafka topic name.")
    app_id: str = Field("citywatch-worker", description="Faust app id (consumer group).")
    faust_datadir: Path | None = Field(
        None,
        description="Faust's data directory. Unset: <home>/faust (never the working "
        "directory, which is read-only in the image).",
    )
    table_store: Literal["rocksdb", "memory"] = Field(
        "rocksdb",
        description="Where the worker keeps its Faust tables: 'rocksdb' on the datadir's "
        "volume (a restart reads only the changelog's tail), or 'memory' (a restart reads "
        "the whole changelog back).",
    )

    batch_size: int = Field(500, ge=1, description="Readings per take() batch.")
    batch_within_s: float = Field(0.5, gt=0, description="Longest wait to fill a batch.")
    checkpoint_interval_s: float = Field(
        2.0,
        ge=0,
        description="How often the worker writes its device states and acknowledges the"
        " readings stored since (streams.checkpoints); a restart processes at most this much"
        " again, storing nothing twice. 0 checkpoints after every batch.",
    )
    stats_interval_s: float = Field(
        10.0, gt=0, description="How often the worker logs and stores its throughput and lag."
    )
    max_clock_skew_s: float = Field(300.0, gt=0, description="Reject readings this far ahead.")
    max_reading_age_days: float = Field(
        7.0,
        ge=0,
        description="Refuse readings older than this (dead letter too_old). 0: no limit, "
        "for a backfill of old records.",
    )
    max_message_bytes: int = Field(
        65536, ge=1024, description="Refuse readings-topic messages larger than this (too_large)."
    )
    poison_attempts: int = Field(
        3, ge=1, description="Tries of a message whose processing raises before it is poison."
    )

    alert_open_threshold: float | None = Field(
        None, description="Risk to open an alert. Unset: the model's recorded threshold."
    )
    alert_close_threshold: float | None = Field(
        None, description="Risk below which an alert closes. Unset: 0.6 x open threshold."
    )
    alert_open_after: int = Field(3, ge=1, description="Consecutive high scores to open.")
    alert_close_after: int = Field(5, ge=1, description="Consecutive low scores to close.")
    explain_interval_s: float = Field(
        300.0,
        ge=0,
        description="While a device stays at or above its threshold, explain its score at most"
        " this often (reading time); 0 explains every high score. Explaining (TreeSHAP) costs"
        " far more than scoring.",
    )

    retention_days: int | None = Field(
        None, ge=1, description="Drop readings and scores older than this. Unset: keep all."
    )
    partition_days_ahead: int = Field(
        7, ge=1, description="Daily partitions kept ready ahead (plain PostgreSQL)."
    )
    maintenance_interval_s: float = Field(
        60.0, gt=0, description="Seconds between storage maintenance runs (partitions, rollups)."
    )

    model_dir: Path | None = Field(None, description="Model store. Unset: <home>/models.")
    water_quality_model: Path | None = Field(
        None,
        description="Water-quality model file (citywatch water-quality train);"
        " unset: stations get the unsupervised score.",
    )
    water_quality_reload_s: float = Field(
        30.0,
        ge=0,
        description="Check the water-quality model file for a new version (replaced"
        " atomically) at most this often, between batches; 0 checks before every batch.",
    )
    log_level: str = Field("info", description="debug, info, warning or error.")

    @field_validator("database_url")
    @classmethod
    def _strong_database_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            why = url_password_weakness(value.get_secret_value())
            if why is not None:
                raise ValueError(f"the password in CITYWATCH_DATABASE_URL {why}")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _strong_webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            why = weakness(value.get_secret_value())
            if why is not None:
                raise ValueError(f"CITYWATCH_WEBHOOK_SECRET {why}")
        return value

    @property
    def models_path(self) -> Path:
        return self.model_dir if self.model_dir is not None else self.home / "models"

    @property
    def faust_path(self) -> Path:
        return self.faust_datadir if self.faust_datadir is not None else self.home / "faust"

    def topic(self, name: str) -> str:
        """Full Kafka topic name for a logical topic (readings, scores, ...)."""
        return f"{self.topic_prefix}{name}"
