"""citywatch refuses well-known and short secrets at start-up, and says which one."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from citywatch.cli import main
from core.settings import Settings
from core.weak_secrets import weakness


@pytest.mark.parametrize("secret", ["citywatch", "change-me", "admin", "Grafana", "short-1"])
def test_defaults_and_short_secrets_are_weak(secret):
    assert weakness(secret) is not None


def test_a_long_random_secret_is_fine():
    assert weakness("q7Vh-2mXw-Lp9R-tN4e") is None


def test_settings_refuse_the_old_compose_database_password():
    with pytest.raises(
        ValidationError, match="CITYWATCH_DATABASE_URL is a well-known default"
    ) as e:
        Settings(database_url="postgresql://citywatch:citywatch@timescaledb:5432/citywatch")
    assert "citywatch@" not in str(e.value)
    # The embedded PostgreSQL trusts loopback and has no password: nothing to refuse.
    Settings(database_url="postgresql://citywatch@127.0.0.1:5432/citywatch")
    Settings(database_url="postgresql://citywatch:q7Vh-2mXw-Lp9R-tN4e@db:5432/citywatch")


def test_settings_refuse_a_weak_webhook_secret_without_echoing_it():
    with pytest.raises(ValidationError) as caught:
        Settings(webhook_secret="change-me")
    assert "CITYWATCH_WEBHOOK_SECRET is a well-known default" in str(caught.value)
    assert "change-me" not in str(caught.value)


def test_the_webhook_command_refuses_a_weak_secret_flag(base_settings):
    result = CliRunner().invoke(main, ["ingest", "http", "--secret", "change-me"])
    assert result.exit_code != 0
    assert "webhook secret is a well-known default" in result.output
