"""The demo's water-quality leg: a real station's last two days replayed beside the fleet.

The last ``hours`` of a GECCO 2018 record go through ``citywatch replay``'s
code into Kafka and the worker, as readings of one water-quality station.
The worker stores them; until the worker scores water-quality stations itself
(the hook described in docs/water-quality.md), the demo scores what the
worker stored with the same scorer and writes ``station_outlook``, so the
water-quality dashboard has its station and its 48-hour outlook.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import psycopg

from core.assets import CATALOGUE_ENV, OPTIONAL_CATALOGUES, load_catalogue
from core.settings import Settings
from services.connection import Connection

CATALOGUE = OPTIONAL_CATALOGUES / "water_quality_station.toml"
DEVICE = "wq-demo-01"
ASSET = "station-demo-01"


def enable_catalogue() -> None:
    """Name the water-quality catalogue file for the processes the demo starts next."""
    files = [p for p in os.environ.get(CATALOGUE_ENV, "").split(os.pathsep) if p]
    if str(CATALOGUE) not in files:
        os.environ[CATALOGUE_ENV] = os.pathsep.join([*files, str(CATALOGUE)])


def default_file() -> Path:
    root = Path(os.environ.get("CITYWATCH_DATASETS", "../shared/datasets"))
    return root / "gecco2018" / "train.csv"


def replay_tail(
    settings: Settings, conn: Connection, data_file: Path, hours: int
) -> dict[str, Any]:
    """Replay the file's last ``hours`` rows (one a minute) as fast as possible, ending now."""
    from ingest.lorawan.publisher import KafkaPublisher
    from ingest.replay import replay_file
    from storage.sinks import record_failures, register_devices
    from streams.topics import DEADLETTER, READINGS

    station = load_catalogue([CATALOGUE])["water_quality_station"]
    lines = data_file.read_bytes().splitlines(keepends=True)
    with tempfile.TemporaryDirectory() as tmp:
        tail = Path(tmp) / f"{data_file.stem}-last-{hours}h.csv"
        tail.write_bytes(b"".join([lines[0], *lines[-hours * 60 :]]))
        register_devices(
            conn.database_url,
            [{"device_id": DEVICE, "asset_id": ASSET, "asset_type": station.name, "lat": 52.37,
              "lon": 4.89, "installed_at": None, "codec": "replay"}],
        )  # fmt: skip
        publisher = KafkaPublisher(
            conn.kafka, settings.topic(READINGS), settings.topic(DEADLETTER),
            **{"client.id": "citywatch-demo-replay"},
        )  # fmt: skip
        stats = replay_file(
            tail, publisher, asset_type=station, device_id=DEVICE, asset_id=ASSET, speed=0
        )
    truth = stats.failure_rows(
        device_id=DEVICE, asset_id=ASSET, asset_type=station.name, source=f"replay:{data_file.name}"
    )
    record_failures(conn.database_url, truth)
    return {
        "water_quality_readings": stats.readings,
        "water_quality_gaps": stats.gaps,
        "water_quality_deadletters": stats.bad,
        "water_quality_incidents": len(stats.incidents),
    }


def fit_demo_model(data_file: Path, hours: int):
    """A model fitted on the month of the record before the replayed tail."""
    from models.water_quality import load_gecco, station_features
    from models.water_quality_model import fit_water_quality

    frame = load_gecco(str(data_file)).iloc[: -hours * 60]
    train = frame.iloc[-31 * 1440 :]
    return fit_water_quality(station_features(train), train["ts"], train["event"].to_numpy())


def score_stored(
    conn: Connection, model, device_id: str = DEVICE, asset_id: str = ASSET
) -> dict[str, Any]:
    """Score the station's readings as the worker stored them, in time order, and
    write ``station_outlook``; returns the row count and the latest 48 h outlook."""
    from models.water_quality_model import StationScorer, outlook_row
    from storage.outlook import write_outlook

    with psycopg.connect(conn.database_url) as db:
        rows = db.execute(
            "SELECT ts, metrics, source FROM readings WHERE device_id = %s ORDER BY ts",
            (device_id,),
        ).fetchall()
        items = [(device_id, ts, metrics, src.get("label")) for ts, metrics, src in rows]
        items = [(d, ts, m, None if lab is None else bool(lab)) for d, ts, m, lab in items]
        results = StationScorer(model).score_batch(items)
        with db.cursor() as cur:
            written = write_outlook(
                cur,
                [
                    outlook_row(device_id, asset_id, it[1], r)
                    for it, r in zip(items, results, strict=True)
                ],
            )
    last = results[-1]["horizons"].get(48) if results else None
    return {
        "water_quality_outlook_rows": written,
        "water_quality_p48h": round(last, 3) if last is not None else None,
        "water_quality_model": model.version,
    }
