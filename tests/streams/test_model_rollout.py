"""Model roll-out on a running worker: promotion without restart, shadow challenger,
explanations of high scores and the worker's own stats rows."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from ingest.sim_records import reading_bytes
from ingest.simulator import FleetSimulator
from models.bundle_store import save_bundle
from models.catalog import ModelCatalog
from services.training import train_synthetic
from tests.pipeline_helpers import Worker, produce, register_fleet

pytestmark = pytest.mark.stack

PROMOTION_DEADLINE_S = 10.0


class LiveFeed(threading.Thread):
    """Produces one tick of the fleet every ``period_s``, stamped with the wall clock."""

    def __init__(self, conn, settings, fleet: FleetSimulator, period_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.conn, self.settings, self.fleet, self.period_s = conn, settings, fleet, period_s
        self.stop_event = threading.Event()
        self.seq = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            readings, _ = self.fleet.step(datetime.now(UTC))
            messages = []
            for r in readings:
                messages.append((r.device.device_id.encode(), reading_bytes(r, self.seq)))
                self.seq += 1
            produce(self.conn, self.settings, messages)
            self.stop_event.wait(self.period_s)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)


def wait_until(predicate, timeout_s: float, every_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    return predicate()


@pytest.fixture
def two_models(conn, db, isolated, trained_models, tmp_path):
    """A private model store and a clean registry: the session's model as champion, and a
    second registered model."""
    settings = isolated.model_copy(
        update={"model_dir": tmp_path / "models", "stats_interval_s": 2.0}
    )
    save_bundle(trained_models, settings.models_path)
    other, _, _ = train_synthetic(
        settings, devices=24, ticks=700, seed=9, progress=False, promote=False
    )
    assert other.version != trained_models.version
    registry = ModelCatalog(conn.database_url, settings.models_path)
    for version in (trained_models.version, other.version):
        registry.register(version, owner="tests")
    registry.promote(trained_models.version, actor="tests")
    return settings, registry, trained_models, other


def test_promotion_reaches_a_running_worker_and_challenger_scores_in_shadow(
    conn, db, two_models, tmp_path
):
    settings, registry, first, second = two_models
    fleet = FleetSimulator(n_devices=6, seed=21)
    register_fleet(conn, fleet)
    fleet.force_degradation(fleet.devices[0].device_id, ticks=40)

    worker = Worker(settings, conn, tmp_path / "worker.log").start()
    feed = LiveFeed(conn, settings, fleet)
    feed.start()
    try:
        assert wait_until(
            lambda: (
                db.execute(
                    "SELECT count(*) FROM scores WHERE model_version = %s", (first.version,)
                ).fetchone()[0]
                > 30
            ),
            60,
        ), "the worker never scored with the first champion"

        # Promote the second model; the first stays on as the shadow challenger.
        promoted_at = datetime.now(UTC)
        registry.promote(second.version, actor="tests")
        registry.set_challenger(first.version, actor="tests")
        switched = wait_until(
            lambda: db.execute(
                "SELECT min(scored_at) FROM scores WHERE model_version = %s AND role = 'champion'",
                (second.version,),
            ).fetchone()[0],
            PROMOTION_DEADLINE_S + 5,
        )
        assert switched is not None, "promoted model never scored"
        assert (switched - promoted_at).total_seconds() < PROMOTION_DEADLINE_S

        # After the switch plus one batch, the old model only scores as challenger.
        time.sleep(3)
        settle = switched + timedelta(seconds=1)
        late_old_champion = db.execute(
            "SELECT count(*) FROM scores WHERE model_version = %s AND role = 'champion'"
            " AND scored_at > %s",
            (first.version, settle),
        ).fetchone()[0]
        assert late_old_champion == 0
    finally:
        feed.stop()
        worker.stop()

    # Shadow scores cover exactly the readings the new champion scored after the switch.
    unmatched = db.execute(
        """
        SELECT count(*) FROM scores c
        LEFT JOIN scores s ON s.device_id = c.device_id AND s.ts = c.ts
             AND s.role = 'challenger' AND s.model_version = %s
        WHERE c.role = 'champion' AND c.model_version = %s AND s.ts IS NULL
        """,
        (first.version, second.version),
    ).fetchone()[0]
    shadow = db.execute("SELECT count(*) FROM scores WHERE role = 'challenger'").fetchone()[0]
    assert shadow > 0 and unmatched == 0

    # Only champion scores raise alerts.
    alert_models = {
        r[0] for r in db.execute("SELECT DISTINCT model_version FROM alerts").fetchall()
    }
    challenger_only = db.execute(
        "SELECT count(*) FROM alerts a WHERE NOT EXISTS (SELECT 1 FROM scores s"
        " WHERE s.model_version = a.model_version AND s.role = 'champion')"
    ).fetchone()[0]
    assert challenger_only == 0, alert_models

    # Every champion score at or above its threshold has an explanation of its
    # device no older than the explain interval (streams.explanations.ExplainPolicy).
    high, explained = db.execute(
        """
        SELECT count(*), count(*) FILTER (WHERE EXISTS (
            SELECT 1 FROM score_explanations e
            WHERE e.device_id = s.device_id AND e.model_version = s.model_version
              AND e.ts <= s.ts AND e.ts > s.ts - interval '300 seconds'))
        FROM scores s WHERE s.role = 'champion' AND s.risk >= s.threshold
        """
    ).fetchone()
    assert high == explained
    sample = db.execute("SELECT contributions FROM score_explanations LIMIT 1").fetchone()
    if high:
        assert "_bias" in sample[0] and len(sample[0]) >= 2

    stats = db.execute("SELECT count(*), max(consumed) FROM worker_stats").fetchone()
    assert stats[0] >= 1 and stats[1] > 0
