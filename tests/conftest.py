"""Session fixtures: a real Tansu broker and a real PostgreSQL, on free loopback ports.

The stack lives in a temporary home, so tests never touch a user's
``.citywatch``; it is stopped at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

from citywatch.runtime import connect
from citywatch.stack import EmbeddedStack
from core.settings import Settings
from services.connection import Connection

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("CITYWATCH_DATASETS", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def stack_home():
    # Not under pytest's tmp (mode 700): as root, PostgreSQL runs as an
    # unprivileged user that must be able to reach its data directory.
    home = Path(tempfile.mkdtemp(prefix="citywatch-test-"))
    home.chmod(0o755)
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def base_settings(stack_home) -> Settings:
    # Ignore any CITYWATCH_* of the developer's shell: tests use their own stack.
    for key in [k for k in os.environ if k.startswith("CITYWATCH_")]:
        os.environ.pop(key)
    return Settings(home=stack_home, partitions=2, batch_size=200, batch_within_s=0.3)


@pytest.fixture(scope="session")
def stack(base_settings):
    embedded = EmbeddedStack(base_settings)
    embedded.up()
    yield embedded
    embedded.down()


@pytest.fixture(scope="session")
def conn(stack, base_settings) -> Connection:
    return connect(base_settings, start_embedded=False)


@pytest.fixture
def db(conn):
    """A clean pipeline database for one test."""
    with psycopg.connect(conn.database_url, autocommit=True) as c:
        c.execute(
            "TRUNCATE readings, scores, alerts, deadletters, failures, devices, labels,"
            " score_explanations, worker_stats, model_promotions, model_registry,"
            " maintenance_events"
        )
        yield c


@pytest.fixture
def isolated(base_settings) -> Settings:
    """Settings with topics and consumer group of this test alone."""
    run = uuid.uuid4().hex[:8]
    return base_settings.model_copy(
        update={"topic_prefix": f"t{run}-", "app_id": f"citywatch-test-{run}"}
    )


@pytest.fixture(scope="session")
def trained_models(base_settings):
    """A small synthetic model, trained once per session."""
    from services.training import train_synthetic

    bundle, _metrics, _ = train_synthetic(
        base_settings, devices=40, ticks=1200, seed=3, progress=False
    )
    return bundle
