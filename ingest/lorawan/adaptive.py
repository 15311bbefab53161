"""Adaptive sampling: a sensor reports more often while its asset is at risk.

:class:`AdaptiveSampler` turns the worker's output (risk scores, alert
transitions) into reporting-interval commands, one device at a time:

* a score at or above ``risk_level``, or an alert opening, asks the sensor
  for ``fast_interval_s``;
* the alert closing (or, with no alert open, the risk falling below
  ``release_level``) returns it to ``normal_interval_s``.

It does no I/O: the caller encodes, sends and records each :class:`Decision`,
and reports a failed send back (:meth:`AdaptiveSampler.failed`), so the wish is
retried. Time is the events' own time (score and alert timestamps), which is
wall time in production and simulated time in the demo.

Duty cycle. A downlink costs the gateway airtime, and in EU868 a gateway may
transmit at most 1 % of the time on the RX1 sub-bands (10 % on RX2's
869.525 MHz); The Things Network's fair-use policy allows 10 downlinks per
device per day. :class:`DutyCycleLimiter` applies, per device, at most
``max_per_day`` downlinks in any 24 h and at least ``min_gap_s`` between two:
120 s is 100 times the ~1.2 s airtime of a 3-byte downlink at SF12/125 kHz,
so even the slowest data rate stays within 1 %. A command the limiter holds
back is recorded once as refused and sent as soon as the limit allows; only
the newest wish per device is kept (an interval that was wanted and then
withdrawn in between is never sent).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

__all__ = ["AdaptiveSampler", "Decision", "DutyCycleLimiter", "SamplingPolicy"]

DAY = timedelta(days=1)


@dataclass(frozen=True)
class SamplingPolicy:
    """The controller's settings (``citywatch downlinks run`` options).

    Parameters
    ----------
    risk_level : float
        Risk at or above which the sensor is asked to report faster.
    release_level : float, optional
        With no alert open, risk below this returns the normal interval;
        default ``risk_level - 0.1`` (a band, so the interval does not flap).
    fast_interval_s, normal_interval_s : int
        Reporting intervals while at risk and otherwise (seconds).
    max_per_day : int
        Downlinks per device in any 24 hours.
    min_gap_s : float
        Least time between two downlinks to one device.
    """

    risk_level: float = 0.5
    release_level: float | None = None
    fast_interval_s: int = 300
    normal_interval_s: int = 900
    max_per_day: int = 10
    min_gap_s: float = 120.0

    @property
    def release(self) -> float:
        return self.risk_level - 0.1 if self.release_level is None else self.release_level


class DutyCycleLimiter:
    """At most ``max_per_day`` downlinks per device in any 24 h, ``min_gap_s`` apart."""

    def __init__(self, max_per_day: int = 10, min_gap_s: float = 120.0) -> None:
        self.max_per_day = max_per_day
        self.min_gap = timedelta(seconds=min_gap_s)
        self._sent: dict[str, deque[datetime]] = {}

    def check(self, device_id: str, at: datetime) -> str | None:
        """None when a downlink may go now, else why not."""
        sent = self._sent.get(device_id)
        if not sent:
            return None
        while sent and sent[0] <= at - DAY:
            sent.popleft()
        if sent and at - sent[-1] < self.min_gap:
            return f"duty cycle: last downlink {(at - sent[-1]).total_seconds():.0f} s ago"
        if len(sent) >= self.max_per_day:
            return f"duty cycle: {len(sent)} downlinks in the last 24 h"
        return None

    def record(self, device_id: str, at: datetime) -> None:
        self._sent.setdefault(device_id, deque()).append(at)

    def forget(self, device_id: str, at: datetime) -> None:
        """Undo :meth:`record` for a send that failed."""
        sent = self._sent.get(device_id)
        if sent and at in sent:
            sent.remove(at)


@dataclass(frozen=True)
class Decision:
    """A command to send (``refusal`` None) or one held back (``refusal`` says why)."""

    device_id: str
    asset_id: str
    command: str
    args: dict[str, int]
    reason: str
    at: datetime
    alert_id: str | None = None
    refusal: str | None = None


@dataclass
class _Device:
    asset_id: str
    told: int | None = None  # the interval the sensor was last sent (None: never)
    wanted: int | None = None
    reason: str = ""
    alert_id: str | None = None
    alert_open: bool = False
    refused: str | None = None  # the refusal recorded for the current wish
    history: list[tuple[datetime, int]] = field(default_factory=list)


class AdaptiveSampler:
    """Decide reporting-interval commands from scores and alert transitions.

    Parameters
    ----------
    policy : SamplingPolicy
    can_encode : callable
        ``can_encode(device_id) -> bool``: whether the device's profile has a
        downlink encoder. A device without one is never sent anything (its
        wish is recorded once as refused).
    limiter : DutyCycleLimiter, optional
    """

    def __init__(
        self,
        policy: SamplingPolicy,
        can_encode: Callable[[str], bool],
        limiter: DutyCycleLimiter | None = None,
    ) -> None:
        self.policy = policy
        self.can_encode = can_encode
        self.limiter = limiter or DutyCycleLimiter(policy.max_per_day, policy.min_gap_s)
        self.devices: dict[str, _Device] = {}

    def _device(self, device_id: str, asset_id: str) -> _Device:
        state = self.devices.get(device_id)
        if state is None:
            state = self.devices[device_id] = _Device(asset_id)
        return state

    def on_score(self, device_id: str, asset_id: str, risk: float, at: datetime) -> list[Decision]:
        """A risk score of the device's asset."""
        state = self._device(device_id, asset_id)
        p = self.policy
        if risk >= p.risk_level:
            return self._want(
                device_id, state, p.fast_interval_s, f"risk {risk:.2f} ≥ {p.risk_level:.2f}", at
            )
        if not state.alert_open and risk < p.release and state.wanted == p.fast_interval_s:
            reason = f"risk {risk:.2f} < {p.release:.2f}, no alert open"
            return self._want(device_id, state, p.normal_interval_s, reason, at)
        return self._retry(device_id, state, at)

    def on_alert(
        self,
        transition: str,
        alert_id: str,
        device_id: str,
        asset_id: str,
        risk: float,
        at: datetime,
    ) -> list[Decision]:
        """An alert opened (``open``) or closed (``close``) on the device's asset."""
        state = self._device(device_id, asset_id)
        state.alert_id = alert_id
        if transition == "open":
            state.alert_open = True
            reason = f"alert {alert_id} opened at risk {risk:.2f}"
            return self._want(device_id, state, self.policy.fast_interval_s, reason, at)
        state.alert_open = False
        if state.wanted != self.policy.fast_interval_s:
            return []
        reason = f"alert {alert_id} closed"
        return self._want(device_id, state, self.policy.normal_interval_s, reason, at)

    def failed(self, decision: Decision) -> None:
        """The send of ``decision`` failed: forget it was told, so it is retried."""
        state = self.devices.get(decision.device_id)
        if state is not None and state.history and state.history[-1][0] == decision.at:
            state.history.pop()
            state.told = state.history[-1][1] if state.history else None
        self.limiter.forget(decision.device_id, decision.at)

    def _want(self, device_id: str, state: _Device, interval: int, reason: str, at: datetime):
        if state.wanted != interval:
            state.wanted, state.reason, state.refused = interval, reason, None
        return self._retry(device_id, state, at)

    def _retry(self, device_id: str, state: _Device, at: datetime) -> list[Decision]:
        wanted = state.wanted
        # Nothing to do, or the sensor was never sped up and is wanted at normal.
        if wanted is None or wanted == state.told:
            return []
        if state.told is None and wanted == self.policy.normal_interval_s:
            return []
        decision = Decision(
            device_id,
            state.asset_id,
            "set_interval",
            {"interval_s": wanted},
            state.reason,
            at,
            alert_id=state.alert_id,
        )
        refusal = None if self.can_encode(device_id) else "no downlink encoder for its profile"
        refusal = refusal or self.limiter.check(device_id, at)
        if refusal is not None:
            if state.refused == refusal.split(":")[0]:
                return []  # recorded once per wish
            state.refused = refusal.split(":")[0]
            return [dataclasses.replace(decision, refusal=refusal)]
        self.limiter.record(device_id, at)
        state.told = wanted
        state.history.append((at, wanted))
        return [decision]
