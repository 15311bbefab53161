"""Alert hysteresis: open after k high scores, close after m low scores.

Pure state machine, one :class:`AlertState` per asset, kept in a Faust table as
a dict. Two thresholds (open above ``open_at``, close below ``close_at``) and
two streak lengths keep alerts from flapping around a single threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime


@dataclass(frozen=True)
class Hysteresis:
    open_after: int = 3
    close_after: int = 5
    close_ratio: float = 0.6  # close threshold = open threshold x ratio, unless fixed
    open_at: float | None = None  # None: the model's threshold
    close_at: float | None = None

    def thresholds(self, model_threshold: float) -> tuple[float, float]:
        open_at = self.open_at if self.open_at is not None else model_threshold
        close_at = self.close_at if self.close_at is not None else open_at * self.close_ratio
        return open_at, min(close_at, open_at)


@dataclass
class AlertState:
    """Per-asset hysteresis state; ``alert_id`` is set while an alert is open."""

    high_streak: int = 0
    low_streak: int = 0
    alert_id: str | None = None
    opened_at: str | None = None
    device_id: str | None = None
    peak_risk: float = 0.0
    last_ts: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> AlertState:
        return cls(**data) if data else cls()


@dataclass(frozen=True)
class Transition:
    kind: str  # "open" or "close"
    alert_id: str
    opened_at: datetime
    closed_at: datetime | None
    peak_risk: float


def step(
    state: AlertState,
    *,
    asset_id: str,
    device_id: str,
    ts: datetime,
    risk: float,
    open_at: float,
    close_at: float,
    rule: Hysteresis,
) -> Transition | None:
    """Feed one score; return the transition it causes, if any. Mutates ``state``."""
    state.last_ts = ts.isoformat()
    if state.alert_id is None:
        state.high_streak = state.high_streak + 1 if risk >= open_at else 0
        if state.high_streak >= rule.open_after:
            state.alert_id = f"{asset_id}:{ts.isoformat()}"
            state.opened_at = ts.isoformat()
            state.device_id = device_id
            state.peak_risk = risk
            state.high_streak = state.low_streak = 0
            return Transition("open", state.alert_id, ts, None, risk)
        return None
    state.peak_risk = max(state.peak_risk, risk)
    state.low_streak = state.low_streak + 1 if risk < close_at else 0
    if state.low_streak >= rule.close_after:
        transition = Transition(
            "close",
            state.alert_id,
            datetime.fromisoformat(state.opened_at or ts.isoformat()),
            ts,
            state.peak_risk,
        )
        state.alert_id = state.opened_at = state.device_id = None
        state.peak_risk = 0.0
        state.high_streak = state.low_streak = 0
        return transition
    return None
