"""The notifier: turns the transition outbox into deliveries, sends them, escalates.

One loop, one thread. It LISTENs on the channel the transitions notify, so a
new transition is picked up within milliseconds of its commit; it also polls
every ``poll_s`` for retries that fall due and for escalations. Work is claimed
with ``FOR UPDATE SKIP LOCKED``, so several notifiers can share the outbox, and
the unique ``(transition_id, channel_id)`` delivery row means one notification
per transition per channel. Failures are retried with exponential backoff up
to ``max_attempts``, each attempt recorded in the delivery log.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import psycopg
from kafka.errors import KafkaError

from storage import alert_store

from .channels import ChannelConfig, Channels, DeliveryError
from .repairs import RepairEvents

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NotifierConfig:
    poll_s: float = 1.0
    escalation_check_s: float = 5.0
    max_attempts: int = 6
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    batch: int = 50

    def retry_in(self, attempts_before: int) -> float | None:
        """Seconds until the next try after a failure, or None: give up."""
        if attempts_before + 1 >= self.max_attempts:
            return None
        return min(self.backoff_max_s, self.backoff_base_s * 2**attempts_before)


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

    # -- one pass -------------------------------------------------------------

    def run_once(self, conn: psycopg.Connection) -> dict[str, int]:
        """Escalate (when due), fan out new transitions, send due deliveries."""
        counts = {"escalated": 0, "fanned_out": 0, "sent": 0, "failed": 0}
        now = time.monotonic()
        if now - self._last_escalation >= self.config.escalation_check_s:
            self._last_escalation = now
            counts["escalated"] = len(alert_store.escalate_due(conn))
        with conn.transaction(), conn.cursor() as cur:
            counts["fanned_out"] = alert_store.fan_out(cur)
        if self._repairs is not None:
            try:
                counts["repairs"] = self._repairs.publish_pending(conn)
            except KafkaError as exc:  # the labels stay pending; next pass retries
                log.warning("maintenance events not published yet: %s", exc)
        while True:
            with conn.transaction(), conn.cursor() as cur:
                due = alert_store.claim_deliveries(cur, self.config.batch)
                for d in due:
                    error, retry_in = self._send(d)
                    alert_store.mark_delivery(
                        cur, d["transition_id"], d["channel_id"], error=error, retry_in_s=retry_in
                    )
                    counts["sent" if error is None else "failed"] += 1
            if len(due) < self.config.batch:
                return counts

    def _send(self, d: dict) -> tuple[str | None, float | None]:
        try:
            self._channels.send(d)
        except DeliveryError as exc:
            retry = None if exc.permanent else self.config.retry_in(d["attempts"])
            log.warning(
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
            log.exception("delivery %s:%s crashed", d["transition_id"], d["channel_id"])
            return f"{type(exc).__name__}: {exc}", self.config.retry_in(d["attempts"])
        log.info("delivered %s:%s (%s)", d["transition_id"], d["channel_id"], d["kind"])
        return None, None

    # -- the loop -------------------------------------------------------------

    def run(self) -> None:
        """Loop until :meth:`stop`; reconnects after database outages."""
        while not self._stop.is_set():
            try:
                with (
                    psycopg.connect(self._database_url, autocommit=True) as listen,
                    psycopg.connect(
                        self._database_url, application_name="citywatch-notifier"
                    ) as work,
                ):
                    listen.execute(f"LISTEN {alert_store.NOTIFY_CHANNEL}")
                    while not self._stop.is_set():
                        self.run_once(work)
                        self._wait(listen)
            except psycopg.OperationalError as exc:
                log.warning("notifier: database unavailable (%s); retrying", exc)
                self._stop.wait(2.0)
        self._channels.close()
        if self._repairs is not None:
            self._repairs.close()

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

    def start(self) -> Notifier:
        self._thread = threading.Thread(target=self.run, name="citywatch-notifier", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
