"""Feature drift (PSI) of stored readings against the champion's training reference."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from citywatch.cli import main
from models.bundle_store import save_bundle
from models.catalog import ModelCatalog
from models.drift import compute_drift, feature_reference, psi
from models.training import train_risk_bundle

from .conftest import make_fleet, store_history

CUT = 400  # ticks before: training data; from here on: the monitored period


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    ref = feature_reference(rng.normal(size=20_000))
    assert len(ref["edges"]) == 9 and math.isclose(sum(ref["proportions"]), 1.0)
    same, n = psi(ref, rng.normal(size=5_000))
    assert same < 0.02 and n == 5_000
    shifted, _ = psi(ref, rng.normal(loc=1.0, size=5_000))
    assert shifted > 0.5
    # Missing values are not drift (warm-up NaNs); an all-missing window has no PSI.
    with_gaps, n = psi(ref, np.r_[rng.normal(size=1_000), [np.nan] * 1_000])
    assert with_gaps < 0.05 and n == 1_000
    assert math.isnan(psi(ref, np.array([np.nan]))[0])
    constant = feature_reference(np.ones(100))
    assert psi(constant, np.ones(10))[0] == pytest.approx(0.0, abs=1e-12)


@pytest.fixture(scope="module")
def big_fleet():
    # More devices than the shared fleet: PSI over a handful of devices is noisy.
    return make_fleet(n_devices=64, seed=4)


@pytest.fixture
def champion(big_fleet, registry_db, tmp_path):
    history, failures = big_fleet
    early = history[history["tick"] < CUT]
    bundle, _ = train_risk_bundle(
        early,
        failures[failures["failed_tick"] < CUT],
        horizon=40,
        progress=False,
        reset_on_failure=False,
        classifier_params={"n_estimators": 10},
    )
    save_bundle(bundle, tmp_path)
    registry = ModelCatalog(registry_db, tmp_path)
    registry.register(bundle.version)
    registry.promote(bundle.version, actor="test")
    return bundle


def _window_end(history: pd.DataFrame) -> pd.Timestamp:
    return history["ts"].max() + pd.Timedelta(minutes=1)


@pytest.mark.stack
def test_unshifted_data_raises_no_alert_and_shifted_data_does(
    db, conn, big_fleet, champion, tmp_path
) -> None:
    history, failures = big_fleet
    store_history(conn.database_url, history, failures)
    end = _window_end(history).to_pydatetime()
    window = timedelta(minutes=len(history["tick"].unique()) - CUT)
    kwargs = {"window": window, "end": end, "context": timedelta(minutes=CUT)}

    calm = compute_drift(conn.database_url, tmp_path, **kwargs)
    assert calm.model_version == champion.version
    assert calm.rows and not calm.alerts, sorted(calm.rows, key=lambda r: -r["psi"])[:3]
    assert calm.max_psi() < 0.2
    assert {r["asset_type"] for r in calm.rows} == set(champion.asset_types)
    assert not any(r["feature"] == "readings_since_maintenance" for r in calm.rows)
    n_rows = db.execute("SELECT count(*) FROM feature_drift").fetchone()[0]
    assert n_rows == len(calm.rows)

    # The same readings with every lift sensor reading 40 % high from CUT on
    # (a recalibrated sensor model, say): the lift features drift, pumps don't.
    db.execute("TRUNCATE readings")
    shifted = history.copy()
    later = (shifted["tick"] >= CUT) & (shifted["asset_type"] == "lift")
    metric_cols = [
        c for c in shifted.columns if c not in ("device_id", "asset_id", "asset_type", "tick", "ts")
    ]
    shifted.loc[later, metric_cols] = shifted.loc[later, metric_cols] * 1.4
    store_history(conn.database_url, shifted, failures.iloc[:0])
    drifted = compute_drift(conn.database_url, tmp_path, **kwargs)
    assert drifted.alerts
    assert {a["asset_type"] for a in drifted.alerts} == {"lift"}
    assert drifted.new_alerts == len(drifted.alerts)
    assert drifted.max_psi() > 1.0

    # Idempotent per window: recomputing stores no second row and no second alert.
    again = compute_drift(conn.database_url, tmp_path, **kwargs)
    assert again.new_alerts == 0
    assert db.execute("SELECT count(*) FROM feature_drift").fetchone()[0] == n_rows
    stored = db.execute(
        "SELECT asset_type, feature, psi, threshold FROM drift_alerts ORDER BY psi DESC"
    ).fetchall()
    assert len(stored) == len(drifted.alerts) and stored[0][3] == 0.2


@pytest.mark.stack
def test_drift_cli(db, conn, big_fleet, champion, tmp_path, base_settings) -> None:
    history, failures = big_fleet
    store_history(conn.database_url, history, failures)
    end = _window_end(history).isoformat()
    env = {"CITYWATCH_HOME": str(base_settings.home), "CITYWATCH_MODEL_DIR": str(tmp_path)}
    out = CliRunner().invoke(
        main,
        [
            "drift",
            "--window",
            "200m",
            "--context",
            "400m",
            "--end",
            end,
            "--threshold",
            "0.0001",
            "--json",
        ],
        env=env,
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["model_version"] == champion.version
    assert result["alerts"] and result["new_alerts"] == len(result["alerts"])
    bad = CliRunner().invoke(main, ["drift", "--window", "soon"], env=env)
    assert bad.exit_code != 0 and "not a duration" in bad.output
