"""A district's leak detection, step by step: the pure part of the worker's leak path.

Dataflow (wired in streams.leak_agent)::

    readings (keyed by device) -> the scoring agent validates and stores them
      -> forward_value: stored readings of network sensor types, re-keyed by
         district asset_id onto "network-readings" (the group_by)
      -> read_forwarded: the reading, or a dead letter's reason
      -> DistrictLeaks.add: when a later 30-min step starts, the finished step goes
         through networks.detector.ResidualLeakDetector (the benchmark's code and
         configuration), then result_rows:
      -> scores table + scores topic (asset = district, risk = statistic / (2·threshold))
         -> the same hysteresis, alerts, routing and crew inbox as every asset
      -> leak_candidates table: top candidates with map coordinates while the
         statistic is above threshold

:meth:`DistrictLeaks.to_state` and :meth:`DistrictLeaks.restore` carry the
whole district (detector, partial steps, counters) through the ``leak-state``
table (streams.leak_state), so a restarted worker carries on where it was.

Supported layout: a district metered on every link where water enters its
network, with every tank's level and pressure sensors on some or all junctions
(``citywatch networks register``; ``--pressure-nodes`` for a subset). Other
layouts (a district inside a larger network) are logged and skipped.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.records import Score
from core.wire import Rejection
from networks.assets import map_placer
from networks.detector import DetectorConfig, ResidualLeakDetector, state_fingerprint
from networks.hydraulics import STEP_S, load_network, source_links
from networks.leakdb_bench import chosen_for
from networks.model import network_model

log = logging.getLogger(__name__)

NETWORK_TYPES = ("network_pressure", "network_flow", "network_level")
MODEL_VERSION = "leak-residual-v1"
TOP_CANDIDATES = 5


@dataclass(slots=True)
class StepResult:
    ts: datetime
    statistic: float
    alarm: bool
    risk: float
    candidates: list[tuple[str, float, float | None, float | None, float, float]]


@dataclass
class DistrictLeaks:
    """One district: assembles each 30-minute step from its sensors and runs the detector."""

    asset_id: str
    junctions: tuple[str, ...]
    pressure_device: dict[str, int]  # device -> junction column
    inlet_sign: dict[str, int]  # flow device -> +1/-1 towards the district
    inlet_device: str
    level_devices: tuple[str, ...]  # in the model's tank order
    coords: dict[str, tuple[float | None, float | None, float, float]]  # node -> lat, lon, x, y
    detector: ResidualLeakDetector
    fingerprint: str = ""  # of the model and configuration: a saved state must match it
    # Steps a step waits for a sensor whose source has gone silent (a dead sensor, a
    # stalled partition). A source that has moved on never sends the step: see add().
    lateness: int = 7 * 48
    slack: int = 2  # steps a source may run ahead of a reading it still sends
    done_ts: datetime | None = None  # the last step decided
    pending: dict[datetime, dict[str, float]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # device -> the source it came by
    heard: dict[str, datetime] = field(default_factory=dict)  # source -> its latest step
    incomplete: int = 0
    late: int = 0  # readings of a step already decided (late, or replayed after a restart)
    repeated: int = 0  # a second reading of a sensor for a step still being assembled

    @property
    def step_ts(self) -> datetime | None:
        return max(self.pending) if self.pending else self.done_ts

    @property
    def devices(self) -> frozenset[str]:
        """The sensors a step needs."""
        return frozenset([*self.pressure_device, *self.inlet_sign, *self.level_devices])

    def add(
        self, device_id: str, ts: datetime, value: float, source: int | None = None
    ) -> list[StepResult]:
        """Take one reading; return the results of the steps it lets finish, in order.

        Readings reach the district from several partitions of the readings topic
        (``source``; each in its own order, but one may run days behind another
        after a restart), so steps interleave. A step is decided when all its
        sensors are in, or when the source of every missing one has moved on past
        it (that reading was lost), or after ``lateness`` steps (a silent source);
        an incomplete step is counted and skipped. Idempotent per (device, step):
        the first reading counts, so a reading delivered again changes nothing.
        """
        step = datetime.fromtimestamp(ts.timestamp() // STEP_S * STEP_S, UTC)
        origin = self.sources[device_id] = f"p{source}" if source is not None else device_id
        if origin not in self.heard or self.heard[origin] < step:
            self.heard[origin] = step
        if self.done_ts is not None and step <= self.done_ts:
            self.late += 1  # a step already decided: too late to count
            return []
        values = self.pending.setdefault(step, {})
        if device_id in values:
            self.repeated += 1
            return []
        values[device_id] = value
        needed = self.devices
        results = []
        while self.pending:
            first = min(self.pending)
            if not self._decidable(first, needed):
                break
            values = self.pending.pop(first)
            self.done_ts = first
            result = self._finish(first, values, needed)
            if result is not None:
                results.append(result)
        return results

    def _decidable(self, step: datetime, needed: frozenset[str]) -> bool:
        missing = needed - self.pending[step].keys()
        if not missing:
            return True
        if (max(self.pending) - step).total_seconds() // STEP_S >= self.lateness:
            return True
        passed = step.timestamp() + self.slack * STEP_S
        return all(
            d in self.sources and self.heard[self.sources[d]].timestamp() > passed for d in missing
        )

    def to_state(self) -> dict[str, Any]:
        """The district's whole state (detector, partial steps, counters); see from_state."""
        return {
            "fingerprint": self.fingerprint,
            "done_ts": None if self.done_ts is None else self.done_ts.isoformat(),
            "pending": {ts.isoformat(): dict(v) for ts, v in self.pending.items()},
            "sources": dict(self.sources),
            "heard": {source: ts.isoformat() for source, ts in self.heard.items()},
            "incomplete": self.incomplete,
            "late": self.late,
            "repeated": self.repeated,
            "detector": self.detector.to_state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`to_state`; ValueError (nothing changed) if the state
        belongs to another model or configuration or is malformed."""
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError("the saved state is of another model or configuration")
        done = state["done_ts"]
        pending = {
            datetime.fromisoformat(ts): {str(d): float(v) for d, v in values.items()}
            for ts, values in state["pending"].items()
        }
        sources = {str(d): str(s) for d, s in state["sources"].items()}
        heard = {str(s): datetime.fromisoformat(ts) for s, ts in state["heard"].items()}
        self.detector.restore(state["detector"])
        self.sources, self.heard = sources, heard
        self.done_ts = None if done is None else datetime.fromisoformat(done)
        self.pending = pending
        self.incomplete, self.late = int(state["incomplete"]), int(state["late"])
        self.repeated = int(state["repeated"])

    def _finish(self, ts: datetime, values: dict[str, float], needed: set) -> StepResult | None:
        if not needed <= set(values):
            self.incomplete += 1
            return None
        pressure = np.empty(len(self.junctions))
        for device, col in self.pressure_device.items():
            pressure[col] = values[device]
        inflow = sum(sign * values[d] for d, sign in self.inlet_sign.items())
        levels = np.array([values[d] for d in self.level_devices])
        stat = self.detector.update(pressure, float(inflow), levels)
        threshold = self.detector.config.threshold
        risk = 0.0 if np.isnan(stat) else float(min(max(0.5 * stat / threshold, 0.0), 1.0))
        candidates = []
        if not np.isnan(stat) and (stat >= threshold or self.detector.alarm):
            for node, score in self.detector.ranking()[:TOP_CANDIDATES]:
                lat, lon, x, y = self.coords[node]
                candidates.append((node, score, lat, lon, x, y))
        return StepResult(ts, stat, self.detector.alarm, risk, candidates)


def build_district(
    asset_id: str, layout: dict[str, Any], config: DetectorConfig | None = None
) -> DistrictLeaks | None:
    """The district's detector from its stored layout; None (logged) if unsupported."""
    inp = Path(layout["inp_file"])
    if not inp.is_file():
        log.warning("leaks: %s: model %s not found; district skipped", asset_id, inp)
        return None
    model = network_model(inp)
    wn = load_network(inp)
    signs = dict(source_links(wn))
    metered, inlet_sign, level_of = {}, {}, {}
    for device, kind, element, metric, _lat, _lon in layout["sensors"]:
        if kind == "node" and metric == "pressure" and element in model.junctions:
            metered[element] = device
        elif kind == "link" and metric == "flow":
            inlet_sign[device] = signs.get(element, 1)
        elif kind == "node" and metric == "level":
            level_of[element] = device
    inlets = {e for d, k, e, m, *_ in layout["sensors"] if k == "link" and m == "flow"}
    missing_tanks = [t for t in model.tank_names if t not in level_of]
    # The model predicts from the whole network's inflow: the district must be metered
    # where water enters the network, and see every tank's level.
    if not metered or inlets != set(signs) or missing_tanks:
        log.warning(
            "leaks: %s: %d pressure sensors, inlets metered %s of %s, tanks without level %s;"
            " the detector needs a pressure sensor, every inlet and every tank; skipped",
            asset_id,
            len(metered),
            sorted(inlets),
            sorted(signs),
            missing_tanks,
        )
        return None
    nodes = [j for j in model.junctions if j in metered]
    if len(nodes) < len(model.junctions):
        # Pressure at some junctions only: the detector sees the model through them,
        # and still ranks every junction.
        model = model.metered(nodes)
    place = map_placer(wn, layout.get("origin"), layout.get("metres_per_unit") or 1.0)
    coords = {}
    for node in model.candidates:
        x, y = (float(c) for c in wn.get_node(node).coordinates)
        coords[node] = (*place(x, y), x, y)
    # The configuration fixed for the network on its benchmark scenarios 1-500.
    config = config or chosen_for(str(layout.get("network_id", "")))
    return DistrictLeaks(
        asset_id=asset_id,
        junctions=model.junctions,
        pressure_device={metered[node]: col for col, node in enumerate(nodes)},
        inlet_sign=inlet_sign,
        inlet_device=sorted(inlet_sign)[0],
        level_devices=tuple(level_of[t] for t in model.tank_names),
        coords=coords,
        detector=ResidualLeakDetector(model, config),
        fingerprint=state_fingerprint(model, config),
    )


def forward_value(row, partition: int | None = None) -> bytes:
    """The network-readings value of a stored reading: device, time, its one value and
    the readings partition it came from (the district's steps wait for each source)."""
    value = next(iter(row.metrics.values()))
    data = {"a": row.asset_id, "d": row.device_id, "t": row.ts.isoformat(), "v": value}
    if partition is not None:
        data["p"] = partition
    return json.dumps(data, separators=(",", ":")).encode()


#: A forwarded reading is ~100 bytes; anything much bigger is not one.
MAX_FORWARDED_BYTES = 1024
MAX_ID_CHARS = 128


@dataclass(frozen=True, slots=True)
class Forwarded:
    """One network-readings value: a stored reading of a district's sensor."""

    asset_id: str
    device_id: str
    ts: datetime
    value: float
    partition: int | None = None


def read_forwarded(raw: bytes | None, key: bytes | None = None) -> Forwarded | Rejection:
    """The reading in a network-readings message, or why it is not one.

    Reasons are the worker's vocabulary (streams.validation.REASONS); ``key``, when
    given, must be the district the value names: the key decided the partition,
    and with it where the district's state lives.
    """
    if not raw:
        return Rejection("schema", "empty message")
    if len(raw) > MAX_FORWARDED_BYTES:
        return Rejection("too_large", f"{len(raw)} bytes; a forwarded reading is ~100")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return Rejection("malformed_json", str(exc)[:200])
    if not isinstance(data, dict):
        return Rejection("schema", f"not an object: {type(data).__name__}")
    asset, device, ts, value = (data.get(k) for k in ("a", "d", "t", "v"))
    if not (isinstance(asset, str) and isinstance(device, str) and isinstance(ts, str)):
        return Rejection("schema", "fields a, d and t must be strings")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Rejection("schema", "field v must be a number", device[:MAX_ID_CHARS])
    if max(len(asset), len(device), len(ts)) > MAX_ID_CHARS:
        return Rejection("too_large", "an id or the time is over 128 characters")
    partition = data.get("p")
    if partition is not None and (
        isinstance(partition, bool) or not isinstance(partition, int) or not 0 <= partition < 2**15
    ):
        return Rejection("schema", "field p must be a partition number", device)
    try:
        when = datetime.fromisoformat(ts)
    except ValueError:
        return Rejection("schema", f"t is not ISO 8601: {ts!r}", device)
    if when.tzinfo is None:
        return Rejection("schema", "t has no timezone", device)
    try:
        number = float(value)
    except OverflowError:
        return Rejection("out_of_range", "v is too big for a float", device)
    if not math.isfinite(number):
        return Rejection("nan_value", f"v is {number}", device)
    if key is not None and key != asset.encode():
        return Rejection("asset_mismatch", f"keyed {key[:MAX_ID_CHARS]!r}, names {asset!r}", device)
    return Forwarded(asset, device, when, number, partition)


def result_rows(district: DistrictLeaks, result: StepResult):
    """The score row and candidate rows of one finished step."""
    score = Score(
        ts=result.ts,
        device_id=district.inlet_device,
        asset_id=district.asset_id,
        asset_type="network_flow",
        model_version=MODEL_VERSION,
        risk=result.risk,
        threshold=0.5,
    )
    candidates = [
        (result.ts, district.asset_id, rank, node, score_, lat, lon, x, y)
        for rank, (node, score_, lat, lon, x, y) in enumerate(result.candidates, start=1)
    ]
    return score, candidates
