"""The worker's batch steps as plain functions: a batch of messages in, a plan out.

    messages --validate-------> Reading | Maintenance | dead letter
             --advance_devices-> rows to store, device states, feature rows to score
             --score-----------> champion and shadow scores, explanations
             = ReadingsPlan

    score batches --plan_alerts--> alert rows, alert events, alert states
             = AlertsPlan

Nothing here touches a broker or a database, so every rule (replays, duplicates,
late readings, maintenance resets, a changed feature spec, shadow scoring) is
tested with lists of messages. ``streams.app`` carries a plan out in the
crash-safe order: store, publish, move state, acknowledge.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np
from aiokafka.partitioner import murmur2

from core.records import Alert, DeadLetter, Explanation, Maintenance, Reading, Score
from core.wire import decode_score_batch
from models.feature_spec import FeatureSpec
from models.remaining_life import time_to_failure_days
from storage.sinks import SinkBatch

from .alerting import AlertState, Hysteresis, step
from .deadletters import deadletter_row, duplicate_deadletter
from .device_states import DeviceStates
from .explanations import ExplainPolicy
from .health_book import blend, health_spec, outlook, policy_kind
from .records import AlertEvent, alert_event
from .state import DeviceState
from .validation import DeviceLookup, Rejection, validate_reading

log = logging.getLogger("citywatch.worker")


class IncomingMessage(Protocol):
    """What the pipeline reads of a Kafka message (Faust's ``Message`` has it)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Limits:
    """What validation refuses, from the worker's settings."""

    max_skew: timedelta
    max_age: timedelta | None
    max_bytes: int


@dataclass
class ReadingsPlan:
    """Everything one batch of readings changes, in the order the worker applies it."""

    batch: SinkBatch = field(default_factory=SinkBatch)
    reading_messages: list = field(default_factory=list)  # the message of each readings row
    champion_scores: list[Score] = field(default_factory=list)  # stored and published
    republish: list[tuple[bytes, bytes, str]] = field(default_factory=list)  # key, raw, reason
    states: dict[bytes, DeviceState] = field(default_factory=dict)  # written after publishing
    unscored: int = 0  # stored, but the champion has no model for the asset type
    # The cold-start health score of each row to score, per asset type (streams.health_book).
    health: dict[str, list] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        # A reading whose (device, ts) another message's reading holds in the database
        # becomes a duplicate dead letter in the same transaction: never a silent no-op.
        self.batch.conflict_deadletter = self._conflict_deadletter

    def _conflict_deadletter(self, i: int) -> DeadLetter:
        return duplicate_deadletter(self.batch.readings[i], self.reading_messages[i])

    def refuse(self, rejection: Rejection, message: IncomingMessage, raw: bytes | None) -> None:
        """A dead letter stored with the batch and republished on the dead-letter topic."""
        self.batch.deadletters.append(deadletter_row(rejection, message, raw))
        self.republish.append((message.key or b"", raw or b"", rejection.reason))

    def conflicts_stored(self, conflicts: Iterable[int]) -> None:
        """The sink turned these readings into duplicate dead letters: republish them too."""
        for i in conflicts:
            message = self.reading_messages[i]
            self.republish.append((message.key or b"", message.value or b"", "duplicate"))

    def scores_by_partition(self, partitions: int) -> dict[int, list[Score]]:
        """Champion scores grouped by the scores-topic partition of their asset."""
        return scores_by_partition(self.champion_scores, partitions)


def scores_by_partition(scores: Iterable[Score], partitions: int) -> dict[int, list[Score]]:
    """``scores`` grouped by the scores-topic partition of their asset."""
    out: dict[int, list[Score]] = defaultdict(list)
    for score in scores:
        out[partition_of(score.asset_id.encode(), partitions)].append(score)
    return out


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2), as every producer and Faust table uses it."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


# -- readings ----------------------------------------------------------------


def plan_readings(
    messages: Sequence[IncomingMessage],
    *,
    lookup: DeviceLookup,
    limits: Limits,
    now: datetime,
    states: DeviceStates,
    champion: Any,
    challenger: Any | None,
    explain: ExplainPolicy,
    scored_elsewhere: frozenset[str] = frozenset(),
) -> ReadingsPlan:
    """The whole readings step for one batch, in order.

    ``scored_elsewhere``: asset types another scorer of the worker handles (water-quality
    stations), so the champion lacking them is not news.
    """
    plan = ReadingsPlan()
    by_device = validate(messages, plan, lookup, limits, now)
    to_score = advance_devices(by_device, plan, states, champion, now, scored_elsewhere)
    score(to_score, plan, champion, challenger, explain)
    plan.batch.reading_positions = [(m.topic, m.partition, m.offset) for m in plan.reading_messages]
    return plan


def validate(
    messages: Sequence[IncomingMessage],
    plan: ReadingsPlan,
    lookup: DeviceLookup,
    limits: Limits,
    now: datetime,
) -> dict[str, list[tuple[Reading | Maintenance, IncomingMessage]]]:
    """1. Each message becomes a Reading, a Maintenance event or a dead letter."""
    by_device: dict[str, list[tuple[Reading | Maintenance, IncomingMessage]]] = defaultdict(list)
    for message in messages:
        raw = message.value
        checked = validate_reading(
            raw,
            lookup,
            now=now,
            max_skew=limits.max_skew,
            max_age=limits.max_age,
            max_bytes=limits.max_bytes,
        )
        if isinstance(checked, Rejection):
            plan.refuse(checked, message, raw)
        else:
            by_device[checked.device_id].append((checked, message))
    return by_device


def advance_devices(
    by_device: dict[str, list[tuple[Reading | Maintenance, IncomingMessage]]],
    plan: ReadingsPlan,
    states: DeviceStates,
    champion: Any,
    now: datetime,
    scored_elsewhere: frozenset[str] = frozenset(),
) -> dict[str, list[tuple[Reading, list[float]]]]:
    """2. Per device, in offset order: skip replays, refuse duplicates, store readings,
    apply maintenance resets, and move features forward. Returns the rows to score."""
    batch_keys: set[tuple[str, datetime]] = set()  # the sink needs them unique
    to_score: dict[str, list[tuple[Reading, list[float]]]] = defaultdict(list)
    health_specs: dict[str, Any] = {}  # per asset type: the card is the batch's champion's
    for device_id, items in by_device.items():
        key = device_id.encode()
        asset_type = items[0][0].asset_type
        scored = asset_type in champion.asset_types
        if scored:
            spec = champion.feature_spec(asset_type)
        else:
            spec = FeatureSpec.for_asset_type(asset_type)
        state = states.load(key, spec, champion.version, asset_type)
        hspec = health_specs.get(asset_type)
        if hspec is None:
            hspec = health_specs[asset_type] = health_spec(champion.card, asset_type, spec.metrics)
        for reading, message in items:
            if message.partition != state.last_partition:
                if state.last_partition >= 0:
                    _warn_moved(device_id, state.last_partition, message.partition)
                state.last_partition = message.partition
            elif message.offset <= state.last_offset:
                continue  # replay of a message already stored before a restart
            state.last_offset = message.offset
            plan.states[key] = state
            if isinstance(reading, Maintenance):
                _plan_maintenance(reading, state, plan)
                continue
            repeated = (device_id, reading.ts) in batch_keys
            if repeated or (state.last_ts is not None and reading.ts == state.last_ts):
                rejection = Rejection("duplicate", f"second reading at {reading.ts}", device_id)
                plan.refuse(rejection, message, message.value)
                continue
            plan.batch.readings.append(reading)  # validated: stored as it is
            plan.reading_messages.append(message)
            batch_keys.add((device_id, reading.ts))
            if state.last_ts is not None and now >= state.last_ts > reading.ts:
                # Late: stored, but features only move forward. A last reading
                # ahead of our clock (forged or skewed) makes nothing late, so
                # it cannot mute the device's real readings.
                continue
            state.last_ts = reading.ts
            if state.reset_pending and reading.ts >= state.reset_ts:
                state.features.reset_baseline()
                states.health.reset(key, hspec)
                state.reset_pending = False
            features = state.features.update(reading.metrics)
            if scored:
                to_score[asset_type].append((reading, features))
                plan.health[asset_type].append(states.health.update(key, hspec, reading.metrics))
            elif asset_type not in scored_elsewhere:
                plan.unscored += 1
                _warn_unscored(asset_type, champion.version)
    return to_score


def _plan_maintenance(event: Maintenance, state: DeviceState, plan: ReadingsPlan) -> None:
    # A repair. Features restart at the device's first reading at or after the
    # event's time, exactly where training resets them (models.history); a
    # repeated event (producer retry) is ignored.
    if state.reset_ts is None or event.ts > state.reset_ts:
        state.reset_ts, state.reset_pending = event.ts, True
    plan.batch.maintenance.append(event)


def score(
    to_score: dict[str, list[tuple[Reading, list[float]]]],
    plan: ReadingsPlan,
    champion: Any,
    challenger: Any | None,
    explain: ExplainPolicy,
) -> None:
    """3. One LightGBM call per asset type and model. Champion rows are stored and
    published (they alert); challenger rows are stored only (shadow). High champion
    scores are explained as ``explain`` chooses."""
    for asset_type, rows in to_score.items():
        X = np.asarray([features for _, features in rows], dtype=float)
        risks = champion.predict_proba(asset_type, X)
        threshold = float(champion.threshold(asset_type))
        # Which model alerts is the card's decision per asset type; the anomaly score
        # and the time to failure are stored either way.
        kind = policy_kind(champion.card, asset_type)
        alerting, alert_at, anomaly = blend(
            kind, risks.tolist(), threshold, plan.health[asset_type]
        )
        ttf = time_to_failure_days(champion, asset_type, X) or [(None,) * 3] * len(rows)
        version = champion.version
        plan.champion_scores.extend(
            # Positional (role, model_kind, anomaly_score, ttf low/median/high after the
            # threshold): keyword arguments cost a third more per score.
            Score(
                reading.ts,
                reading.device_id,
                reading.asset_id,
                asset_type,
                version,
                risk,
                alert_at,
                "champion",
                kind,
                a,
                *t,
            )
            for (reading, _), risk, a, t in zip(rows, alerting, anomaly, ttf, strict=True)
        )
        chosen = explain.choose([reading for reading, _ in rows], risks >= threshold)
        for i, contributions in zip(chosen, champion.explain(asset_type, X[chosen]), strict=True):
            reading = rows[i][0]
            plan.batch.explanations.append(
                Explanation(
                    reading.ts,
                    reading.device_id,
                    reading.asset_id,
                    champion.version,
                    float(risks[i]),
                    contributions,
                )
            )
        if challenger is not None and same_features(challenger, champion, asset_type):
            shadow = challenger.predict_proba(asset_type, X).tolist()
            shadow_threshold = float(challenger.threshold(asset_type))
            plan.batch.scores.extend(
                Score(
                    reading.ts,
                    reading.device_id,
                    reading.asset_id,
                    asset_type,
                    challenger.version,
                    risk,
                    shadow_threshold,
                    "challenger",
                )
                for (reading, _), risk in zip(rows, shadow, strict=True)
            )
    plan.batch.scores.extend(plan.champion_scores)


def same_features(a: Any, b: Any, asset_type: str) -> bool:
    """Shadow scoring reuses the champion's feature rows; a challenger with other
    features would need its own device state, which the worker doesn't keep."""
    return asset_type in a.asset_types and a.feature_spec(asset_type) == b.feature_spec(asset_type)


_moved_warned: set[str] = set()
_unscored_warned: set[tuple[str, str]] = set()


def _warn_moved(device_id: str, old: int, new: int) -> None:
    # Replay detection compares offsets within one partition. A device whose
    # messages arrive on two partitions means producers partition differently
    # (every citywatch producer uses murmur2, as Kafka's Java client does).
    if device_id not in _moved_warned:
        _moved_warned.add(device_id)
        log.warning(
            "device %s moved from partition %d to %d: check the producers' partitioner",
            device_id,
            old,
            new,
        )


def _warn_unscored(asset_type: str, version: str) -> None:
    # A catalogue type with no trained model yet: its readings are stored and
    # its features kept, so a model promoted later starts from real history.
    if (version, asset_type) not in _unscored_warned:
        _unscored_warned.add((version, asset_type))
        log.warning(
            "model %s has no %s model: its readings are stored, not scored", version, asset_type
        )


# -- alerts ------------------------------------------------------------------


@dataclass
class AlertsPlan:
    """Alert transitions of one batch of score batches, and the states to write after."""

    rows: list[Alert] = field(default_factory=list)
    events: list[AlertEvent] = field(default_factory=list)
    states: dict[str, AlertState] = field(default_factory=dict)


def plan_alerts(
    score_batches: Iterable[bytes | None],
    load_state: Callable[[bytes], dict | None],
    rule: Hysteresis,
) -> AlertsPlan:
    """Hysteresis per asset over each score, skipping replayed or stale scores."""
    plan = AlertsPlan()
    for raw in score_batches:
        for s in decode_score_batch(raw):
            if s.asset_id not in plan.states:
                plan.states[s.asset_id] = AlertState.from_dict(load_state(s.asset_id.encode()))
            state = plan.states[s.asset_id]
            if state.last_ts is not None and s.ts <= datetime.fromisoformat(state.last_ts):
                continue  # replayed or stale score
            open_at, close_at = rule.thresholds(s.threshold)
            transition = step(
                state,
                asset_id=s.asset_id,
                device_id=s.device_id,
                ts=s.ts,
                risk=s.risk,
                open_at=open_at,
                close_at=close_at,
                rule=rule,
            )
            if transition is None:
                continue
            row = Alert(
                transition.alert_id,
                s.asset_id,
                s.device_id,
                s.asset_type,
                "open" if transition.kind == "open" else "closed",
                transition.opened_at,
                transition.closed_at,
                transition.peak_risk,
                s.risk,
                open_at,
                s.model_version,
                s.model_kind,
                outlook(s),
            )
            plan.rows.append(row)
            plan.events.append(alert_event(row, transition.kind))
    return plan
