"""Bad input on purpose: corrupt a fraction of simulated readings (``--bad-rate``).

Each bad message carries the dead-letter reason the worker's validator
(``streams.validation``) is expected to give it, so a run can check that
every injected fault was caught under the right name and nothing else was.

Except for ``duplicate``, a bad message *replaces* the valid reading: that
reading is lost as data and counted once, as a dead letter.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import numpy as np

from core.assets import ASSET_TYPES

from .sim_records import SimReading

__all__ = ["ALL_KINDS", "FaultInjector"]

#: Every fault kind; each name is also the dead-letter reason it must produce.
ALL_KINDS: tuple[str, ...] = (
    "malformed_json",
    "schema",
    "nan_value",
    "out_of_range",
    "unknown_device",
    "clock_skew",
    "duplicate",
)

# The simulator's DevEUIs all start with 70b3d57ed, so these are never in its fleet.
_UNKNOWN_PREFIX = "ffff"


class FaultInjector:
    """Replace (or, for duplicates, repeat) a random fraction of messages with bad ones.

    Parameters
    ----------
    rate : float
        Probability in [0, 1] that a given reading is corrupted.
    seed : int, default=0
        Seed of the injector's own random generator (independent of the
        simulator's, so turning faults on does not change the readings).
    kinds : iterable of str, default=ALL_KINDS
        Fault kinds to draw from, uniformly.

    Examples
    --------
    >>> inj = FaultInjector(rate=1.0, kinds=("duplicate",))
    >>> inj.maybe_corrupt(b"{}", reading)  # doctest: +SKIP
    [(b'{}', None), (b'{}', 'duplicate')]
    """

    def __init__(self, rate: float, seed: int = 0, kinds: Iterable[str] = ALL_KINDS) -> None:
        kinds = tuple(kinds)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        unknown = sorted(set(kinds) - set(ALL_KINDS))
        if unknown or not kinds:
            raise ValueError(f"kinds must be a non-empty subset of {ALL_KINDS}, got {kinds}")
        self.rate = rate
        self.seed = seed
        self.kinds = kinds
        self._rng = np.random.default_rng(seed)
        self._make = {
            "malformed_json": self._malformed_json,
            "schema": self._schema,
            "nan_value": self._nan_value,
            "out_of_range": self._out_of_range,
            "unknown_device": self._unknown_device,
            "clock_skew": self._clock_skew,
        }

    def maybe_corrupt(self, raw: bytes, reading: SimReading) -> list[tuple[bytes, str | None]]:
        """Return the messages to send for one reading, each with its expected reason.

        Parameters
        ----------
        raw : bytes
            The valid encoding of ``reading`` (see :func:`ingest.sim_records.reading_bytes`).
        reading : SimReading
            The reading ``raw`` encodes.

        Returns
        -------
        list of (bytes, str or None)
            ``[(raw, None)]`` most of the time. With probability ``rate``
            either ``[(bad, kind)]`` or, for ``duplicate``,
            ``[(raw, None), (raw, "duplicate")]``.
        """
        if self.rate <= 0.0 or self._rng.random() >= self.rate:
            return [(raw, None)]
        kind = self.kinds[int(self._rng.integers(len(self.kinds)))]
        if kind == "duplicate":
            return [(raw, None), (raw, "duplicate")]
        return [(self._make[kind](raw, reading), kind)]

    # Each maker returns bytes the validator must refuse for exactly that reason.

    def _malformed_json(self, raw: bytes, reading: SimReading) -> bytes:
        rng = self._rng
        if rng.random() < 0.5:
            # Cut short, as by a lost packet: any proper prefix of a JSON object is invalid.
            return raw[: int(rng.integers(1, len(raw)))]
        # Garbled in transit: a burst of bytes that are not valid UTF-8 (0xf8-0xff never are).
        at = int(rng.integers(0, len(raw)))
        burst = bytes(rng.integers(0xF8, 0x100, int(rng.integers(1, 5))).tolist())
        bad = raw[:at] + burst + raw[at + len(burst) :]
        return bad if _is_invalid_json(bad) else raw[:-1]

    def _schema(self, raw: bytes, reading: SimReading) -> bytes:
        doc = json.loads(raw)
        variant = int(self._rng.integers(6))
        if variant == 0:
            del doc[("device_id", "ts", "metrics")[int(self._rng.integers(3))]]
        elif variant == 1:
            doc["metrics"] = list(doc["metrics"].values())  # an array where an object belongs
        elif variant == 2:
            doc["device_id"] = int(doc["device_id"], 16)  # a number where a string belongs
        elif variant == 3:
            doc["ts"] = "yesterday"  # not ISO 8601
        elif variant == 4:
            doc["metrics"] = {}  # a reading with nothing in it
        else:
            return _dumps([doc])  # a JSON array, not an object
        return _dumps(doc)

    def _nan_value(self, raw: bytes, reading: SimReading) -> bytes:
        doc = json.loads(raw)
        doc["metrics"][self._pick_metric(doc)] = math.nan  # serialised as the NaN token
        return _dumps(doc)

    def _out_of_range(self, raw: bytes, reading: SimReading) -> bytes:
        doc = json.loads(raw)
        name = self._pick_metric(doc)
        spec = ASSET_TYPES[reading.device.asset_type].metric(name)
        assert spec is not None
        span = spec.high - spec.low
        # Ten spans beyond either end: a wrong scale factor or a stuck ADC, never physics.
        value = spec.high + 10 * span if self._rng.random() < 0.5 else spec.low - 10 * span
        doc["metrics"][name] = value
        return _dumps(doc)

    def _unknown_device(self, raw: bytes, reading: SimReading) -> bytes:
        doc = json.loads(raw)
        doc["device_id"] = _UNKNOWN_PREFIX + "".join(
            f"{b:02x}" for b in self._rng.integers(0, 256, 6).tolist()
        )
        return _dumps(doc)

    def _clock_skew(self, raw: bytes, reading: SimReading) -> bytes:
        doc = json.loads(raw)
        # A node whose RTC lost its sync: at least a day ahead, up to a month.
        ahead = timedelta(days=1) + timedelta(seconds=float(self._rng.uniform(0, 29 * 86400)))
        doc["ts"] = (reading.ts + ahead).isoformat()
        return _dumps(doc)

    def _pick_metric(self, doc: dict[str, Any]) -> str:
        names = sorted(doc["metrics"])
        return names[int(self._rng.integers(len(names)))]


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=True).encode()


def _is_invalid_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return True
    return False
