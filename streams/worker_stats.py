"""The worker's counters: logged and stored in ``worker_stats`` every few seconds."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

log = logging.getLogger("citywatch.worker")


@dataclass
class WorkerStats:
    """Counters the worker logs and stores in ``worker_stats`` periodically."""

    processed: int = 0
    stored: int = 0
    maintenance: int = 0
    scored: int = 0
    unscored: int = 0  # stored, but the champion has no model for the asset type
    deadletters: Counter = field(default_factory=Counter)
    alerts_opened: int = 0
    alerts_closed: int = 0
    batch_ms: list[float] = field(default_factory=list)  # since the last report
    last_offsets: dict = field(default_factory=dict)  # TopicPartition -> offset
    started: float = field(default_factory=time.monotonic)

    def report(self, app: Any, worker_id: str) -> dict[str, Any]:
        """Log one progress line; return the ``worker_stats`` row (batch times reset)."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        durations = np.asarray(self.batch_ms) if self.batch_ms else None
        self.batch_ms = []
        lag = consumer_lag(app, self.last_offsets)
        log.info(
            "processed=%d (%.0f/s) stored=%d maintenance=%d scored=%d unscored=%d"
            " deadletters=%d alerts open/closed=%d/%d lag=%s",
            self.processed,
            self.processed / elapsed,
            self.stored,
            self.maintenance,
            self.scored,
            self.unscored,
            sum(self.deadletters.values()),
            self.alerts_opened,
            self.alerts_closed,
            "?" if lag is None else lag,
        )
        return {
            "ts": datetime.now(UTC),
            "worker_id": worker_id,
            "consumed": self.processed,
            "stored": self.stored,
            "scored": self.scored,
            "deadletters": sum(self.deadletters.values()),
            "consumer_lag": lag,
            "batch_ms_p50": None if durations is None else float(np.percentile(durations, 50)),
            "batch_ms_p99": None if durations is None else float(np.percentile(durations, 99)),
        }


def consumer_lag(app: Any, last_offsets: dict) -> int | None:
    """Readings not yet processed on this worker's partitions (None if unknown)."""
    try:
        total = 0
        for tp, offset in last_offsets.items():
            highwater = app.consumer.highwater(tp)
            if highwater is None:
                return None
            total += max(0, highwater - offset - 1)
        return total
    except Exception:  # lag is diagnostics; never let it break the worker
        return None
