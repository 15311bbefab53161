"""Replay a recorded CSV through Kafka, as a city's sensors would have sent it.

A recorded file (GECCO 2018 water quality, SKAB pump rig, NASA C-MAPSS, or any
CSV with a time column) becomes readings on the ``readings`` topic in the
wire format of :mod:`core.wire`, keyed by one device, paced at real
time or faster. The worker cannot tell them from a live station's.

The file is outside input, read a line at a time:

* every bad row becomes an ingest dead letter with a reason from
  :data:`REASONS` (the raw line kept), is counted, and the replay goes on;
* a row with no values at all is a gap: counted, nothing sent (a gap is not
  a reading of zeros); a row missing some values sends the others;
* a file whose header cannot be used at all is refused before anything is sent.

Timestamps are either kept (a backfill) or shifted by one constant so the
record *ends* at the moment the replay finishes: spacing is preserved, and no
reading is ever stamped ahead of the wall clock, whatever the speed.

Labels (``event``, ``anomaly``, a C-MAPSS run to failure) are returned as
incidents, runs of labelled minutes with their shifted start and end, for the
caller to store as ground truth; each reading also carries its own label in
``source.label``.

Delivery is at-least-once (:class:`ingest.lorawan.publisher.KafkaPublisher`);
dead-letter ids are stable per file line, so a second replay of the same file
stores each bad row once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from core.assets import AssetType
from core.wire import encode_reading
from ingest.replay_parse import (
    FORMATS,
    MAX_LINE_BYTES,
    REASONS,
    BadRow,
    Gap,
    ReplayError,
    ReplayRow,
    RowParser,
    detect_format,
    iter_lines,
    parse_lines,
)

__all__ = ["FORMATS", "REASONS", "Incident", "ReplayError", "ReplayStats", "replay_file"]


@dataclass(frozen=True, slots=True)
class Incident:
    """A run of labelled rows, at the replayed (shifted) times."""

    start: datetime
    end: datetime
    unit: int | None = None


@dataclass
class ReplayStats:
    """What a replay sent. ``rows == readings + gaps + bad``."""

    rows: int = 0
    readings: int = 0
    gaps: int = 0
    bad_by_reason: dict[str, int] = field(default_factory=dict)
    incidents: list[Incident] = field(default_factory=list)
    shift_s: float = 0.0
    first_ts: datetime | None = None
    last_ts: datetime | None = None
    elapsed_s: float = 0.0

    @property
    def bad(self) -> int:
        return sum(self.bad_by_reason.values())

    def failure_rows(
        self, *, device_id: str, asset_id: str, asset_type: str, source: str
    ) -> list[dict[str, Any]]:
        """The labelled runs as rows of the ``failures`` ground-truth table."""
        return [
            {
                "asset_id": asset_id,
                "device_id": device_id,
                "asset_type": asset_type,
                "mode": "labelled_incident",
                "degradation_started_at": inc.start,
                "failed_at": inc.end,
                "source": source,
            }
            for inc in self.incidents
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "readings": self.readings,
            "gaps": self.gaps,
            "bad": self.bad,
            "bad_by_reason": self.bad_by_reason,
            "incidents": len(self.incidents),
            "shift_s": self.shift_s,
            "first_ts": self.first_ts.isoformat() if self.first_ts else None,
            "last_ts": self.last_ts.isoformat() if self.last_ts else None,
            "elapsed_s": round(self.elapsed_s, 3),
        }


class Publisher(Protocol):
    """What :func:`replay_file` sends through (``KafkaPublisher`` in production)."""

    def reading(self, key: bytes, value: bytes) -> None: ...

    def deadletter(
        self, *, key: bytes | None, raw: bytes, reason: str, detail: str, dl_id: str
    ) -> None: ...

    def flush(self, timeout: float = 60.0) -> int: ...


def _first_line(path: Path) -> str:
    with path.open("rb") as f:
        head = f.readline(MAX_LINE_BYTES)
    return head.decode("utf-8-sig", "replace")


def _scan(
    path: Path, make_parser: Callable[[], RowParser], has_header: bool
) -> tuple[datetime, datetime]:
    """First and last usable row times (pass 1, the same parser as pass 2)."""
    first = last = None
    with path.open("rb") as f:
        for out in parse_lines(iter_lines(f), make_parser(), has_header=has_header):
            if isinstance(out, ReplayRow | Gap):
                first = first or out.ts
                last = out.ts
    if first is None or last is None:
        raise ReplayError(f"{path}: no usable row")
    return first, last


def replay_file(
    path: Path,
    publisher: Publisher,
    *,
    asset_type: AssetType,
    device_id: str,
    asset_id: str,
    fmt: str = "auto",
    mapping: Mapping[str, str] | None = None,
    speed: float = 1.0,
    keep_time: bool = False,
    interval_s: float = 60.0,
    unit: int | None = None,
    failure_at_end: bool = False,
    time_column: str | None = None,
    label_column: str | None = None,
    progress: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    flush_every: int = 5000,
) -> ReplayStats:
    """Stream one recorded file to ``publisher`` as readings of one device.

    Parameters
    ----------
    path : Path
    publisher : Publisher
        Receives readings and dead letters; flushed every ``flush_every`` rows and at the end.
    asset_type : AssetType
        The catalogue type the readings claim; mapped columns must be its metrics.
    device_id, asset_id : str
    fmt : str, default="auto"
        A key of :data:`FORMATS`, or ``auto`` to detect it from the first line.
    mapping : mapping, optional
        Column -> metric overrides.
    speed : float, default=1.0
        Record seconds per wall-clock second; 0 sends as fast as possible.
    keep_time : bool, default=False
        Keep the recorded timestamps (backfill) instead of shifting the record to end now.
    interval_s : float, default=60
        Row spacing of files without a time column (C-MAPSS: per cycle).
    unit : int, optional
        C-MAPSS: replay only this engine.
    failure_at_end : bool, default=False
        C-MAPSS training files run each engine to failure: its last cycle is an incident.
    time_column, label_column : str, optional
        Override the format's time and label columns (any CSV).
    progress : callable, optional
        Called with the number of rows handled since the last call.
    clock, sleep, now : callable
        Injectable for tests.
    """
    if speed < 0 or not math.isfinite(speed):
        raise ReplayError("speed must be a finite number >= 0")
    first_line = _first_line(path)
    name = detect_format(first_line) if fmt == "auto" else fmt
    if name not in FORMATS:
        raise ReplayError(f"unknown format {name!r}; one of {sorted(FORMATS)} or auto")
    form = FORMATS[name]
    if time_column is not None or label_column is not None:
        form = dataclasses.replace(
            form,
            time_column=time_column or form.time_column,
            label_column=label_column or form.label_column,
        )
    has_header = form.columns is None
    key = device_id.encode()

    def make_parser() -> RowParser:
        return RowParser(form, asset_type, mapping, interval_s=interval_s)

    first, last = _scan(path, make_parser, has_header)
    span = (last - first).total_seconds()
    start_wall, start_clock = now(), clock()
    # Shift so the record ends when the replay does: spacing kept, never ahead of the clock.
    end_wall = start_wall + timedelta(seconds=span / speed if speed else 0.0)
    # Whole seconds, rounded down: still never ahead of the clock, and readable.
    shift = (
        timedelta(0)
        if keep_time
        else timedelta(seconds=math.floor((end_wall - last).total_seconds()))
    )
    stats = ReplayStats(shift_s=shift.total_seconds())
    bad: Counter[str] = Counter()
    run_start: datetime | None = None
    run_end: datetime | None = None
    run_unit: int | None = None
    prev_unit: int | None = None
    prev_ts: datetime | None = None
    pending = 0
    with path.open("rb") as f:
        for out in parse_lines(iter_lines(f), make_parser(), has_header=has_header):
            stats.rows += 1
            pending += 1
            if isinstance(out, BadRow):
                bad[out.reason] += 1
                publisher.deadletter(
                    key=key,
                    raw=out.raw,
                    reason=out.reason,
                    detail=f"{path.name} line {out.line}: {REASONS[out.reason]}: {out.detail}",
                    dl_id=f"replay:{path.name}:{out.line}:{hash_line(out.raw)}",
                )
            else:
                row_unit = out.unit if isinstance(out, ReplayRow) else None
                if unit is not None and row_unit is not None and row_unit != unit:
                    stats.rows -= 1
                    pending -= 1
                    continue
                ts = out.ts + shift
                if speed:
                    due = start_clock + (out.ts - first).total_seconds() / speed
                    wait = due - clock()
                    if wait > 0:
                        # Idle anyway: deliver what is queued, so a slow replay's
                        # readings (and errors) do not wait for flush_every rows.
                        if pending > 1:  # the rows before this one
                            publisher.flush()
                            if progress is not None:
                                progress(pending - 1)
                            pending = 1
                        sleep(max(0.0, due - clock()))
                if (
                    failure_at_end
                    and prev_unit is not None
                    and row_unit != prev_unit
                    and prev_ts is not None
                ):
                    stats.incidents.append(Incident(prev_ts, prev_ts, prev_unit))
                label = out.label
                if label:
                    run_start = run_start or ts
                    run_end, run_unit = ts, row_unit
                elif run_start is not None and run_end is not None:
                    stats.incidents.append(Incident(run_start, run_end, run_unit))
                    run_start = run_end = None
                if isinstance(out, Gap):
                    stats.gaps += 1
                else:
                    source: dict[str, Any] = {"kind": "replay", "file": path.name, "line": out.line}
                    if label is not None:
                        source["label"] = int(label)
                    if row_unit is not None:
                        source["unit"] = row_unit
                    publisher.reading(
                        key,
                        encode_reading(
                            device_id=device_id,
                            asset_id=asset_id,
                            asset_type=asset_type.name,
                            ts=ts,
                            metrics=out.metrics,
                            source=source,
                        ),
                    )
                    stats.readings += 1
                stats.first_ts = stats.first_ts or ts
                stats.last_ts = ts
                prev_unit, prev_ts = row_unit, ts
            if pending >= flush_every:
                publisher.flush()
                if progress is not None:
                    progress(pending)
                pending = 0
    if run_start is not None and run_end is not None:
        stats.incidents.append(Incident(run_start, run_end, run_unit))
    if failure_at_end and prev_ts is not None:
        stats.incidents.append(Incident(prev_ts, prev_ts, prev_unit))
    publisher.flush()
    if progress is not None and pending:
        progress(pending)
    stats.bad_by_reason = dict(sorted(bad.items()))
    stats.elapsed_s = clock() - start_clock
    return stats


def hash_line(raw: bytes) -> str:
    """Short digest of a line: with the file name and line number, a stable dead-letter id."""
    return hashlib.sha1(raw, usedforsecurity=False).hexdigest()[:16]
