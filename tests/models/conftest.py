"""Shared fixtures: a small synthetic fleet with degradation before failures."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.assets import ASSET_TYPES


def make_fleet(
    n_devices: int = 32,
    n_ticks: int = 600,
    asset_types: tuple[str, ...] = ("water_pump", "lift"),
    seed: int = 0,
    ramp: int = 80,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """History and failures in the shape ``train_risk_bundle`` expects.

    Every device reads its asset type's metrics around its own healthy level.
    About half the devices fail once, after a ``ramp``-tick drift of one or
    two metrics, and are then repaired (back to healthy).
    """
    rng = np.random.default_rng(seed)
    all_metrics = sorted({m for t in ASSET_TYPES.values() for m in t.metric_names})
    start = pd.Timestamp("2026-01-01", tz="UTC")
    frames, failures = [], []
    for d in range(n_devices):
        asset_type = asset_types[d % len(asset_types)]
        metrics = ASSET_TYPES[asset_type].metric_names
        level = rng.uniform(10, 50, size=len(metrics))
        noise = level * rng.uniform(0.02, 0.08, size=len(metrics))
        values = level + rng.normal(size=(n_ticks, len(metrics))) * noise
        ticks = np.arange(n_ticks)
        if (d // len(asset_types)) % 2 == 0:
            fail = int(rng.integers(ramp + 100, n_ticks - 50))
            drifting = rng.choice(len(metrics), size=int(rng.integers(1, 3)), replace=False)
            ramp_shape = np.clip((ticks - (fail - ramp)) / ramp, 0, 1) * (ticks <= fail)
            for j in drifting:
                values[:, j] += ramp_shape * 6 * noise[j] * rng.choice([-1, 1])
            failures.append(
                {
                    "device_id": f"dev{d:03d}",
                    "failed_tick": fail,
                    "failed_at": start + pd.Timedelta(minutes=fail),
                }
            )
        frame = pd.DataFrame(
            {
                "device_id": f"dev{d:03d}",
                "asset_id": f"asset{d:03d}",
                "asset_type": asset_type,
                "tick": ticks,
                "ts": start + pd.to_timedelta(ticks, unit="min"),
            }
        )
        for m in all_metrics:
            frame[m] = np.nan
        for j, m in enumerate(metrics):
            frame[m] = values[:, j]
        # A few dropped metrics: the features must cope with gaps.
        gaps = rng.random(n_ticks) < 0.01
        frame.loc[gaps, metrics[0]] = np.nan
        frames.append(frame)
    history = pd.concat(frames, ignore_index=True)
    return history, pd.DataFrame(failures, columns=["device_id", "failed_tick", "failed_at"])


@pytest.fixture(scope="session")
def fleet() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_fleet()


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The shared real datasets (skips when absent, as on a user's machine)."""
    default = Path(__file__).resolve().parents[3] / "shared" / "datasets"
    path = Path(os.environ.get("CITYWATCH_DATASETS", default))
    if not path.is_dir():
        pytest.skip(f"datasets folder {path} not found (set CITYWATCH_DATASETS)")
    return path


@pytest.fixture
def registry_db(conn):
    """A clean model registry (migration v4 tables) for one test; yields the database URL."""
    import psycopg

    with psycopg.connect(conn.database_url, autocommit=True) as c:
        c.execute(
            "TRUNCATE model_promotions, model_registry, feature_drift, drift_alerts,"
            " model_load_failures"
        )
    return conn.database_url


def store_history(database_url: str, history: pd.DataFrame, failures: pd.DataFrame) -> None:
    """Write a fleet's history and failures into readings and failures, as the worker would."""
    import json

    import psycopg

    metric_cols = [
        c for c in history.columns if c not in ("device_id", "asset_id", "asset_type", "tick", "ts")
    ]
    values = history[metric_cols].to_numpy()
    with psycopg.connect(database_url) as c, c.cursor() as cur:
        with cur.copy(
            "COPY readings (ts, device_id, asset_id, asset_type, metrics) FROM STDIN"
        ) as copy:
            for row, vals in zip(
                history[["ts", "device_id", "asset_id", "asset_type"]].itertuples(index=False),
                values,
                strict=True,
            ):
                metrics = {m: float(v) for m, v in zip(metric_cols, vals, strict=True) if v == v}
                copy.write_row((row.ts.to_pydatetime(), *row[1:], json.dumps(metrics)))
        first = history.groupby("device_id")[["asset_id", "asset_type", "ts"]].first()
        cur.executemany(
            "INSERT INTO failures (asset_id, device_id, asset_type, mode,"
            " degradation_started_at, failed_at) VALUES (%s, %s, %s, 'drift', %s, %s)",
            [
                (
                    first.loc[f.device_id, "asset_id"],
                    f.device_id,
                    first.loc[f.device_id, "asset_type"],
                    f.failed_at.to_pydatetime() - pd.Timedelta(minutes=80),
                    f.failed_at.to_pydatetime(),
                )
                for f in failures.itertuples(index=False)
            ],
        )


@pytest.fixture(scope="session")
def small_bundle(fleet):
    """A quick risk bundle of the synthetic fleet (20 trees), trained once."""
    from models.training import train_risk_bundle

    history, failures = fleet
    trained, _ = train_risk_bundle(
        history,
        failures,
        horizon=40,
        progress=False,
        classifier_params={"n_estimators": 20},
        created_at=datetime(2026, 11, 24, 21, 30, tzinfo=UTC),
    )
    return trained
