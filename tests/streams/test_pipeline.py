"""The worker's batch pipeline without a broker: lists of messages in, plans out.

The model is a real LightGBM bundle (the session's ``trained_models``); messages
are plain records with a topic, partition, offset, key and value, which is all
the pipeline reads of a Kafka message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.wire import encode_score_batch
from ingest.simulator import FleetSimulator
from models.feature_spec import FeatureSpec
from streams.alerting import Hysteresis
from streams.device_states import DeviceStates
from streams.explanations import ExplainPolicy
from streams.pipeline import Limits, plan_alerts, plan_readings
from streams.state import decode_offsets
from tests.pipeline_helpers import as_messages, offline_scores

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
LIMITS = Limits(max_skew=timedelta(minutes=5), max_age=timedelta(days=7), max_bytes=65536)


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class Partition:
    """One partition's messages with consecutive offsets, as Kafka numbers them."""

    def __init__(self, partition: int = 0, topic: str = "readings") -> None:
        self.partition, self.topic, self.next = partition, topic, 0

    def messages(self, pairs) -> list[Msg]:
        out = []
        for key, value in pairs:
            out.append(Msg(self.topic, self.partition, self.next, key, value))
            self.next += 1
        return out


@pytest.fixture(scope="module")
def fleet():
    return FleetSimulator(n_devices=6, seed=11)


@pytest.fixture(scope="module")
def history(fleet):
    readings, failures = fleet.history(120, NOW - timedelta(hours=3), timedelta(seconds=30))
    return readings, failures


def _directory(fleet):
    known = {d.device_id: (d.asset_id, d.asset_type) for d in fleet.devices}
    return known.get


def _run(
    messages,
    fleet,
    states,
    champion,
    challenger=None,
    batch_size=200,
    explain=None,
    scored_elsewhere=frozenset(),
):
    explain = explain or ExplainPolicy(timedelta(0))
    plans = []
    for i in range(0, len(messages), batch_size):
        plan = _plan(
            messages[i : i + batch_size],
            fleet,
            states,
            champion,
            challenger=challenger,
            explain=explain,
            scored_elsewhere=scored_elsewhere,
        )
        states.save(plan.states)  # what the worker does once the batch is stored
        plans.append(plan)
    return plans


def _scores(plans) -> pd.DataFrame:
    rows = [(s.device_id, s.ts, s.risk) for p in plans for s in p.champion_scores]
    frame = pd.DataFrame(rows, columns=["device_id", "ts", "risk"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame.sort_values(["device_id", "ts"]).reset_index(drop=True)


def test_batches_score_exactly_as_training_computes_features(fleet, history, trained_models):
    readings, failures = history
    messages = Partition().messages(as_messages(readings, maintenance=True))
    plans = _run(messages, fleet, DeviceStates({}), trained_models)
    online = _scores(plans)
    offline = offline_scores(trained_models, readings, failures)
    assert len(online) == len(offline) == len(readings)
    np.testing.assert_allclose(online["risk"], offline["risk"], rtol=0, atol=1e-12)
    stored = sum(len(p.batch.readings) for p in plans)
    assert stored == len(readings)
    assert sum(len(p.batch.maintenance) for p in plans) == sum(r.repaired for r in readings)
    # One plan's positions are its stored readings' own messages.
    plan = plans[0]
    assert plan.batch.reading_positions == [
        (m.topic, m.partition, m.offset) for m in plan.reading_messages
    ]


def test_batch_size_does_not_change_a_score(fleet, history, trained_models):
    readings, _ = history
    pairs = as_messages(readings)
    small = _scores(
        _run(Partition().messages(pairs), fleet, DeviceStates({}), trained_models, batch_size=7)
    )
    large = _scores(
        _run(Partition().messages(pairs), fleet, DeviceStates({}), trained_models, batch_size=500)
    )
    pd.testing.assert_frame_equal(small, large)


def test_a_replay_after_a_restart_stores_and_scores_nothing_twice(fleet, history, trained_models):
    readings, _ = history
    messages = Partition().messages(as_messages(readings))
    table: dict = {}
    _run(messages, fleet, DeviceStates(table), trained_models)
    # A restarted worker: a fresh cache over the same table, the same messages again.
    again = _run(messages, fleet, DeviceStates(table), trained_models)
    assert sum(len(p.batch.readings) for p in again) == 0
    assert sum(len(p.champion_scores) for p in again) == 0
    assert sum(len(p.batch.deadletters) for p in again) == 0


def test_the_same_reading_twice_is_a_duplicate_dead_letter(fleet, trained_models):
    device = fleet.devices[0]
    value = _reading(device, NOW - timedelta(minutes=3), _mid_metrics(device.asset_type))
    part = Partition()
    plan = _run(
        part.messages([(b"k", value), (b"k", value)]), fleet, DeviceStates({}), trained_models
    )[0]
    assert len(plan.batch.readings) == 1
    assert [d.reason for d in plan.batch.deadletters] == ["duplicate"]
    assert [r[2] for r in plan.republish] == ["duplicate"]
    # In a later batch, too: the device's last reading has that time.
    states = DeviceStates({})
    _run(part.messages([(b"k", value)]), fleet, states, trained_models)
    later = _run(part.messages([(b"k", value)]), fleet, states, trained_models)[0]
    assert [d.reason for d in later.batch.deadletters] == ["duplicate"]


def test_a_late_reading_is_stored_but_does_not_move_features(fleet, trained_models):
    device = fleet.devices[1]
    metrics = _mid_metrics(device.asset_type)
    part = Partition()
    states = DeviceStates({})
    first = [_reading(device, NOW - timedelta(minutes=m), metrics) for m in (10, 5)]
    _run(part.messages([(b"k", v) for v in first]), fleet, states, trained_models)
    n_before = states.cache._entries[device.device_id.encode()][1].features.to_dict()["n"]
    late = _reading(device, NOW - timedelta(minutes=8), metrics)
    plan = _run(part.messages([(b"k", late)]), fleet, states, trained_models)[0]
    assert len(plan.batch.readings) == 1 and not plan.champion_scores
    state = plan.states[device.device_id.encode()]
    assert state.features.to_dict()["n"] == n_before
    assert state.last_ts == NOW - timedelta(minutes=5)


def test_a_forged_future_reading_cannot_make_real_readings_late(fleet, trained_models):
    device = fleet.devices[2]
    metrics = _mid_metrics(device.asset_type)
    forged = _reading(device, NOW + timedelta(minutes=4), metrics)  # inside the allowed skew
    real = _reading(device, NOW - timedelta(minutes=1), metrics)
    plan = _run(
        Partition().messages([(b"k", forged), (b"k", real)]),
        fleet,
        DeviceStates({}),
        trained_models,
    )[0]
    assert len(plan.champion_scores) == 2


def test_maintenance_resets_features_at_the_first_reading_after_it(fleet, trained_models):
    device = fleet.devices[3]
    metrics = _mid_metrics(device.asset_type)
    states = DeviceStates({})
    part = Partition()
    before = [_reading(device, NOW - timedelta(minutes=m), metrics) for m in (30, 20)]
    _run(part.messages([(b"k", v) for v in before]), fleet, states, trained_models)
    repair = _maintenance(device, NOW - timedelta(minutes=15))
    after = _reading(device, NOW - timedelta(minutes=10), metrics)
    plan = _run(
        part.messages([(b"k", repair), (b"k", repair), (b"k", after)]),
        fleet,
        states,
        trained_models,
    )[0]
    assert len(plan.batch.maintenance) == 2  # both stored; the repeat resets nothing more
    state = plan.states[device.device_id.encode()]
    assert state.reset_ts == NOW - timedelta(minutes=15) and not state.reset_pending
    spec = trained_models.feature_spec(device.asset_type)
    column = spec.feature_names.index("readings_since_maintenance")
    # The reading after the repair was the first since maintenance; this is the second.
    assert state.features.update(metrics)[column] == pytest.approx(2.0)


def test_a_model_with_other_features_keeps_offsets_and_starts_features_afresh(
    fleet, trained_models
):
    device = fleet.devices[0]
    metrics = _mid_metrics(device.asset_type)
    table: dict = {}
    part = Partition()
    _run(
        part.messages([(b"k", _reading(device, NOW - timedelta(minutes=9), metrics))]),
        fleet,
        DeviceStates(table),
        trained_models,
    )
    key = device.device_id.encode()
    saved_offset = decode_offsets(table[key]).last_offset
    other = FeatureSpec.for_asset_type(device.asset_type, window=3)
    states = DeviceStates(table)
    state = states.load(key, other, "other-model", device.asset_type)
    assert state.last_offset == saved_offset
    assert state.features.spec == other and state.features.to_dict()["n"] == 0


def test_a_challenger_scores_in_shadow_and_does_not_alert(fleet, history, trained_models):
    readings, _ = history
    messages = Partition().messages(as_messages(readings[:100]))
    plan = _run(messages, fleet, DeviceStates({}), trained_models, challenger=trained_models)[0]
    roles = [s.role for s in plan.batch.scores]
    assert roles.count("challenger") == roles.count("champion") == len(plan.champion_scores)
    assert all(s.role == "champion" for s in plan.champion_scores)


def test_hostile_messages_become_dead_letters_and_the_batch_goes_on(fleet, trained_models):
    device = fleet.devices[0]
    good = _reading(device, NOW - timedelta(minutes=1), _mid_metrics(device.asset_type))
    hostile = [b"", b"\xff\xfe", b"[1,2]", b'{"device_id": 5}', None, b"{" * 10000, good[:-1]]
    messages = Partition().messages([(b"x", v) for v in hostile] + [(b"k", good)])
    plan = _run(messages, fleet, DeviceStates({}), trained_models)[0]
    assert len(plan.batch.readings) == 1 and len(plan.champion_scores) == 1
    assert len(plan.batch.deadletters) == len(hostile) == len(plan.republish)
    assert all(d.reason and d.detail for d in plan.batch.deadletters)


def test_a_type_without_a_model_is_stored_and_counted_unscored(fleet, trained_models):
    class OnlyPumps:
        """The real bundle, restricted to one asset type, as a bundle trained on pumps only."""

        version = trained_models.version
        asset_types = ("water_pump",)

        def __getattr__(self, name):
            return getattr(trained_models, name)

    lift = next(d for d in fleet.devices if d.asset_type != "water_pump")
    value = _reading(lift, NOW - timedelta(minutes=1), _mid_metrics(lift.asset_type))
    plan = _run(Partition().messages([(b"k", value)]), fleet, DeviceStates({}), OnlyPumps())[0]
    assert len(plan.batch.readings) == 1 and plan.unscored == 1 and not plan.champion_scores
    # A type another scorer of the worker handles (water-quality stations) is not "unscored".
    elsewhere = frozenset({lift.asset_type})
    plans = _run(
        Partition().messages([(b"k", value)]),
        fleet,
        DeviceStates({}),
        OnlyPumps(),
        scored_elsewhere=elsewhere,
    )
    assert len(plans[0].batch.readings) == 1 and plans[0].unscored == 0


def test_high_scores_are_explained_once_per_episode_and_interval(trained_models):
    fleet = FleetSimulator(n_devices=12, seed=4, initial_degrading_fraction=0.5)
    readings, _ = fleet.history(200, NOW - timedelta(hours=4), timedelta(minutes=1))
    messages = Partition().messages(as_messages(readings))
    every = _run(messages, fleet, DeviceStates({}), trained_models)
    interval = timedelta(minutes=10)
    some = _run(messages, fleet, DeviceStates({}), trained_models, explain=ExplainPolicy(interval))
    scores = [s for p in every for s in p.champion_scores]
    high = [s for s in scores if s.risk >= s.threshold]
    assert high, "the fleet must have high scores for this test to mean anything"
    # Interval 0: every high score is explained.
    assert len([e for p in every for e in p.batch.explanations]) == len(high)
    explained = {(e.device_id, e.ts) for p in some for e in p.batch.explanations}
    assert len(explained) < len(high)
    # Otherwise: each episode's first high score, then at most once per interval.
    last_high: dict[str, datetime | None] = {}
    last_explained: dict[str, datetime] = {}
    for s in sorted(scores, key=lambda s: (s.device_id, s.ts)):
        if s.risk < s.threshold:
            last_high[s.device_id] = None
            continue
        episode_start = last_high.get(s.device_id) is None
        due = episode_start or s.ts - last_explained[s.device_id] >= interval
        assert ((s.device_id, s.ts) in explained) == due
        if due:
            last_explained[s.device_id] = s.ts
        last_high[s.device_id] = s.ts


def test_alerts_open_after_the_streak_close_after_it_and_ignore_replays():
    rule = Hysteresis(open_after=2, close_after=2, open_at=None, close_at=None)
    table: dict = {}

    def batch(risks, start):
        return encode_score_batch(
            [_score("a1", NOW + timedelta(minutes=start + i), r) for i, r in enumerate(risks)]
        )

    first = plan_alerts([batch([0.9, 0.95], 0)], table.get, rule)
    assert [r.status for r in first.rows] == ["open"] and first.events[0].transition == "open"
    table.update({k.encode(): s.to_dict() for k, s in first.states.items()})
    replay = plan_alerts([batch([0.9, 0.95], 0)], table.get, rule)
    assert replay.rows == []
    closing = plan_alerts([batch([0.1, 0.1], 5)], table.get, rule)
    assert [r.status for r in closing.rows] == ["closed"]
    assert closing.rows[0].peak_risk == pytest.approx(0.95)


# -- message builders ----------------------------------------------------------


def _mid_metrics(asset_type: str) -> dict[str, float]:
    from core.assets import ASSET_TYPES

    return {m.name: (m.low + m.high) / 2 for m in ASSET_TYPES[asset_type].metrics}


def _reading(device, ts: datetime, metrics: dict) -> bytes:
    from core.wire import encode_reading

    return encode_reading(
        device_id=device.device_id,
        asset_id=device.asset_id,
        asset_type=device.asset_type,
        ts=ts,
        metrics=metrics,
    )


def _maintenance(device, ts: datetime) -> bytes:
    from core.wire import encode_maintenance

    return encode_maintenance(
        device.device_id, device.asset_id, device.asset_type, ts, {"kind": "test"}
    )


def _score(asset_id: str, ts: datetime, risk: float):
    from core.records import Score

    return Score(ts, "d-" + asset_id, asset_id, "water_pump", "v1", risk, 0.5)


def test_messages_keep_json_shape():
    # Guard for the builders above: they are the wire format, not a test double.
    assert json.loads(_reading(FleetSimulator(n_devices=1, seed=1).devices[0], NOW, {"x": 1.0}))[
        "metrics"
    ] == {"x": 1.0}


def test_the_card_decides_which_model_alerts_and_scores_carry_anomaly_and_ttf(
    fleet, history, trained_models
):
    """Without labels (policy 'anomaly') the anomaly score alerts; the failure risk, the
    anomaly score and the time to failure are the offline replay's, batch by batch."""
    import dataclasses

    from models.health import ANOMALY_THRESHOLD, HealthSpec

    readings, failures = history
    card = dict(trained_models.card)
    types = trained_models.asset_types
    card["scoring_policy"] = {t: {"kind": "anomaly"} for t in types}
    # a short warm-up, so the 120 readings per device leave some to score
    card["health_specs"] = {
        t: HealthSpec(metrics=trained_models.feature_spec(t).metrics, warmup=40).to_dict()
        for t in types
    }
    unlabelled = dataclasses.replace(trained_models, card=card)
    messages = Partition().messages(as_messages(readings, maintenance=True))
    plans = _run(messages, fleet, DeviceStates({}), unlabelled, batch_size=37)
    scores = [s for p in plans for s in p.champion_scores]
    assert {s.model_kind for s in scores} == {"anomaly"}
    assert {s.threshold for s in scores} == {ANOMALY_THRESHOLD}
    online = pd.DataFrame(
        [(s.device_id, s.ts, s.risk, s.anomaly_score, s.ttf_median) for s in scores],
        columns=["device_id", "ts", "risk", "anomaly_score", "ttf_median"],
    )
    online["ts"] = pd.to_datetime(online["ts"], utc=True)
    online["anomaly_score"] = online["anomaly_score"].astype(float)
    offline = offline_scores(unlabelled, readings, failures)
    merged = online.merge(offline, on=["device_id", "ts"], suffixes=("", "_off"))
    assert len(merged) == len(online) == len(offline)
    np.testing.assert_array_equal(merged["risk"], merged["risk_off"])
    np.testing.assert_array_equal(merged["anomaly_score"], merged["anomaly_score_off"])
    np.testing.assert_array_equal(merged["ttf_median"], merged["ttf_median_off"])
    assert merged["anomaly_score"].notna().any() and merged["anomaly_score"].isna().any()
    # risk is the anomaly score's 0..1 map, not the classifier's probability
    scored = merged[merged["anomaly_score"].notna()]
    np.testing.assert_allclose(
        scored["risk"], scored["anomaly_score"] / (1 + scored["anomaly_score"]), rtol=1e-12
    )


def test_states_moved_between_checkpoints_score_as_one_run_and_restart_from_the_last(
    fleet, history, trained_models
):
    """The worker writes states only at checkpoints (streams.checkpoints): between
    them the live objects are ahead of the table. A restart reads the batches since
    the last checkpoint again, from its states, and scores them the same."""
    readings, _ = history
    messages = Partition().messages(as_messages(readings))
    uninterrupted = _scores(_run(messages, fleet, DeviceStates({}), trained_models, batch_size=60))

    table: dict = {}
    states = DeviceStates(table)
    plans, checkpointed_at = [], 0
    batches = [messages[i : i + 60] for i in range(0, len(messages), 60)]
    crash_after = len(batches) * 2 // 3
    for n, batch in enumerate(batches[:crash_after], start=1):
        plan = _plan(batch, fleet, states, trained_models)
        states.moved(plan.states)  # stored and published; the table is not written yet
        plans.append(plan)
        if n % 3 == 0:
            states.write(states.checkpoint())
            checkpointed_at = n
    assert checkpointed_at < crash_after  # batches stored since the last checkpoint
    # A crash: a new process over the table, from the last checkpoint's messages on.
    restarted = DeviceStates(table)
    for batch in batches[checkpointed_at:]:
        plan = _plan(batch, fleet, restarted, trained_models)
        restarted.moved(plan.states)
        plans.append(plan)
    replayed = _scores(plans)
    # Scores of the batches processed twice are the same both times.
    assert (
        replayed.duplicated(["device_id", "ts", "risk"]).sum()
        == replayed.duplicated(["device_id", "ts"]).sum()
        > 0
    )
    once = replayed.drop_duplicates(["device_id", "ts"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(once, uninterrupted)


def test_a_spec_change_between_checkpoints_keeps_the_live_offsets(fleet, trained_models):
    device = fleet.devices[4]
    metrics = _mid_metrics(device.asset_type)
    states = DeviceStates({})
    part = Partition()
    first = [_reading(device, NOW - timedelta(minutes=m), metrics) for m in (10, 5)]
    plan = _plan(part.messages([(b"k", v) for v in first]), fleet, states, trained_models)
    states.moved(plan.states)  # not written: the table knows nothing of the device
    other = FeatureSpec(metrics=("x",))
    key = device.device_id.encode()
    state = states.load(key, other, "v-other", device.asset_type)
    assert state.features.spec == other and state.features.to_dict()["n"] == 0
    assert state.last_ts == NOW - timedelta(minutes=5)
    assert state.last_offset == plan.states[key].last_offset


def _plan(
    messages, fleet, states, champion, challenger=None, explain=None, scored_elsewhere=frozenset()
):
    return plan_readings(
        messages,
        lookup=_directory(fleet),
        limits=LIMITS,
        now=NOW,
        states=states,
        champion=champion,
        challenger=challenger,
        explain=explain or ExplainPolicy(timedelta(0)),
        scored_elsewhere=scored_elsewhere,
    )
