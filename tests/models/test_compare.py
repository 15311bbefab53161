"""`citywatch model compare`: champion vs challenger on the same readings."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from click.testing import CliRunner

from citywatch.cli import main
from models.catalog import ModelCatalog
from storage.model_registry import upsert_model

pytestmark = pytest.mark.stack

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def _register(db, version: str) -> None:
    upsert_model(
        db,
        version=version,
        created_at=T0,
        owner="t",
        data_from=None,
        data_to=None,
        data_sha256="x",
        asset_types=["water_pump"],
        card={"version": version},
    )


def test_compare_matches_a_direct_computation(db, registry_db, base_settings, tmp_path) -> None:
    rng = np.random.default_rng(0)
    n_dev, n_ticks = 6, 120
    r1 = rng.uniform(size=(n_dev, n_ticks))
    r2 = np.clip(r1 + rng.normal(scale=0.1, size=r1.shape), 0, 1)
    rows = []
    for d in range(n_dev):
        for t in range(n_ticks):
            ts = T0 + timedelta(minutes=t)
            rows.append((ts, f"d{d}", f"a{d}", "water_pump", "A", r1[d, t], 0.7, "champion"))
            rows.append((ts, f"d{d}", f"a{d}", "water_pump", "B", r2[d, t], 0.6, "challenger"))
    # A reading scored only by the champion is not compared.
    rows.append((T0 - timedelta(days=1), "d0", "a0", "water_pump", "A", 0.9, 0.7, "champion"))
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO scores (ts, device_id, asset_id, asset_type, model_version, risk,"
            " threshold, role) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
        # Devices 0 and 1 fail at minute 100: readings from minute 40 to 99 precede it
        # within the one-hour horizon.
        cur.executemany(
            "INSERT INTO failures (asset_id, device_id, asset_type, mode,"
            " degradation_started_at, failed_at) VALUES (%s, %s, 'water_pump', 'x', %s, %s)",
            [(f"a{d}", f"d{d}", T0, T0 + timedelta(minutes=100)) for d in (0, 1)],
        )
        _register(cur.connection, "A")
        _register(cur.connection, "B")
    ModelCatalog(registry_db, tmp_path).promote("A", actor="t")
    ModelCatalog(registry_db, tmp_path).set_challenger("B", actor="t")

    env = {"CITYWATCH_HOME": str(base_settings.home), "CITYWATCH_MODEL_DIR": str(tmp_path)}
    out = CliRunner().invoke(main, ["model", "compare", "--json"], env=env)
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)

    minute = np.arange(n_ticks)
    fails = np.zeros((n_dev, n_ticks), dtype=bool)
    fails[:2] = (minute >= 40) & (minute < 100)
    a1, a2 = r1 >= 0.7, r2 >= 0.6
    assert got["champion"] == "A" and got["challenger"] == "B"
    assert got["n"] == n_dev * n_ticks
    assert got["mean_abs_diff"] == pytest.approx(np.abs(r1 - r2).mean())
    assert got["correlation"] == pytest.approx(np.corrcoef(r1.ravel(), r2.ravel())[0, 1])
    assert got["champion_alert_rate"] == pytest.approx(a1.mean())
    assert got["challenger_alert_rate"] == pytest.approx(a2.mean())
    assert got["agreement"] == pytest.approx((a1 == a2).mean())
    assert got["positives"] == fails.sum()
    assert got["champion_precision"] == pytest.approx((a1 & fails).sum() / a1.sum())
    assert got["challenger_recall"] == pytest.approx((a2 & fails).sum() / fails.sum())

    text = CliRunner().invoke(main, ["model", "compare"], env=env).output
    assert f"{n_dev * n_ticks} readings scored by both" in text
    ModelCatalog(registry_db, tmp_path).set_challenger(None, actor="t")
    none = CliRunner().invoke(main, ["model", "compare"], env=env)
    assert none.exit_code != 0 and "need two versions" in none.output
