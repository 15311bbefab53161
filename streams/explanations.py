"""Which high scores the worker explains (TreeSHAP), and how often per device."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np

from .records import Reading


class ExplainPolicy:
    """Which high scores get a TreeSHAP explanation.

    Explaining costs about seven times a score, and readers (the asset dashboard,
    the inbox) show a device's latest explanation only. So a device's first high
    score after a low one is always explained, then at most once per
    ``interval`` of reading time while it stays high. Remembered in memory only:
    after a restart a device's next high score is explained again.
    """

    def __init__(self, interval: timedelta) -> None:
        self.interval = interval
        self._last: dict[str, datetime] = {}  # device -> last explained reading time

    def choose(self, readings: Sequence[Reading], high: np.ndarray) -> list[int]:
        """Indices of the rows to explain; ``high`` marks rows at or above threshold."""
        if not self.interval:
            return np.flatnonzero(high).tolist()
        chosen = []
        last = self._last
        for i, is_high in enumerate(high.tolist()):
            device_id = readings[i].device_id
            if not is_high:
                last.pop(device_id, None)  # the next high score starts a new episode
                continue
            seen = last.get(device_id)
            ts = readings[i].ts
            if seen is None or ts - seen >= self.interval:
                last[device_id] = ts
                chosen.append(i)
        return chosen
