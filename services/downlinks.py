"""The downlink service: the worker's scores and alerts in, sensor commands out.

``citywatch downlinks run`` runs :class:`DownlinkService`. It reads the
``scores`` and ``alerts`` topics the worker already produces, lets the
:class:`~ingest.lorawan.adaptive.AdaptiveSampler` decide reporting intervals,
and sends each command through the device's network server over MQTT, in
ChirpStack's or The Things Stack's format, learnt from the device's newest
uplink. Crews' requests for a fresh reading (rows ``requested`` in
``downlink_commands``, written by the crew API) go the same way. Every
command sent, refused or failed is a row of ``downlink_commands`` with its
reason.

It reads the topics without a consumer group, from their end at start: a
command answers the present, and replaying a backlog would only send stale
ones. What it misses while down is made up by the next scores (a risk above
the level speeds the sensor up; below the release level, with no alert open,
restores it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from pydantic import SecretStr

from core.settings import Settings
from ingest.lorawan.adaptive import AdaptiveSampler, Decision, SamplingPolicy
from ingest.lorawan.codecs.downlink import DownlinkError, downlink_encoder
from ingest.lorawan.downlink import (
    DownlinkPublisher,
    DownlinkTarget,
    chirpstack_downlink,
    tts_downlink,
    tts_webhook_push,
)
from services.connection import Connection
from storage import downlink_store as store
from storage.downlink_store import CommandRow
from streams.records import decode_score_batch
from streams.topics import ALERTS, SCORES, ensure_topics

__all__ = ["DownlinkService", "TtsWebhookApi"]


@dataclass(frozen=True)
class TtsWebhookApi:
    """The Things Stack's webhook downlink API: base URL, webhook id, API key, client."""

    base_url: str
    webhook_id: str
    api_key: SecretStr
    client: Any = None  # an httpx.Client; None makes one per request


log = logging.getLogger(__name__)


class DownlinkService:
    """Scores and alerts in, downlinks out; one process per deployment.

    Parameters
    ----------
    settings, conn
        Topics, Kafka and the database.
    mqtt_url : str
        The network server's MQTT broker.
    policy : SamplingPolicy
    actor : str
        ``requested_by`` of the controller's own commands.
    tts_http : TtsWebhookApi, optional
        Send The Things Stack's downlinks through its webhook API instead of MQTT.
    """

    def __init__(
        self,
        settings: Settings,
        conn: Connection,
        mqtt_url: str,
        policy: SamplingPolicy,
        *,
        actor: str = "adaptive-sampling",
        tts_http: TtsWebhookApi | None = None,
    ) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.settings, self.conn, self.actor = settings, conn, actor
        self.tts_http = tts_http
        self.db = psycopg.connect(conn.database_url, autocommit=True)
        self.sampler = AdaptiveSampler(policy, self._can_encode)
        self.publisher = DownlinkPublisher(mqtt_url)
        self.counts = {"sent": 0, "refused": 0, "failed": 0, "events": 0}
        self._codecs: dict[str, str | None] = {}
        self._codecs_loaded = 0.0
        self._consumer = KafkaConsumer(
            bootstrap_servers=conn.kafka, enable_auto_commit=False, client_id="citywatch-downlinks"
        )
        ensure_topics(conn.kafka, settings)  # before the worker ever ran, they may not exist
        self._topics = {settings.topic(SCORES): "scores", settings.topic(ALERTS): "alerts"}
        parts = []
        for topic in self._topics:
            for partition in self._consumer.partitions_for_topic(topic) or ():
                parts.append(TopicPartition(topic, partition))
        self._consumer.assign(parts)
        self._consumer.seek_to_end()
        for tp in parts:  # resolve the end now, so nothing produced from here on is skipped
            self._consumer.position(tp)

    # ------------------------------------------------------------------ devices

    def _codec(self, device_id: str) -> str | None:
        if device_id not in self._codecs and time.monotonic() - self._codecs_loaded > 5:
            rows = self.db.execute("SELECT device_id, codec FROM devices").fetchall()
            self._codecs = dict(rows)
            self._codecs_loaded = time.monotonic()
        return self._codecs.get(device_id)

    def _can_encode(self, device_id: str) -> bool:
        codec = self._codec(device_id)
        encoder = downlink_encoder(codec) if codec else None
        return encoder is not None and encoder.supports("set_interval")

    # ------------------------------------------------------------------ sending

    def _send(
        self, device_id: str, command: str, args: dict[str, int]
    ) -> tuple[str, str | None, dict[str, Any]]:
        """``(status, detail, fields)`` of one send attempt."""
        codec = self._codec(device_id)
        encoder = downlink_encoder(codec) if codec else None
        if encoder is None or not encoder.supports(command):
            return "refused", f"no downlink encoder for codec {codec}", {}
        route = store.last_route(self.db, device_id)
        target = DownlinkTarget.from_source(device_id, route or {})
        if target is None:
            return "refused", "no LoRaWAN uplink yet to learn its network address from", {}
        try:
            encoded = encoder.encode(command, args)
        except DownlinkError as exc:
            return "refused", str(exc), {}
        if target.network == "tts" and self.tts_http is not None:
            return self._send_http(target, encoded)
        build = chirpstack_downlink if target.network == "chirpstack" else tts_downlink
        topic, body = build(target, encoded)
        fields = {
            "network": target.network,
            "topic": topic,
            "f_port": encoded.f_port,
            "payload": encoded.payload,
        }
        ok = self.publisher.publish(target.network, topic, body)
        return (
            ("sent", None, fields) if ok else ("failed", "the MQTT broker did not take it", fields)
        )

    def _send_http(self, target: DownlinkTarget, encoded) -> tuple[str, str | None, dict]:
        api = self.tts_http
        fields = {"network": "tts", "f_port": encoded.f_port, "payload": encoded.payload}
        fields["topic"] = f"webhook:{api.webhook_id}/devices/{target.device_id}/down/push"
        try:
            status = tts_webhook_push(
                api.base_url, api.webhook_id, api.api_key, target, encoded, client=api.client
            )
        except OSError as exc:  # httpx transport errors are OSErrors underneath
            return "failed", f"The Things Stack API unreachable: {exc}"[:300], fields
        except Exception as exc:
            return "failed", f"The Things Stack API: {type(exc).__name__}"[:300], fields
        if 200 <= status < 300:
            return "sent", None, fields
        return "failed", f"The Things Stack API answered HTTP {status}", fields

    def execute(self, decision: Decision) -> str:
        """Send (or record the refusal of) one controller decision; returns its status."""
        if decision.refusal is not None:
            status, detail, fields = "refused", decision.refusal, {}
        else:
            status, detail, fields = self._send(decision.device_id, decision.command, decision.args)
            if status != "sent":
                self.sampler.failed(decision)
        store.record_command(
            self.db,
            CommandRow(
                device_id=decision.device_id,
                asset_id=decision.asset_id,
                command=decision.command,
                args=decision.args,
                reason=decision.reason,
                requested_by=self.actor,
                status=status,
                event_at=decision.at,
                alert_id=decision.alert_id,
                detail=detail,
                sent_at=datetime.now(UTC) if status == "sent" else None,
                **fields,
            ),
        )
        self.counts[status] += 1
        log.info(
            "%s %s %s: %s%s",
            status,
            decision.command,
            decision.device_id,
            decision.reason,
            f" ({detail})" if detail else "",
        )
        return status

    def serve_requests(self) -> int:
        """Send the crews' requested commands; returns how many were handled."""
        with self.db.transaction():
            rows = store.claim_requested(self.db)
            for row in rows:
                refusal = self.sampler.limiter.check(row["device_id"], datetime.now(UTC))
                if refusal is not None:
                    status, detail, fields = "refused", refusal, {}
                else:
                    status, detail, fields = self._send(row["device_id"], row["command"], {})
                if status == "sent":
                    self.sampler.limiter.record(row["device_id"], datetime.now(UTC))
                store.finish_command(
                    self.db,
                    row["command_id"],
                    CommandRow(
                        device_id=row["device_id"],
                        command=row["command"],
                        reason=row["reason"],
                        requested_by=row["requested_by"],
                        status=status,
                        detail=detail,
                        sent_at=datetime.now(UTC) if status == "sent" else None,
                        **fields,
                    ),
                )
                self.counts[status] += 1
        return len(rows)

    # ------------------------------------------------------------------ events

    def _events(self, kind: str, value: bytes) -> list[Decision]:
        # Only radio devices (a codec in the registry) have a sensor to steer.
        if kind == "scores":
            out = []
            for score in decode_score_batch(value):
                if self._codec(score.device_id) is not None:
                    out += self.sampler.on_score(
                        score.device_id, score.asset_id, score.risk, score.ts
                    )
            return out
        doc = json.loads(value)
        if self._codec(doc["device_id"]) is None:
            return []
        transition = "open" if doc["transition"] == "open" else "close"
        at = datetime.fromisoformat(doc["closed_at"] or doc["opened_at"])
        return self.sampler.on_alert(
            transition, doc["alert_id"], doc["device_id"], doc["asset_id"], doc["last_risk"], at
        )

    def step(self, timeout_ms: int = 500) -> int:
        """Handle what arrived within ``timeout_ms``; returns the number of events."""
        handled = 0
        for records in self._consumer.poll(timeout_ms=timeout_ms, max_records=5000).values():
            for record in records:
                kind = self._topics[record.topic]
                try:
                    decisions = self._events(kind, record.value)
                except (ValueError, KeyError, TypeError) as exc:
                    # The worker wrote it; a bad one is a bug there, not a reason to stop.
                    log.warning("skipping an unreadable %s message: %s", kind, exc)
                    continue
                handled += 1
                for decision in decisions:
                    self.execute(decision)
        self.counts["events"] += handled
        self.serve_requests()
        return handled

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Step until ``should_stop``; a database outage pauses the service, never ends it."""
        while not should_stop():
            try:
                self.step()
            except psycopg.OperationalError as exc:
                log.error("database unavailable, retrying in 5 s: %s", exc)
                time.sleep(5)
                with contextlib.suppress(psycopg.Error):
                    self.db.close()
                with contextlib.suppress(psycopg.OperationalError):
                    self.db = psycopg.connect(self.conn.database_url, autocommit=True)

    def close(self) -> None:
        self._consumer.close()
        self.publisher.close()
        self.db.close()
