"""A recorded station replayed through the running worker one day at a time, with the
daily refit (``citywatch water-quality train``) and the worker's in-place reload
between days: ``citywatch bench water-quality-replay --daily-refit``.

Times are the record's own (no shift), so a day is a day of data time. Before
each test day the model is refitted on what the worker stored so far (readings,
and the labelled incidents in ``failures``), written atomically over the
worker's model file, and the day is sent only once the worker has logged the
reload: every reading of the day is scored by the model refitted on the days
before it, as in the offline daily refits (``prequential_event_probability``).
"""

from __future__ import annotations

import itertools
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg

from core.assets import AssetType
from ingest.replay import ReplayStats, replay_file
from models.water_quality_eval import RETRAIN_EVERY_H
from models.water_quality_history import refit_station
from models.water_quality_model import load_water_quality_model, save_water_quality_model
from services.connection import Connection
from services.errors import ServiceError
from storage.device_registry import register_devices
from storage.training_data import record_failures

__all__ = ["day_cuts", "replay_daily"]


def day_cuts(ts: pd.Series, start: int, every_h: float = RETRAIN_EVERY_H) -> list[int]:
    """Row indices where a refit happens: ``start``, then every ``every_h`` hours of
    data time, exactly as ``prequential_event_probability`` cuts; the last is ``len``."""
    times = pd.to_datetime(ts, utc=True).reset_index(drop=True)
    cuts, cut = [start], start
    while cut < len(times):
        until = times.iloc[cut] + pd.Timedelta(hours=every_h)
        cut = min(len(times), max(cut + 1, int(times.searchsorted(until))))
        cuts.append(cut)
    return cuts


def _count(database_url: str, device: str) -> int:
    with psycopg.connect(database_url) as db:
        return db.execute(
            "SELECT count(*) FROM station_outlook WHERE device_id = %s", (device,)
        ).fetchone()[0]


def _wait_count(database_url: str, device: str, n: int, worker, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _count(database_url, device) >= n:
            return
        if worker.poll() is not None:
            raise ServiceError("the worker exited")
        time.sleep(0.2)
    raise ServiceError(f"{device}: fewer than {n} outlook rows after {timeout_s:.0f} s")


def replay_daily(
    record: pd.DataFrame,
    n_train: int,
    path: Path,
    publisher,
    station: AssetType,
    conn: Connection,
    device: str,
    model_file: Path,
    log_path: Path,
    worker: subprocess.Popen,
    tmp: Path,
    timeout_s: float,
    like: Path,
    progress: Callable[[str], None] | None = None,
) -> tuple[ReplayStats, dict[str, Any]]:
    """Replay ``path`` (rows of ``record``) into the running ``worker``: the first
    ``n_train`` rows at once, then one day at a time with a refit before each.

    ``like`` is the template of ``water-quality train --like``. The worker must run
    with ``CITYWATCH_WATER_QUALITY_MODEL=model_file`` and a reload interval of 0.
    Returns the replay's totals and what the refits did.
    """
    header, *lines = path.read_text().splitlines(keepends=True)
    line_ts = pd.to_datetime([ln.split(",", 1)[0] for ln in lines], utc=True)
    rec_ts = pd.to_datetime(record["ts"], utc=True).reset_index(drop=True)
    template = load_water_quality_model(str(like))
    tick_device = f"{device}-tick"  # a second station: its readings only trigger batches
    with psycopg.connect(conn.database_url) as pg:
        register_devices(
            pg,
            [{"device_id": tick_device, "asset_id": tick_device, "asset_type": station.name,
              "lat": None, "lon": None, "installed_at": None, "codec": "replay"}],
        )  # fmt: skip
    total = ReplayStats()
    ticks = iter(range(len(lines)))

    def send(rows: list[str], name: str, dev: str) -> ReplayStats:
        chunk = tmp / f"{name}.csv"
        chunk.write_text("".join([header, *rows]))
        stats = replay_file(
            chunk, publisher, asset_type=station, device_id=dev, asset_id=dev, speed=0,
            keep_time=True,
        )  # fmt: skip
        with psycopg.connect(conn.database_url) as pg:
            record_failures(
                pg,
                stats.failure_rows(
                    device_id=dev, asset_id=dev, asset_type=station.name,
                    source=f"replay:{path.name}:{name}",
                ),
            )  # fmt: skip
        chunk.unlink()
        return stats

    def add(stats: ReplayStats) -> None:
        total.rows += stats.rows
        total.readings += stats.readings
        total.gaps += stats.gaps
        for reason, n in stats.bad_by_reason.items():
            total.bad_by_reason[reason] = total.bad_by_reason.get(reason, 0) + n
        total.incidents.extend(stats.incidents)

    def rows_between(a: int, b: int) -> list[str]:
        lo = rec_ts.iloc[a]
        hi = rec_ts.iloc[b] if b < len(rec_ts) else None
        keep = (line_ts >= lo) & ((line_ts < hi) if hi is not None else True)
        return [ln for ln, k in zip(lines, keep, strict=True) if k]

    cuts = day_cuts(record["ts"], n_train)
    add(send(rows_between(0, n_train), "train", device))
    _wait_count(conn.database_url, device, total.readings, worker, timeout_s)
    refits: list[dict[str, Any]] = []
    for day, (a, b) in enumerate(itertools.pairwise(cuts)):
        t0 = time.monotonic()
        model, frame = refit_station(conn.database_url, device, template)
        offset = log_path.stat().st_size
        version = save_water_quality_model(model, str(model_file))
        fitted = time.monotonic() - t0
        # The worker looks at the file before a batch: tick readings of the second
        # station make batches until it has logged the reload (or "unchanged").
        done = (f"model {version} from {model_file} replaces", f"model {version} unchanged")
        deadline = time.monotonic() + 180
        while True:
            text = log_path.read_bytes()[offset:].decode(errors="replace")
            if any(d in text for d in done):
                break
            if "refused" in text or time.monotonic() > deadline or worker.poll() is not None:
                raise ServiceError(f"day {day}: the worker did not reload {version}:\n{text}")
            send([lines[next(ticks)]], f"tick-{day}", tick_device)
            time.sleep(0.3)
        reloaded = time.monotonic() - t0 - fitted
        add(send(rows_between(a, b), f"day-{day}", device))
        _wait_count(conn.database_url, device, total.readings, worker, timeout_s)
        refits.append(
            {"day": day, "from": str(rec_ts.iloc[a]), "rows": len(frame), "version": version,
             "refit_s": round(fitted, 1), "reload_s": round(reloaded, 1)}
        )  # fmt: skip
        if progress is not None:
            progress(f"day {day + 1}/{len(cuts) - 1}: {version}, refit {fitted:.0f} s")
    summary = {
        "days": len(refits),
        "versions": len({r["version"] for r in refits}),
        "refit_s_mean": round(sum(r["refit_s"] for r in refits) / max(len(refits), 1), 1),
        "reload_wait_s_mean": round(sum(r["reload_s"] for r in refits) / max(len(refits), 1), 1),
        "per_day": refits,
    }
    return total, summary
