"""Kafka output of the LoRaWAN ingest: readings and ingest-stage dead letters.

Readings go to ``readings`` keyed by DevEUI. Dead letters go to ``deadletter``
with the raw uplink bytes as value and the headers ``reason``, ``detail``,
``stage=ingest``, a stable ``deadletter_id`` (``<channel>:<sha1 of topic +
payload>``, so a redelivered bad message is stored once), ``raw_size`` (decimal
byte size of the original payload) and ``raw_sha256`` (hex sha256 of the
original payload). The value keeps at most ``keep_raw`` bytes (64 KiB by
default), so a dead letter always fits under a broker's message limit (1 MB by
default in Kafka and librdkafka); ``raw_size`` tells whether it was cut.

A message Kafka refuses for what it is (``MSG_SIZE_TOO_LARGE`` and kin, at
``produce`` or in its delivery report) becomes a ``kafka_refused`` dead letter
keeping the first KiB; any other failure is transient and raises
:class:`PublishError` from :meth:`KafkaPublisher.flush`.

Sends are queued and batched by the client; :meth:`KafkaPublisher.flush`
blocks until the broker acknowledged everything queued (``acks=all``) and
raises :class:`PublishError` if anything was not delivered. Callers ack their
input (MQTT PUBACK, HTTP 2xx) only after a successful flush: at-least-once.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

__all__ = ["DEFAULT_KEEP_RAW", "KafkaPublisher", "PublishError", "Refusal", "deadletter_id"]

log = logging.getLogger(__name__)

#: Raw bytes kept in an ingest dead letter; the rest is described by raw_size/raw_sha256.
DEFAULT_KEEP_RAW = 64 << 10
#: Raw bytes kept when Kafka refused the message itself (its size may be the reason).
_REFUSED_KEEP = 1024
#: Refusals because of what the message is, not because Kafka is unwell: retrying can't help.
_REFUSED_CODES = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_RECORD,
    }
)
_MAX_KEY = 256


@dataclass(frozen=True)
class Refusal:
    """A message Kafka refused, replaced by a ``kafka_refused`` dead letter.

    ``was_reason`` is the reason of the refused dead letter, or None for a reading.
    """

    was_reason: str | None
    detail: str


class PublishError(RuntimeError):
    """Kafka did not acknowledge some queued messages."""


def deadletter_id(channel: str, topic: str, payload: bytes) -> str:
    """Stable id of a bad input message: the same bytes on the same topic, the same id."""
    digest = hashlib.sha1(_text(topic) + b"\0" + payload, usedforsecurity=False)
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
    keep_raw : int
        Most raw bytes kept in a dead letter (``raw_size``/``raw_sha256`` describe all).
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
        keep_raw: int = DEFAULT_KEEP_RAW,
        **config: Any,
    ) -> None:
        self.readings_topic = readings_topic
        self.deadletter_topic = deadletter_topic
        self.keep_raw = keep_raw
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
        # Refused messages waiting for their replacement dead letter: (topic, key, value,
        # headers, error text); and the replacements made, for the caller's counters.
        self._refused: list[tuple[str, bytes | None, bytes, list, str]] = []
        self._refusals: list[Refusal] = []

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            return
        if err.code() in _REFUSED_CODES:
            self._refused.append(
                (msg.topic(), msg.key(), msg.value() or b"", msg.headers() or [], err.str())
            )
        else:
            self._errors.append(err)

    def _produce(self, topic: str, key: bytes | None, value: bytes, headers=None) -> None:
        self._queued += 1
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers)
                return
            except BufferError:
                # librdkafka's local queue is full: let it send, then retry.
                self._producer.poll(0.05)
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() in _REFUSED_CODES:  # e.g. larger than message.max.bytes
                    self._refused.append((topic, key, value, headers or [], err.str()))
                else:  # flush() reports it; the caller holds its input
                    self._errors.append(err)
                return

    def reading(self, key: bytes, value: bytes) -> None:
        """Queue one reading."""
        self._produce(self.readings_topic, key, value)

    def deadletter(
        self,
        *,
        key: bytes | None,
        raw: bytes,
        reason: str,
        detail: str,
        dl_id: str,
        raw_size: int | None = None,
        raw_sha256: str | None = None,
    ) -> None:
        """Queue one ingest-stage dead letter, its raw bytes cut to ``keep_raw``.

        ``raw_size``/``raw_sha256`` describe the original payload when ``raw`` is
        already only its head (the webhook streams large bodies); by default
        they are computed from ``raw``.
        """
        headers = [
            ("reason", reason.encode()),
            ("detail", _text(detail)[:2000]),
            ("stage", b"ingest"),
            ("deadletter_id", _text(dl_id)),
            ("raw_size", str(len(raw) if raw_size is None else raw_size).encode()),
            ("raw_sha256", (raw_sha256 or hashlib.sha256(raw).hexdigest()).encode()),
        ]
        self._produce(self.deadletter_topic, _short_key(key), bytes(raw[: self.keep_raw]), headers)

    def _replace_refused(self) -> None:
        """Queue a small ``kafka_refused`` dead letter for each refused message."""
        refused, self._refused = self._refused, []
        for topic, key, value, headers, error in refused:
            meta = {k: v for k, v in headers}
            was = meta.get("reason")
            if was == b"kafka_refused":
                # Even the 1 KiB replacement was refused: keep the headers only.
                value, keep = b"", 0
            else:
                keep = _REFUSED_KEEP
            was_reason = was.decode() if was is not None else None
            kind = f"dead letter ({was_reason})" if was_reason else f"message on {topic}"
            detail = f"Kafka refused the {kind} of {len(value)} bytes: {error}"
            digest = hashlib.sha1(topic.encode() + b"\0" + value, usedforsecurity=False)
            self._produce(
                self.deadletter_topic,
                _short_key(key),
                value[:keep],
                [
                    ("reason", b"kafka_refused"),
                    ("detail", _text(detail)[:2000]),
                    ("stage", b"ingest"),
                    (
                        "deadletter_id",
                        meta.get("deadletter_id") or f"kafka:{digest.hexdigest()}".encode(),
                    ),
                    ("raw_size", meta.get("raw_size") or str(len(value)).encode()),
                    (
                        "raw_sha256",
                        meta.get("raw_sha256") or hashlib.sha256(value).hexdigest().encode(),
                    ),
                ],
            )
            self._refusals.append(Refusal(was_reason, detail))
            log.warning("%s; dead-lettered as kafka_refused", detail)

    def take_refusals(self) -> list[Refusal]:
        """The refused messages replaced since the last call (for the caller's counters)."""
        out, self._refusals = self._refusals, []
        return out

    @property
    def queued(self) -> int:
        """Messages queued since the last flush."""
        return self._queued

    def flush(self, timeout: float = 60.0) -> int:
        """Block until every queued message is acknowledged; return how many were.

        A message Kafka refused counts as acknowledged once its ``kafka_refused``
        replacement is (see :meth:`take_refusals`).

        Raises
        ------
        PublishError
            When any message failed or is still undelivered after ``timeout``;
            the caller must not ack its inputs.
        """
        total = 0
        # Round 1 sends; round 2 replaces what was refused; round 3 replaces a refused
        # replacement by headers only. Anything still refused after that is an error.
        for attempt in range(3):
            queued, self._queued = self._queued, 0
            if not queued:
                return total
            remaining = self._producer.flush(timeout)
            errors, self._errors = self._errors, []
            if remaining or errors:
                self._refused.clear()
                first = errors[0] if errors else "timed out"
                raise PublishError(
                    f"{len(errors) + remaining} of {queued} messages not delivered: {first}"
                )
            total += queued - len(self._refused)
            if not self._refused:
                return total
            if attempt < 2:
                self._replace_refused()
        self._refused.clear()
        raise PublishError("Kafka refused even a headers-only dead letter")

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued (best effort), then release the client and its threads."""
        try:
            self.flush(timeout=timeout)
        except PublishError as exc:
            log.warning("closing with undelivered messages: %s", exc)
        finally:
            self._producer.purge()
            self._producer.close()


def _text(value: str) -> bytes:
    # Details and ids may quote hostile input: lone surrogates must not break encoding.
    return value.encode("utf-8", "backslashreplace")


def _short_key(key: bytes | None) -> bytes | None:
    # A key comes from the MQTT topic, which a client chooses: bound it.
    return key[:_MAX_KEY] if key is not None else None
