"""Water-quality stations in the worker: incident now, and 1-48 h ahead, per reading.

Dataflow (wired into the scoring agent by :class:`WaterQualityHook`)::

    plan_readings(batch)                 readings stored as every asset's
      -> plan_stations                   readings of type water_quality_station,
                                         new ones only, through the station's
                                         StationState and StationScorer
         = outlook rows                  station_outlook, in the batch's transaction
         + scores                        scores table and topic: the usual
                                         hysteresis, alerts and crew inbox
         + station marks                 table "water-quality-state", saved after
                                         the batch is stored and its scores published

Delivery: exactly once in PostgreSQL. Each station's table value remembers the
last offset and time it absorbed; a batch delivered again after a crash skips
what the saved state already holds, and a batch whose state was never saved is
scored again from the same state, so it gives the same rows, which the primary
keys ((device_id, ts) for the outlook) store once. The station state is made
durable before the device state, so it is never behind the offsets
``streams.pipeline`` skips.

Model reload: :class:`models.water_quality_watch.ModelWatch` stats the model file at most every
``water_quality_reload_s`` seconds, before a batch is planned (never inside
one). A new file that loads and fits the stream's features replaces the model
from that batch on; the stations' feature states go on as they are (they are
computed by :class:`StationState`, not by the model). A file that does not
load is reported once and the old model keeps scoring.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from core.assets import ASSET_TYPES
from core.records import Reading, Score
from models.water_quality import ASSET_TYPE, StationState
from models.water_quality_model import (
    StationScorer,
    load_water_quality_model,
    outlook_row,
)
from models.water_quality_watch import ModelWatch, serving_problem
from storage.outlook import OutlookRow

from .alerting import AlertState, Hysteresis, step

log = logging.getLogger("citywatch.worker")

__all__ = [
    "StationMark",
    "StationPlan",
    "StationStates",
    "WaterQualityHook",
    "alert_spans",
    "plan_stations",
    "station_scorer",
]

#: ``model_kind`` of a supervised water-quality score (the unsupervised one is "anomaly").
MODEL_KIND = "water_quality"
_FORMAT = 1


def station_scorer(model_file: Path | None) -> StationScorer:
    """The scorer the worker runs: the model in ``model_file``, or the label-free score.

    A named file that cannot be read stops the worker (a wrong path is a
    mistake to fix, not a reason to alert on another model).
    """
    if model_file is None:
        log.info("water quality: no model file set; stations get the unsupervised score")
        return StationScorer(None)
    model = load_water_quality_model(str(model_file))
    problem = serving_problem(model)
    if problem is not None:
        raise ValueError(f"{model_file}: {problem}")
    log.info("water quality: model %s from %s", model.version, model_file)
    return StationScorer(model)


@dataclass
class StationMark:
    """One station's table value: its feature state and what it has absorbed."""

    state: StationState
    partition: int = -1
    offset: int = -1
    last_ts: float | None = None  # epoch seconds of the last reading scored

    def pack(self) -> bytes:
        doc = {
            "format": _FORMAT,
            "partition": self.partition,
            "offset": self.offset,
            "last_ts": self.last_ts,
            "state": self.state.to_dict(),
        }
        # ~400 kB of JSON (a day of nine metrics, a week of labels) is ~80 kB compressed.
        return zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 1)

    @classmethod
    def unpack(cls, raw: bytes) -> StationMark:
        doc = json.loads(zlib.decompress(raw))
        if doc.get("format") != _FORMAT:
            raise ValueError(f"unsupported water-quality state format {doc.get('format')!r}")
        return cls(
            StationState.from_dict(doc["state"]),
            int(doc["partition"]),
            int(doc["offset"]),
            None if doc["last_ts"] is None else float(doc["last_ts"]),
        )


class StationStates:
    """Each station's :class:`StationMark`: the live object while the table still holds
    our last write, else decoded from the table (after a restart or a failed batch).

    ``table`` is the Faust table ``water-quality-state`` in the worker, a dict in tests.
    """

    def __init__(self, table: MutableMapping[bytes, Any]) -> None:
        self.table = table
        self._live: dict[bytes, tuple[bytes, StationMark]] = {}

    def load(self, key: bytes) -> StationMark:
        saved = self.table.get(key)
        live = self._live.get(key)
        # Equal bytes, not the same object: a table on disk hands back a new copy.
        if live is not None and saved is not None and live[0] == saved:
            return live[1]
        mark = StationMark(StationState()) if saved is None else StationMark.unpack(saved)
        self._live[key] = (saved, mark)
        return mark

    def save(self, marks: dict[bytes, StationMark]) -> None:
        for key, mark in marks.items():
            packed = mark.pack()
            self.table[key] = packed
            self._live[key] = (packed, mark)

    def forget_live_objects(self) -> None:
        """After a failed batch: its objects moved ahead of the table."""
        self._live.clear()


@dataclass
class StationPlan:
    """What one batch changes for water-quality stations."""

    outlook: list[OutlookRow] = field(default_factory=list)
    scores: list[Score] = field(default_factory=list)
    marks: dict[bytes, StationMark] = field(default_factory=dict)  # saved after storing


def plan_stations(
    readings: Sequence[Reading],
    positions: Sequence[tuple[str, int, int]],
    states: StationStates,
    scorer: StationScorer,
) -> StationPlan:
    """Score the batch's new water-quality readings, in stream order.

    Parameters
    ----------
    readings, positions : sequences
        The batch's stored readings and their ``(topic, partition, offset)``
        (``SinkBatch.readings`` and ``reading_positions``).
    states : StationStates
    scorer : StationScorer
        Its ``states`` dict is pointed at the loaded states before scoring.

    A reading whose offset the station's state already absorbed (a batch
    delivered again) or whose time is not after the last one scored (late, or
    a second copy) is stored as usual but not scored: features only move forward.
    """
    plan = StationPlan()
    todo: list[tuple[Reading, bool | None]] = []
    for reading, (_, partition, offset) in zip(readings, positions, strict=True):
        if reading.asset_type != ASSET_TYPE:
            continue
        key = reading.device_id.encode()
        mark = plan.marks[key] if key in plan.marks else states.load(key)
        t = reading.ts.timestamp()
        if partition == mark.partition and offset <= mark.offset:
            continue
        mark.partition, mark.offset = partition, offset
        plan.marks[key] = mark
        if mark.last_ts is not None and t <= mark.last_ts:
            continue
        mark.last_ts = t
        scorer.states[reading.device_id] = mark.state
        todo.append((reading, _label(reading.source)))
    if not todo:
        return plan
    results = scorer.score_batch([(r.device_id, r.ts, r.metrics, lab) for r, lab in todo])
    kind = "anomaly" if scorer.model is None else MODEL_KIND
    for (reading, _), result in zip(todo, results, strict=True):
        plan.outlook.append(outlook_row(reading.device_id, reading.asset_id, reading.ts, result))
        p = result["event_probability"]
        if p == p:  # a gap has no score, not a score of zero
            plan.scores.append(
                Score(
                    reading.ts,
                    reading.device_id,
                    reading.asset_id,
                    ASSET_TYPE,
                    result["model_version"],
                    p,
                    scorer.alarm_threshold,
                    model_kind=kind,
                )
            )
    return plan


def _label(source: dict[str, Any] | None) -> bool | None:
    # A replayed file's label of this minute (0/1); crews' outcomes reach the
    # station through the daily refit instead.
    label = (source or {}).get("label")
    return None if label is None else bool(label)


class WaterQualityHook:
    """The scorer, its table and its writes, on the worker's Faust app.

    The scoring agent calls :meth:`plan` after ``plan_readings`` (the scores go
    out with the champion's, so alerts follow the usual hysteresis), writes
    ``plan.outlook`` with the batch (``storage.outlook.OutlookSink``), then
    :meth:`save` after publishing and before the device states.
    """

    def __init__(self, app, settings, clock: Callable[[], float] = time.monotonic) -> None:
        self._app = app
        # True after a failed batch until one succeeds: the retry of a batch must
        # score with the model that scored it first (the scores' key holds the version).
        self._retrying = False
        # No station type in the catalogue: no station can pass validation, so
        # no table (each table costs every rebalance a changelog recovery).
        self.enabled = ASSET_TYPE in ASSET_TYPES
        self.asset_types = frozenset({ASSET_TYPE}) if self.enabled else frozenset()
        if not self.enabled:
            return
        self.watch = ModelWatch(
            settings.water_quality_model, settings.water_quality_reload_s, clock
        )
        self.watch.started()
        self.scorer = station_scorer(settings.water_quality_model)
        self.states = StationStates(
            app.Table(
                "water-quality-state",
                default=None,
                key_type=bytes,
                value_type=bytes,
                partitions=settings.partitions,
                use_partitioner=True,  # like device-state: the key decides the partition
            )
        )

    def plan(self, readings_plan) -> StationPlan:
        """Score the stations of one batch; their scores join the champion's."""
        if not self.enabled:
            return StationPlan()
        if not self._retrying:  # between batches: the whole batch scores with one model
            self.scorer = self.watch.check(self.scorer) or self.scorer
        batch = readings_plan.batch
        plan = plan_stations(
            batch.readings, batch.reading_positions or [], self.states, self.scorer
        )
        readings_plan.champion_scores.extend(plan.scores)
        batch.scores.extend(plan.scores)
        return plan

    async def save(self, plan: StationPlan) -> None:
        """Move the stations' table values forward and make them durable, so the
        device state (saved next) is never ahead of them."""
        if plan.marks:
            self.states.save(plan.marks)
            await self._app.producer.flush()
        self._retrying = False

    def forget(self) -> None:
        if self.enabled:
            self.states.forget_live_objects()
            self._retrying = True


def alert_spans(
    ts: Sequence[datetime], risks: Sequence[float], threshold: float, rule: Hysteresis
) -> list[tuple[datetime, datetime | None]]:
    """``[opened, closed)`` of the alerts the worker's hysteresis raises on one
    station's scores (NaN: no score), offline; ``closed`` is None while open."""
    state = AlertState()
    open_at, close_at = rule.thresholds(threshold)
    spans: list[tuple[datetime, datetime | None]] = []
    for t, risk in zip(ts, risks, strict=True):
        if risk != risk:
            continue
        change = step(
            state, asset_id="station", device_id="station", ts=t, risk=float(risk),
            open_at=open_at, close_at=close_at, rule=rule,
        )  # fmt: skip
        if change is not None and change.kind == "open":
            spans.append((t, None))
        elif change is not None:
            spans[-1] = (spans[-1][0], t)
    return spans
