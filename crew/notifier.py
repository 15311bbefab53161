"""The notifier: turns the transition outbox into deliveries, sends them, escalates.

One loop, one thread. It LISTENs on the channel the transitions notify, so a
new transition is picked up within milliseconds of its commit; it also polls
every ``poll_s`` for retries that fall due and for escalations. Work is claimed
with ``FOR UPDATE SKIP LOCKED``, so several notifiers can share the outbox, and
the unique ``(transition_id, channel_id)`` delivery row means one notification
per transition per channel.

A failing delivery is retried with exponential backoff (capped at
``backoff_max_s``) for ``retry_for_s`` after its first failure (default 6 h),
so a Slack or webhook outage of a few hours delays crew notifications but does
not drop them; then it is marked ``failed`` (``failed_at``), which the pipeline
dashboard shows and an engineers' Grafana rule alerts on.

The loop is supervised: any error (not only a database outage) is logged with
its traceback, backed off and retried, and each step of a pass runs on its own
so a bug in escalation cannot stop deliveries. :meth:`Notifier.health` tells a
health endpoint when the last clean pass was.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from kafka.errors import KafkaError

from storage.alerts import outbox

from .channels import ChannelConfig, Channels, DeliveryError
from .repairs import RepairEvents

log = logging.getLogger(__name__)

DEFAULT_RETRY_FOR_S = 6 * 3600.0


@dataclass(frozen=True)
class NotifierConfig:
    poll_s: float = 1.0
    escalation_check_s: float = 5.0
    # Give up on a delivery this long after its first failure.
    retry_for_s: float = DEFAULT_RETRY_FOR_S
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    batch: int = 50
    # Backoff of the loop itself after an unexpected error (doubles up to this).
    error_backoff_max_s: float = 60.0
    # health() reports not alive when no clean pass finished for this long.
    stale_after_s: float = 60.0

    def retry_in(self, attempts_before: int, failing_for_s: float = 0.0) -> float | None:
        """Seconds until the next try after a failure, or None: give up.

        ``failing_for_s`` is how long the delivery has been failing; the last
        try is timed to land on ``retry_for_s``, so the full period is used.
        """
        left = self.retry_for_s - failing_for_s
        if left <= 0:
            return None
        delay = self.backoff_base_s * 2 ** min(attempts_before, 32)
        return min(self.backoff_max_s, delay, left)


class Notifier:
    """Runs :meth:`run_once` whenever woken; :meth:`start` puts it on a thread."""

    def __init__(
        self,
        database_url: str,
        channels: ChannelConfig | None = None,
        config: NotifierConfig | None = None,
        repairs: RepairEvents | None = None,
    ) -> None:
        self._database_url = database_url
        self._repairs = repairs
        self._channels = Channels(channels or ChannelConfig())
        self.config = config or NotifierConfig()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_escalation = 0.0
        # Liveness, read by health(): wall-clock times so operators can read them.
        self.started_at = time.time()
        self.last_pass_at: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.errors = 0
        self._failures = 0  # consecutive loop failures, for the backoff

    # -- one pass -------------------------------------------------------------

    def run_once(self, conn: psycopg.Connection) -> dict[str, int]:
        """Escalate (when due), fan out new transitions, send due deliveries.

        Each step is isolated: an unexpected error is logged and counted and the
        other steps still run. Database outages (``OperationalError``) propagate
        so the loop reconnects.
        """
        counts = {"escalated": 0, "fanned_out": 0, "sent": 0, "failed": 0, "errors": 0}
        now = time.monotonic()
        if now - self._last_escalation >= self.config.escalation_check_s:
            self._last_escalation = now
            self._step("escalation", counts, lambda: len(outbox.escalate_due(conn)), "escalated")
        self._step("fan-out", counts, lambda: self._fan_out(conn), "fanned_out")
        if self._repairs is not None:
            self._step("repairs", counts, lambda: self._publish_repairs(conn), "repairs")
        self._step("deliveries", counts, lambda: self._deliver(conn, counts), None)
        if counts["errors"] == 0:
            self.last_pass_at = time.time()
            self._failures = 0
        return counts

    def _step(
        self, name: str, counts: dict[str, int], fn: Callable[[], int], key: str | None
    ) -> None:
        try:
            n = fn()
        except psycopg.OperationalError:
            raise
        except Exception as exc:
            log.exception("notifier step %s failed; the other steps go on", name)
            self._record_error(f"{name}: {type(exc).__name__}: {exc}")
            counts["errors"] += 1
            return
        if key is not None:
            counts[key] = counts.get(key, 0) + n

    def _fan_out(self, conn: psycopg.Connection) -> int:
        with conn.transaction(), conn.cursor() as cur:
            return outbox.fan_out(cur)

    def _publish_repairs(self, conn: psycopg.Connection) -> int:
        assert self._repairs is not None
        try:
            return self._repairs.publish_pending(conn)
        except KafkaError as exc:  # the labels stay pending; next pass retries
            log.warning("maintenance events not published yet: %s", exc)
            return 0

    def _deliver(self, conn: psycopg.Connection, counts: dict[str, int]) -> int:
        while True:
            with conn.transaction(), conn.cursor() as cur:
                due = outbox.claim_deliveries(cur, self.config.batch)
                for d in due:
                    error, retry_in = self._send(d)
                    self._mark(conn, cur, d, error, retry_in)
                    counts["sent" if error is None else "failed"] += 1
            if len(due) < self.config.batch:
                return 0

    def _mark(
        self,
        conn: psycopg.Connection,
        cur: psycopg.Cursor,
        d: dict[str, Any],
        error: str | None,
        retry_in: float | None,
    ) -> None:
        key = (d["transition_id"], d["channel_id"])
        try:
            with conn.transaction():  # a savepoint: one bad row cannot undo the batch
                outbox.mark_delivery(cur, *key, error=error, retry_in_s=retry_in)
        except psycopg.OperationalError:
            raise
        except Exception as exc:
            log.exception("delivery %s:%s: cannot record its outcome", *key)
            # Give up on it rather than claim it again forever.
            with conn.transaction():
                outbox.mark_delivery(
                    cur,
                    *key,
                    error=f"outcome not recordable: {type(exc).__name__}",
                    retry_in_s=None,
                )

    def _send(self, d: dict[str, Any]) -> tuple[str | None, float | None]:
        failing_for = float(d.get("failing_for_s") or 0.0)
        try:
            self._channels.send(d)
        except DeliveryError as exc:
            retry = None if exc.permanent else self.config.retry_in(d["attempts"], failing_for)
            (log.warning if retry is not None else log.error)(
                "delivery %s:%s (%s) failed, attempt %d: %s; %s",
                d["transition_id"],
                d["channel_id"],
                d["kind"],
                d["attempts"] + 1,
                exc,
                f"retry in {retry:.0f} s" if retry is not None else "giving up",
            )
            return str(exc), retry
        except Exception as exc:  # a bug in one channel must not stop the others
            retry = self.config.retry_in(d["attempts"], failing_for)
            log.exception(
                "delivery %s:%s crashed; %s",
                d["transition_id"],
                d["channel_id"],
                "will retry" if retry is not None else "giving up",
            )
            return f"{type(exc).__name__}: {exc}", retry
        log.info("delivered %s:%s (%s)", d["transition_id"], d["channel_id"], d["kind"])
        return None, None

    # -- the loop -------------------------------------------------------------

    def run(self) -> None:
        """Loop until :meth:`stop`, surviving any error: log, back off, go on."""
        while not self._stop.is_set():
            try:
                self._serve()
            except psycopg.OperationalError as exc:
                log.warning("notifier: database unavailable (%s); retrying", exc)
                self._record_error(f"database unavailable: {exc}")
            except Exception as exc:
                log.exception("notifier loop failed; backing off and carrying on")
                self._record_error(f"{type(exc).__name__}: {exc}")
            else:
                break  # _serve returns only when stopping
            self._failures += 1  # a clean pass resets it (run_once)
            self._stop.wait(min(self.config.error_backoff_max_s, 2.0 ** (self._failures - 1)))
        self._channels.close()
        if self._repairs is not None:
            self._repairs.close()

    def _serve(self) -> None:
        with (
            psycopg.connect(self._database_url, autocommit=True) as listen,
            psycopg.connect(self._database_url, application_name="citywatch-notifier") as work,
        ):
            listen.execute(f"LISTEN {outbox.NOTIFY_CHANNEL}")
            while not self._stop.is_set():
                self.run_once(work)
                self._wait(listen)

    def _record_error(self, message: str) -> None:
        self.errors += 1
        self.last_error = message[:500]
        self.last_error_at = time.time()

    def _wait(self, listen: psycopg.Connection) -> None:
        """Until a notification, ``poll_s`` (due retries, escalations) or :meth:`stop`."""
        deadline = time.monotonic() + self.config.poll_s
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            # Short slices so stop() is honoured quickly.
            if list(listen.notifies(timeout=min(0.5, left), stop_after=1)):
                return

    def health(self) -> dict[str, Any]:
        """Liveness for a health endpoint: alive when a clean pass finished recently."""
        now = time.time()
        running = self._thread is not None and self._thread.is_alive()
        since = self.last_pass_at if self.last_pass_at is not None else self.started_at
        fresh = now - since <= self.config.stale_after_s
        return {
            "alive": running and fresh,
            "thread_running": running,
            "last_pass_age_s": None if self.last_pass_at is None else round(now - since, 3),
            "errors": self.errors,
            "last_error": self.last_error,
        }

    def start(self) -> Notifier:
        self._thread = threading.Thread(target=self.run, name="citywatch-notifier", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
