"""Notification channels: generic JSON webhook, Slack-compatible webhook, SMTP e-mail, Kafka.

Each channel takes one delivery (a transition joined with its alert and the
channel's target) and either returns or raises :class:`DeliveryError`; the
notifier owns retries and the delivery log. Every message carries a stable
``delivery_id`` so a receiver can drop the rare duplicate after a crash
between sending and recording.
"""

from __future__ import annotations

import json
import smtplib
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Any

import httpx

ACTION_WORDS = {
    "open": "OPEN",
    "acknowledge": "ACKNOWLEDGED",
    "assign": "ASSIGNED",
    "resolve": "RESOLVED",
    "escalate": "ESCALATED",
}


class DeliveryError(RuntimeError):
    """Sending failed; ``permanent`` failures are not retried."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class ChannelConfig:
    """Where the non-HTTP channels connect (from flags / CITYWATCH_* variables)."""

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_sender: str = "citywatch@localhost"
    kafka_bootstrap: str | None = None
    timeout_s: float = 5.0
    inbox_url: str | None = None  # e.g. https://alerts.example.org/inbox


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def event_body(d: dict[str, Any]) -> dict[str, Any]:
    """The generic JSON body: the transition plus the alert after it."""
    alert_keys = (
        "alert_id",
        "asset_id",
        "device_id",
        "asset_type",
        "status",
        "severity",
        "team",
        "zone",
        "title",
        "opened_at",
        "closed_at",
        "peak_risk",
        "last_risk",
        "threshold",
        "model_version",
        "assigned_to",
        "outcome",
        "source",
    )
    return {
        "delivery_id": f"{d['transition_id']}:{d['channel_id']}",
        "event": f"alert.{d['action']}",
        "transition": {
            "transition_id": d["transition_id"],
            "action": d["action"],
            "from_status": d["from_status"],
            "to_status": d["to_status"],
            "actor": d["actor"],
            "at": _iso(d["at"]),
            "level": d["level"],
            "detail": d["detail"],
        },
        "alert": {k: _iso(d[k]) for k in alert_keys},
    }


def summary_line(d: dict[str, Any]) -> str:
    word = ACTION_WORDS.get(d["action"], d["action"].upper())
    who = "" if d["actor"] == "system" else f" by {d['actor']}"
    return (
        f"[{word}] {d['severity']} {d['asset_type']} {d['asset_id']}"
        f" risk {d['last_risk']:.2f} (peak {d['peak_risk']:.2f}){who}"
    )


def slack_body(d: dict[str, Any], inbox_url: str | None = None) -> dict[str, Any]:
    """Slack incoming-webhook body: ``text`` fallback plus Block Kit sections."""
    fields = [
        f"*Team:* {d['team'] or '-'}",
        f"*Zone:* {d['zone'] or '-'}",
        f"*Status:* {d['to_status']}",
        f"*Alert:* `{d['alert_id']}`",
    ]
    if d.get("outcome"):
        fields.append(f"*Outcome:* {d['outcome']}")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": summary_line(d)}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    if inbox_url:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"<{inbox_url}|Open the inbox>"}],
            }
        )
    return {"text": summary_line(d), "blocks": blocks}


def _post(client: httpx.Client, url: str, body: dict[str, Any], delivery_id: str) -> None:
    try:
        response = client.post(
            url,
            json=body,
            headers={"Idempotency-Key": delivery_id, "User-Agent": "citywatch-alerts"},
        )
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
    if response.status_code >= 400:
        # 4xx other than 408/429 will not get better by retrying.
        permanent = 400 <= response.status_code < 500 and response.status_code not in (408, 429)
        raise DeliveryError(f"HTTP {response.status_code}", permanent=permanent)


def send_webhook(client: httpx.Client, d: dict[str, Any]) -> None:
    body = event_body(d)
    _post(client, d["target"], body, body["delivery_id"])


def send_slack(client: httpx.Client, d: dict[str, Any], config: ChannelConfig) -> None:
    _post(
        client,
        d["target"],
        slack_body(d, config.inbox_url),
        f"{d['transition_id']}:{d['channel_id']}",
    )


def send_email(d: dict[str, Any], config: ChannelConfig) -> None:
    msg = EmailMessage()
    msg["Subject"] = summary_line(d)
    msg["From"] = config.smtp_sender
    msg["To"] = d["target"]
    msg["X-Citywatch-Delivery"] = f"{d['transition_id']}:{d['channel_id']}"
    body = event_body(d)
    text = [summary_line(d), "", json.dumps(body["alert"], indent=2)]
    if config.inbox_url:
        text += ["", f"Inbox: {config.inbox_url}"]
    msg.set_content("\n".join(text))
    try:
        with smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=config.timeout_s) as smtp:
            smtp.send_message(msg)
    except smtplib.SMTPRecipientsRefused as exc:
        raise DeliveryError(f"recipient refused: {exc}", permanent=True) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc


class KafkaChannel:
    """Publishes the generic JSON body to a topic (key = alert id) for a work-order system."""

    def __init__(self, bootstrap: str | None, timeout_s: float) -> None:
        self._bootstrap = bootstrap
        self._timeout_s = timeout_s
        self._producer = None

    def send(self, d: dict[str, Any], config: ChannelConfig) -> None:
        if not self._bootstrap:
            raise DeliveryError("no Kafka bootstrap servers configured", permanent=True)
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        try:
            if self._producer is None:
                # One request in flight: the embedded Tansu broker lacks idempotent producers.
                self._producer = KafkaProducer(
                    bootstrap_servers=self._bootstrap,
                    max_in_flight_requests_per_connection=1,
                    acks="all",
                )
            body = event_body(d)
            future = self._producer.send(
                d["target"],
                key=d["alert_id"].encode(),
                value=json.dumps(body).encode(),
                headers=[("delivery_id", body["delivery_id"].encode())],
            )
            future.get(timeout=self._timeout_s)
        except KafkaError as exc:
            self.close()
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=2)
            self._producer = None


class Channels:
    """Dispatch by channel kind."""

    def __init__(self, config: ChannelConfig) -> None:
        self.config = config
        self._kafka = KafkaChannel(config.kafka_bootstrap, config.timeout_s)
        # One pooled client: building a client (TLS context) per message costs ~100 ms.
        self._http = httpx.Client(timeout=config.timeout_s)

    def send(self, d: dict[str, Any]) -> None:
        kind = d["kind"]
        if kind == "webhook":
            send_webhook(self._http, d)
        elif kind == "slack":
            send_slack(self._http, d, self.config)
        elif kind == "email":
            send_email(d, self.config)
        elif kind == "kafka":
            self._kafka.send(d, self.config)
        else:
            raise DeliveryError(f"unknown channel kind {kind!r}", permanent=True)

    def close(self) -> None:
        self._kafka.close()
        self._http.close()
