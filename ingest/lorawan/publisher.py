"""Kafka output of the LoRaWAN ingest: readings and ingest-stage dead letters.

Readings go to ``readings`` keyed by DevEUI. Dead letters go to ``deadletter``
with the raw uplink bytes as value and the headers ``reason``, ``detail``,
``stage=ingest`` and a stable ``deadletter_id`` (``<channel>:<sha1 of topic +
payload>``), so a redelivered bad message is stored once.

Sends are queued and batched by the client; :meth:`KafkaPublisher.flush`
blocks until the broker acknowledged everything queued (``acks=all``) and
raises :class:`PublishError` if anything was not delivered. Callers ack their
input (MQTT PUBACK, HTTP 2xx) only after a successful flush: at-least-once.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from confluent_kafka import KafkaError, Producer

__all__ = ["KafkaPublisher", "PublishError", "deadletter_id"]

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    """Kafka did not acknowledge some queued messages."""


def deadletter_id(channel: str, topic: str, payload: bytes) -> str:
    """Stable id of a bad input message: the same bytes on the same topic, the same id."""
    digest = hashlib.sha1(topic.encode() + b"\0" + payload, usedforsecurity=False)
    return f"{channel}:{digest.hexdigest()}"


class KafkaPublisher:
    """Queue readings and dead letters for Kafka; ``flush`` waits for the acks.

    Built on confluent-kafka (librdkafka): its ``produce`` costs about a
    microsecond, where kafka-python's ``send`` costs ~40 us of Python per
    message, which alone would halve the bridge's rate.

    Parameters
    ----------
    bootstrap_servers : str
    readings_topic, deadletter_topic : str
        Full topic names (prefix applied).
    linger_ms : int
        Batching delay inside librdkafka; the bridge flushes once per loop.
    **config
        Further librdkafka settings (dotted names), e.g. ``{"security.protocol": ...}``.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        readings_topic: str,
        deadletter_topic: str,
        *,
        linger_ms: int = 5,
        **config: Any,
    ) -> None:
        self.readings_topic = readings_topic
        self.deadletter_topic = deadletter_topic
        settings: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "client.id": "citywatch-lorawan",
            "acks": "all",
            "linger.ms": linger_ms,
            "batch.num.messages": 10_000,
            "message.timeout.ms": 30_000,
            # Tansu lacks InitProducerId; one request in flight keeps order on retry.
            "enable.idempotence": False,
            "max.in.flight.requests.per.connection": 1,
            # Java's murmur2, like kafka-python, aiokafka and Faust's tables: a
            # device's readings and its maintenance events (sent by other
            # producers) must share a partition to stay in order. librdkafka's
            # default (CRC32) would split them.
            "partitioner": "murmur2_random",
            # Report failures only: a Python callback per delivered message costs
            # more than the produce itself.
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
        }
        settings.update(config)
        self._producer = Producer(settings)
        self._queued = 0
        self._errors: list[KafkaError] = []

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._errors.append(err)

    def _produce(self, topic: str, key: bytes | None, value: bytes, headers=None) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers)
                break
            except BufferError:
                # librdkafka's local queue is full: let it send, then retry.
                self._producer.poll(0.05)
        self._queued += 1

    def reading(self, key: bytes, value: bytes) -> None:
        """Queue one reading."""
        self._produce(self.readings_topic, key, value)

    def deadletter(
        self, *, key: bytes | None, raw: bytes, reason: str, detail: str, dl_id: str
    ) -> None:
        """Queue one ingest-stage dead letter (the common.md contract)."""
        headers = [
            ("reason", reason.encode()),
            ("detail", detail.encode()[:2000]),
            ("stage", b"ingest"),
            ("deadletter_id", dl_id.encode()),
        ]
        self._produce(self.deadletter_topic, key, raw, headers)

    @property
    def queued(self) -> int:
        """Messages queued since the last flush."""
        return self._queued

    def flush(self, timeout: float = 60.0) -> int:
        """Block until every queued message is acknowledged; return how many were.

        Raises
        ------
        PublishError
            When any message failed or is still undelivered after ``timeout``;
            the caller must not ack its inputs.
        """
        queued, self._queued = self._queued, 0
        if not queued:
            return 0
        remaining = self._producer.flush(timeout)
        errors, self._errors = self._errors, []
        if remaining or errors:
            first = errors[0] if errors else "timed out"
            raise PublishError(
                f"{len(errors) + remaining} of {queued} messages not delivered: {first}"
            )
        return queued

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued (best effort), then release the client and its threads."""
        try:
            self.flush(timeout=timeout)
        except PublishError as exc:
            log.warning("closing with undelivered messages: %s", exc)
        finally:
            self._producer.purge()
            self._producer.close()
