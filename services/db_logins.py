"""Passwords of the per-service database logins, for ``citywatch storage migrate``.

The migration job (the only one connecting as the owner) creates or updates one LOGIN
role per service from these (storage/service_roles.py). Each is optional: a login
whose password is unset is left alone (an administrator may manage it). Weak values
are refused like every other secret, without being printed back.
"""

from __future__ import annotations

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.weak_secrets import weakness
from storage.service_roles import LOGINS


class LoginPasswords(BaseSettings):
    """``CITYWATCH_<LOGIN>_DB_PASSWORD`` for each login of storage.service_roles.LOGINS."""

    model_config = SettingsConfigDict(
        env_prefix="CITYWATCH_", frozen=True, extra="ignore", hide_input_in_errors=True
    )

    worker_db_password: SecretStr | None = None
    alerts_db_password: SecretStr | None = None
    crew_admin_db_password: SecretStr | None = None
    ingest_db_password: SecretStr | None = None
    simulator_db_password: SecretStr | None = None
    trainer_db_password: SecretStr | None = None
    grafana_db_password: SecretStr | None = None

    @field_validator("*")
    @classmethod
    def _strong(cls, value: SecretStr | None, info) -> SecretStr | None:
        if value is not None:
            why = weakness(value.get_secret_value())
            if why is not None:
                raise ValueError(f"CITYWATCH_{info.field_name.upper()} {why}")
        return value

    def passwords(self) -> dict[str, str]:
        """``login -> password`` for every login whose password is set."""
        found = {}
        for login in LOGINS:
            secret = getattr(self, f"{login}_db_password")
            if secret is not None:
                found[login] = secret.get_secret_value()
        return found
