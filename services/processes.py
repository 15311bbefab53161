"""Child processes of a run: the worker started as it runs in production, and waits on it.

Used by the demo, the benchmarks and the tests, so they all start the worker
the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.settings import Settings
from services.connection import Connection
from services.errors import ServiceError
from storage.reports import messages_accounted_for


def start_worker(settings: Settings, conn: Connection, log_path: Path) -> subprocess.Popen:
    """The worker as its own process, as it runs in production."""
    env = {
        **os.environ,
        "CITYWATCH_KAFKA": conn.kafka,
        "CITYWATCH_DATABASE_URL": conn.database_url,
        "CITYWATCH_BROKER_FLAVOR": "tansu" if conn.tansu else "kafka",
        "CITYWATCH_HOME": str(settings.home),
        "CITYWATCH_FAUST_DATADIR": str(settings.faust_path),
        "CITYWATCH_TABLE_STORE": settings.table_store,
        "CITYWATCH_MODEL_DIR": str(settings.models_path),
        "CITYWATCH_PARTITIONS": str(settings.partitions),
        "CITYWATCH_TOPIC_PREFIX": settings.topic_prefix,
        "CITYWATCH_APP_ID": settings.app_id,
        "CITYWATCH_BATCH_SIZE": str(settings.batch_size),
        "CITYWATCH_BATCH_WITHIN_S": str(settings.batch_within_s),
        "CITYWATCH_STATS_INTERVAL_S": str(settings.stats_interval_s),
    }
    out = open(log_path, "ab")  # noqa: SIM115 - the child owns it for its lifetime
    return subprocess.Popen(
        [sys.executable, "-m", "citywatch", "worker"],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def log_size(path: Path) -> int:
    """Where a process appending to ``path`` will start writing."""
    return path.stat().st_size if path.exists() else 0


def wait_for_log(
    path: Path, needle: str, proc: subprocess.Popen, timeout_s: float, *, after: int = 0
) -> None:
    """Wait for ``needle`` in what was written to ``path`` past byte ``after``
    (logs are appended to: an earlier run's "Worker ready" must not count)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"worker exited early; see {path}")
        if path.exists() and needle in path.read_bytes()[after:].decode(errors="replace"):
            return
        time.sleep(0.2)
    raise ServiceError(f"worker not ready after {timeout_s:.0f}s; see {path}")


def wait_for_drain(database_url: str, expected: int, timeout_s: float) -> int:
    """Wait until readings + dead letters + maintenance events account for every message."""
    deadline = time.monotonic() + timeout_s
    seen = -1
    while time.monotonic() < deadline:
        seen = messages_accounted_for(database_url)
        if seen >= expected:
            return seen
        time.sleep(0.5)
    return seen


def stop_process(proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
