"""The file-based model store: save, promote, load the champion."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from models.bundle import RiskModelBundle, make_version
from models.bundle_store import (
    card_summary,
    list_versions,
    load_bundle,
    load_champion,
    promote,
    read_champion,
    save_bundle,
)
from models.features import compute_features
from models.training import train_risk_bundle


@pytest.fixture(scope="module")
def trained(fleet):
    history, failures = fleet
    return train_risk_bundle(
        history,
        failures,
        horizon=40,
        progress=False,
        classifier_params={"n_estimators": 40},
        created_at=datetime(2026, 11, 24, 21, 30, tzinfo=UTC),
    )


def test_round_trip_gives_same_predictions(tmp_path, fleet, trained) -> None:
    bundle, _ = trained
    history, _ = fleet
    assert load_champion(tmp_path) is None
    assert list_versions(tmp_path) == []

    path = save_bundle(bundle, tmp_path)
    assert path == tmp_path / bundle.version
    assert bundle.version.startswith("20261124T213000Z-")
    promote(tmp_path, bundle.version)
    assert read_champion(tmp_path) == bundle.version
    assert list_versions(tmp_path) == [bundle.version]

    loaded = load_champion(tmp_path)
    assert isinstance(loaded, RiskModelBundle)
    assert loaded.version == bundle.version
    assert loaded.asset_types == bundle.asset_types
    for asset_type in bundle.asset_types:
        spec = bundle.feature_spec(asset_type)
        assert loaded.feature_spec(asset_type) == spec
        rows = history[history["asset_type"] == asset_type]
        X = compute_features(rows, spec, order_col="tick").to_numpy()
        np.testing.assert_array_equal(
            loaded.predict_proba(asset_type, X), bundle.predict_proba(asset_type, X)
        )
        assert loaded.threshold(asset_type) == bundle.threshold(asset_type)
        # One row at a time (the worker's shape) works too.
        assert loaded.predict_proba(asset_type, X[0]).shape == (1,)

    card = json.loads((path / "card.json").read_text())
    assert card["version"] == bundle.version
    for key in ("created_at", "training_data", "features", "metrics", "thresholds"):
        assert key in card
    for key in ("intended_use", "limits", "owner"):
        assert card[key]
    assert len(card["training_data"]["sha256"]) == 64
    assert bundle.version.endswith(card["training_data"]["sha256"][:8])
    summary = card_summary(card)
    assert bundle.version in summary
    assert "water_pump: auc=" in summary


def test_store_errors(tmp_path, trained) -> None:
    bundle, _ = trained
    save_bundle(bundle, tmp_path)
    with pytest.raises(FileExistsError):
        save_bundle(bundle, tmp_path)
    with pytest.raises(FileNotFoundError):
        promote(tmp_path, "20000101T000000Z-deadbeef")
    with pytest.raises(ValueError):
        promote(tmp_path, "../elsewhere")
    with pytest.raises(KeyError, match="no model for asset type"):
        bundle.predict_proba("streetlight", np.zeros((1, 3)))
    with pytest.raises(FileNotFoundError):
        load_bundle(tmp_path, "20000101T000000Z-deadbeef")
    with pytest.raises(ValueError, match="expected rows of"):
        bundle.predict_proba(bundle.asset_types[0], np.zeros((2, 3)))


def test_native_compilation_matches_lightgbm(tmp_path, fleet) -> None:
    pytest.importorskip("lleaves", reason="lleaves is an optional dependency")
    history, failures = fleet
    small, _ = train_risk_bundle(
        history[history["asset_type"] == "lift"],
        failures,
        horizon=40,
        progress=False,
        classifier_params={"n_estimators": 5, "num_leaves": 4},
    )
    spec = small.feature_spec("lift")
    X = compute_features(history[history["asset_type"] == "lift"], spec, order_col="tick")
    X = X.to_numpy()[:300]
    before = small.predict_proba("lift", X)
    assert small.compile_native(tmp_path / "native")
    np.testing.assert_allclose(small.predict_proba("lift", X), before, rtol=0, atol=1e-12)


def test_promote_switches_champion(tmp_path, trained) -> None:
    bundle, _ = trained
    first = save_bundle(bundle, tmp_path).name
    second = RiskModelBundle(
        classifiers=bundle.classifiers,
        specs=bundle.specs,
        version="20261125T000000Z-00000000",
        card=bundle.card,
    )
    save_bundle(second, tmp_path)
    promote(tmp_path, first)
    assert load_champion(tmp_path).version == first
    promote(tmp_path, second.version)
    assert load_champion(tmp_path).version == second.version
    assert list_versions(tmp_path) == [first, second.version]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files


def test_make_version() -> None:
    assert make_version("2026-11-24T21:30:00+00:00", "abcdef0123") == "20261124T213000Z-abcdef01"
