"""`citywatch train` from the database: readings + failures + work-order labels."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from models.catalog import ModelCatalog
from models.features import compute_features
from models.history import load_training_data
from models.training import train_risk_bundle
from services.training import train_from_database

from .conftest import store_history

pytestmark = pytest.mark.stack

FAST = {"n_estimators": 20}


@pytest.fixture
def stored_fleet(db, registry_db, fleet, conn):
    history, failures = fleet
    store_history(conn.database_url, history, failures)
    return history, failures


def test_database_history_trains_the_same_model_as_the_frames(
    stored_fleet, conn, base_settings, tmp_path
) -> None:
    history, failures = stored_fleet
    data = load_training_data(conn.database_url, horizon=40)
    assert len(data.history) == len(history)
    assert data.failures["failed_tick"].tolist() == failures["failed_tick"].tolist()
    assert data.notes["labels"]["failure_events"] == {"failures:simulator": len(failures)}

    settings = base_settings.model_copy(update={"model_dir": tmp_path})
    when = datetime(2026, 11, 24, tzinfo=UTC)
    from_db, metrics, _ = train_from_database(
        settings,
        conn.database_url,
        horizon=40,
        test_time_fraction=0.0,
        classifier_params=FAST,
        progress=False,
        created_at=when,
    )
    direct, direct_metrics = train_risk_bundle(
        history,
        failures,
        horizon=40,
        reset_on_failure=False,
        classifier_params=FAST,
        progress=False,
    )
    assert metrics == direct_metrics
    for asset_type in direct.asset_types:
        X = compute_features(
            history[history["asset_type"] == asset_type], direct.feature_spec(asset_type)
        ).to_numpy()
        np.testing.assert_array_equal(
            from_db.predict_proba(asset_type, X), direct.predict_proba(asset_type, X)
        )
    # Registered (not promoted) with its card in the database.
    registry = ModelCatalog(conn.database_url, tmp_path)
    assert [r["version"] for r in registry.list()] == [from_db.version]
    assert registry.active().champion is None
    card = registry.show(from_db.version)["card"]
    assert card["training_data"]["source"].startswith("database")
    assert card["threshold_policy"]["target_precision"] == 0.8
    assert set(card["drift_reference"]) == set(direct.asset_types)


def test_time_split_labels_budget_and_same_seed_same_model(
    stored_fleet, conn, base_settings, tmp_path
) -> None:
    history, failures = stored_fleet
    # One work order confirms a fault on a device with no recorded failure; one
    # crew reports a false alarm. Both are counted; only the fault adds a positive.
    healthy = sorted(set(history["device_id"]) - set(failures["device_id"]))[0]
    row = history[history["device_id"] == healthy].iloc[400]
    with conn_labels(conn.database_url) as c:
        c.execute(
            "INSERT INTO labels (label_id, asset_id, device_id, observed_at, outcome, source)"
            " VALUES ('work_order:WO-1', %s, %s, %s, 'fault_confirmed', 'work_order'),"
            " ('alert:a1', %s, NULL, %s, 'false_alarm', 'alert')",
            (row.asset_id, healthy, row.ts.to_pydatetime(), row.asset_id, row.ts.to_pydatetime()),
        )
    data = load_training_data(conn.database_url, horizon=40)
    assert data.notes["labels"]["failure_events"]["labels:work_order"] == 1
    assert data.notes["labels"]["label_outcomes"] == {
        "work_order:fault_confirmed": 1,
        "alert:false_alarm": 1,
    }
    assert len(data.failures) == len(failures) + 1

    settings = base_settings.model_copy(update={"model_dir": tmp_path})
    runs = []
    for i in range(2):
        bundle, metrics, _ = train_from_database(
            settings,
            conn.database_url,
            horizon=40,
            seed=5,
            test_time_fraction=0.3,
            classifier_params={**FAST, "alert_budget": 0.05},
            progress=False,
            promote=True,
            created_at=datetime(2026, 11, 24, 0, i, tzinfo=UTC),
        )
        runs.append((bundle, metrics))
    (a, ma), (b, mb) = runs
    assert ma == mb
    for asset_type in a.asset_types:
        assert a.classifiers[asset_type].to_state() == b.classifiers[asset_type].to_state()
        # The budget is met on the held-out calibration assets it was chosen on.
        assert "alert budget 0.05" in ma[asset_type]["threshold_strategy"]
        assert a.classifiers[asset_type].calibration_scores_["rows"] > 0
    assert "time" in a.card["training_data"]["split"]
    assert a.card["threshold_policy"] == {
        "alert_budget": 0.05,
        "meaning": "share of readings allowed to alert",
    }
    assert ModelCatalog(conn.database_url, tmp_path).active().champion == b.version


def test_empty_database_is_a_clear_error(db, registry_db, conn, base_settings, tmp_path) -> None:
    settings = base_settings.model_copy(update={"model_dir": tmp_path})
    with pytest.raises(ValueError, match="no readings"):
        train_from_database(settings, conn.database_url, progress=False)


def conn_labels(url):
    import psycopg

    return psycopg.connect(url, autocommit=True)


def test_train_cli_from_database(stored_fleet, conn, base_settings, tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from citywatch.cli import main

    history, _ = stored_fleet
    env = {"CITYWATCH_HOME": str(base_settings.home), "CITYWATCH_MODEL_DIR": str(tmp_path)}
    runner = CliRunner()
    both = runner.invoke(
        main, ["train", "--target-precision", "0.9", "--alert-budget", "0.01"], env=env
    )
    assert both.exit_code != 0 and "not both" in both.output
    since = history["ts"].min() + (history["ts"].max() - history["ts"].min()) / 4
    out = runner.invoke(
        main,
        [
            "train",
            "--json",
            "--promote",
            "--since",
            since.isoformat(),
            "--horizon",
            "40",
            "--owner",
            "reliability-team",
            "--alert-budget",
            "0.02",
        ],
        env={**env, "CITYWATCH_TRAIN_SEED": "2"},
    )
    assert out.exit_code == 0, out.output
    version = json.loads(out.output)["version"]
    shown = ModelCatalog(conn.database_url, tmp_path).show(version)
    assert shown["role"] == "champion" and shown["owner"] == "reliability-team"
    assert shown["data_from"] >= since.to_pydatetime()
    assert shown["card"]["model"]["seed"] == 2
    assert shown["card"]["threshold_policy"]["alert_budget"] == 0.02
    empty = runner.invoke(main, ["train", "--since", "2030-01-01"], env=env)
    assert empty.exit_code != 0 and "no readings" in empty.output


def test_stored_maintenance_events_reset_training_where_the_worker_did(
    stored_fleet, conn, base_settings, tmp_path
) -> None:
    """train_from_database resets at maintenance_events, as the worker did online."""
    import psycopg

    from models.failure_labels import maintenance_resets

    history, failures = stored_fleet
    # The events the simulator sends: each at the ts of the first reading after a failure.
    first_after = history.assign(_r=maintenance_resets(history, failures))
    first_after = first_after[first_after["_r"]]
    assert len(first_after) == len(failures) > 0
    with psycopg.connect(conn.database_url) as c:
        c.cursor().executemany(
            "INSERT INTO maintenance_events (device_id, asset_id, asset_type, ts, source)"
            " VALUES (%s, %s, %s, %s, '{}')",
            [
                (r.device_id, r.asset_id, r.asset_type, r.ts.to_pydatetime())
                for r in first_after.itertuples(index=False)
            ],
        )
    data = load_training_data(conn.database_url, horizon=40)
    assert data.notes["maintenance_resets"] == len(failures)
    by_key = data.resets.groupby([data.history["device_id"], data.history["tick"]]).first()
    expected = maintenance_resets(history, failures)
    got = by_key.loc[list(zip(history["device_id"], history["tick"], strict=True))].to_numpy()
    np.testing.assert_array_equal(got, expected.to_numpy())

    settings = base_settings.model_copy(update={"model_dir": tmp_path})
    _, metrics, _ = train_from_database(
        settings,
        conn.database_url,
        horizon=40,
        test_time_fraction=0.0,
        classifier_params=FAST,
        progress=False,
        created_at=datetime(2026, 11, 24, tzinfo=UTC),
    )
    common = {"horizon": 40, "classifier_params": FAST, "progress": False}
    _, with_resets = train_risk_bundle(history, failures, reset_on_failure=True, **common)
    _, without = train_risk_bundle(history, failures, reset_on_failure=False, **common)
    assert metrics == with_resets
    assert metrics != without  # the resets did change what the model learnt
