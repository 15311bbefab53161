"""The station's detector refitted on a schedule: ``citywatch water-quality train --every``.

The figures of docs/water-quality.md (VUS-PR 0.634) assume a refit every 24 h;
this loop is that schedule, so no cron is needed. Each run refits from the
database (``refit_station``), checks the model as the worker would, and
replaces the model file atomically only when the version changed: a running
worker reloads a replaced file, and an unchanged one would make it reload for
nothing. A failed run keeps the previous file and the loop goes on.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from models.water_quality_history import refit_station
from models.water_quality_model import WaterQualityModel, save_water_quality_model
from models.water_quality_watch import serving_problem

__all__ = ["RefitResult", "file_version", "refit_every", "refit_once"]

log = logging.getLogger(__name__)

#: First and longest wait before trying again after the database could not be
#: reached; never past the next scheduled run.
RETRY_FIRST_S = 30.0
RETRY_MAX_S = 900.0


@dataclass(frozen=True)
class RefitResult:
    """What one refit did."""

    device_id: str
    readings: int
    incident_minutes: int
    start: str
    until: str
    horizons: list[int]
    model: str
    version: str
    written: bool  # False: the file already held this version and was left alone

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["from"] = out.pop("start")
        return out


def file_version(path: Path) -> str | None:
    """The version of the model saved at ``path`` (None: no file), without parsing it.

    ``WaterQualityModel.version`` is the hash of exactly the text
    ``save_water_quality_model`` writes, so the file's bytes give it; no LightGBM
    parse of a file that could be damaged. Were that ever to change, the loop
    would only rewrite an unchanged model, not skip a new one.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    return "wq-" + hashlib.sha256(raw).hexdigest()[:12]


def refit_once(
    database_url: str, device_id: str, out: Path, template: WaterQualityModel | None
) -> RefitResult:
    """Refit ``device_id`` and write ``out`` if the version is new.

    Raises ``ValueError`` (no readings, no incident yet, a model the worker
    would refuse), ``psycopg.Error`` or ``OSError``; ``out`` is then untouched.
    """
    model, frame = refit_station(database_url, device_id, template)
    # The worker would refuse such a file; better to keep the previous one.
    problem = serving_problem(model)
    if problem is not None:
        raise ValueError(f"the refitted model is unusable: {problem}")
    version = model.version
    written = file_version(out) != version
    if written:
        save_water_quality_model(model, str(out))  # atomic: os.replace of a flushed file
    return RefitResult(
        device_id=device_id,
        readings=len(frame),
        incident_minutes=int(frame["event"].sum()),
        start=str(frame["ts"].iloc[0]),
        until=str(frame["ts"].iloc[-1]),
        horizons=sorted(model.horizon_models),
        model=str(out),
        version=version,
        written=written,
    )


def _first_line(exc: BaseException) -> str:
    # psycopg's connection errors run to several lines (one per address tried).
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _at(seconds_from_now: float) -> str:
    when = datetime.now(UTC) + timedelta(seconds=max(0.0, seconds_from_now))
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def refit_every(
    database_url: str,
    device_id: str,
    out: Path,
    every_s: float,
    *,
    template: WaterQualityModel | None = None,
    stop: threading.Event | None = None,
    report: Callable[[RefitResult], None] | None = None,
    retry_first_s: float = RETRY_FIRST_S,
    retry_max_s: float = RETRY_MAX_S,
) -> int:
    """Refit at once, then every ``every_s`` seconds, until ``stop`` is set.

    A run that fails logs a warning and leaves the model file as it was. When
    the database could not be reached, the run is tried again sooner, after
    ``retry_first_s`` doubling up to ``retry_max_s`` (never past the next run);
    other failures (no readings, no incident yet) wait for the next run, since
    only new data can change them. ``stop`` is only looked at between runs: a
    refit under way finishes and its file is written. Returns the number of
    successful refits.
    """
    if every_s <= 0:
        raise ValueError(f"the refit interval must be positive, not {every_s}")
    stop = stop or threading.Event()
    done = retries = 0
    grid = time.monotonic()  # scheduled runs: the first at once, then every every_s
    while not stop.is_set():
        now = time.monotonic()
        # A refit longer than the interval skips the runs it overlapped, not queues them.
        while grid <= now:
            grid += every_s
        wake = grid
        try:
            result = refit_once(database_url, device_id, out, template)
        except psycopg.OperationalError as exc:
            # Unreachable or restarting: worth another try before the next run. Written
            # here, not with a retry library: the back-off shares the loop's wait, which
            # must also end at the next scheduled run and at a stop.
            backoff = min(retry_max_s, retry_first_s * 2 ** min(retries, 30))  # no overflow
            wake = min(grid, time.monotonic() + backoff)
            retries += 1
            log.warning(
                "%s: refit failed, database not reachable (%s); %s kept, next try %s",
                device_id, _first_line(exc), out, _at(wake - time.monotonic()),
            )  # fmt: skip
        except (ValueError, OSError, psycopg.Error) as exc:  # OSError: the file not written
            retries = 0
            log.warning(
                "%s: refit failed (%s); %s kept, next run %s",
                device_id, _first_line(exc), out, _at(wake - time.monotonic()),
            )  # fmt: skip
        except Exception:  # a bug must not end the schedule: the next run may work
            retries = 0
            log.exception(
                "%s: refit failed; %s kept, next run %s",
                device_id, out, _at(wake - time.monotonic()),
            )  # fmt: skip
        else:
            retries, done = 0, done + 1
            what = "written to" if result.written else "unchanged, not rewritten:"
            log.info(
                "%s: %d readings, %d incident minutes, model %s %s %s; next run %s",
                device_id, result.readings, result.incident_minutes, result.version, what,
                out, _at(wake - time.monotonic()),
            )  # fmt: skip
            if report is not None:
                report(result)
        stop.wait(max(0.0, wake - time.monotonic()))
    log.info("%s: scheduled refits stopped (%d done)", device_id, done)
    return done
