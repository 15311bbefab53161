"""Each device's state for a batch, backed by the worker's ``device-state`` table."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from models.feature_spec import FeatureSpec
from models.features import DeviceFeatureState

from .health_book import HealthBook
from .state import DeviceState, StateCache, decode_offsets, decode_state, encode_state
from .state import spec_fingerprint as _fingerprint

log = logging.getLogger("citywatch.worker")


class DeviceStates:
    """Each device's state for a batch: the live object when the table still holds our
    last write (or the object moved on since, not yet checkpointed), else decoded from
    the table; written back at checkpoints (streams.checkpoints).

    ``table`` is the Faust table ``device-state`` in the worker and a dict in tests.
    """

    def __init__(self, table: MutableMapping[bytes, Any]) -> None:
        self.table = table
        self.cache: StateCache[DeviceState] = StateCache()
        # Live objects moved on since their last write: the table is behind them.
        self._dirty: dict[bytes, DeviceState] = {}
        # Health baselines live in the same table values (one changelog message per device).
        self.health = HealthBook(table)
        self._spec_changes_logged: set[tuple[str, str]] = set()

    def load(self, key: bytes, spec: FeatureSpec, model_version: str, asset_type: str):
        state = self._dirty.get(key)
        if state is None:
            saved = self.table.get(key)
            state = self.cache.get(key, saved)
            if state is None:
                if saved is None:
                    return DeviceState(-1, None, DeviceFeatureState(spec))
                restored = decode_state(saved, spec, _fingerprint(spec))
                if restored is not None:
                    return restored
                # The model's features changed: offsets stay, features start afresh.
                self._spec_changed(model_version, asset_type)
                marks = decode_offsets(saved)
                return DeviceState(
                    marks.last_offset,
                    marks.last_ts,
                    DeviceFeatureState(spec),
                    marks.last_partition,
                    marks.reset_ts,
                    False,  # fresh features: nothing left to reset
                )
        if state.features.spec == spec:
            return state
        self._spec_changed(model_version, asset_type)
        return DeviceState(
            state.last_offset,
            state.last_ts,
            DeviceFeatureState(spec),
            state.last_partition,
            state.reset_ts,
            False,
        )

    def _spec_changed(self, model_version: str, asset_type: str) -> None:
        if (model_version, asset_type) not in self._spec_changes_logged:
            self._spec_changes_logged.add((model_version, asset_type))
            log.info(
                "model %s computes other %s features; devices start fresh feature state",
                model_version,
                asset_type,
            )

    def moved(self, states: dict[bytes, DeviceState]) -> None:
        """A batch that moved these states is stored: keep them live until the checkpoint."""
        self._dirty.update(states)

    def checkpoint(self) -> dict[bytes, bytes]:
        """Pack every state moved since the last checkpoint (then :meth:`write` them)."""
        packed = self.pack(self._dirty)
        self._dirty = {}
        return packed

    def pack(self, states: dict[bytes, DeviceState]) -> dict[bytes, bytes]:
        """The table values of ``states`` as they are now (features, offsets and health)."""
        packed = {}
        for key, state in states.items():
            value = self.health.pack(key, encode_state(state, _fingerprint(state.features.spec)))
            packed[key] = value
            self.cache.put(key, value, state)
        return packed

    def write(self, packed: dict[bytes, bytes]) -> None:
        """Move the table forward: only once the batch these values include is stored."""
        for key, value in packed.items():
            self.table[key] = value

    def save(self, states: dict[bytes, DeviceState]) -> None:
        """:meth:`pack` then :meth:`write`, for a caller with nothing to overlap."""
        self.write(self.pack(states))

    def forget_live_objects(self) -> None:
        """After a failed batch or a rebalance: the live objects may be ahead of the
        table (or behind another worker's writes); read the table again."""
        self.cache.clear()
        self._dirty = {}
        self.health.abort()
