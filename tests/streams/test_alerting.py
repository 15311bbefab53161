from datetime import UTC, datetime, timedelta

from streams.alerting import AlertState, Hysteresis, step

T0 = datetime(2026, 11, 24, tzinfo=UTC)
RULE = Hysteresis(open_after=3, close_after=2)


def feed(state, risks):
    out = []
    for i, risk in enumerate(risks):
        t = step(
            state,
            asset_id="a",
            device_id="d",
            ts=T0 + timedelta(seconds=i),
            risk=risk,
            open_at=0.8,
            close_at=0.5,
            rule=RULE,
        )
        out.append(t.kind if t else None)
    return out


def test_opens_only_after_k_consecutive_high_scores():
    state = AlertState()
    assert feed(state, [0.9, 0.9, 0.1, 0.9, 0.9, 0.9]) == [None] * 5 + ["open"]
    assert state.alert_id is not None


def test_does_not_flap_between_thresholds():
    state = AlertState()
    kinds = feed(state, [0.9, 0.9, 0.9, 0.6, 0.85, 0.6, 0.7, 0.6])
    assert kinds.count("open") == 1 and "close" not in kinds


def test_closes_after_m_low_scores_and_can_reopen():
    state = AlertState()
    kinds = feed(state, [0.9, 0.9, 0.9, 0.4, 0.4, 0.9, 0.9, 0.9])
    assert kinds == [None, None, "open", None, "close", None, None, "open"]


def test_state_round_trips():
    state = AlertState()
    feed(state, [0.9, 0.9])
    assert AlertState.from_dict(state.to_dict()) == state
