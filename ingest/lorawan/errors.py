"""The one error type of the LoRaWAN ingest path.

Every way an uplink can be unusable maps to a short machine-readable
``reason``; callers turn the error into a dead letter carrying that reason,
the human-readable ``detail`` and the raw bytes they received.
"""

from __future__ import annotations

__all__ = ["REASONS", "TransientError", "UplinkError"]

#: Every reason this package raises, with what it means.
REASONS: dict[str, str] = {
    "too_large": "the message is larger than the bridge's or webhook's limit (64 KiB by default)",
    "malformed_json": "the message is not valid JSON (or not UTF-8)",
    "schema": "valid JSON, but a required field is missing or has the wrong type",
    "bad_base64": "the payload field is not valid base64",
    "not_uplink": "a network-server event other than an uplink (join, status, ack, ...)",
    "topic_mismatch": "the MQTT topic names a different device or application",
    "unknown_device": "the DevEUI is not in the device registry",
    "decode_error": "the device's codec rejected the payload",
    "no_metrics": "the payload decoded, but none of its values is a metric of the asset",
    "kafka_refused": "Kafka refused the reading or dead letter it became (e.g. too large for "
    "the broker); the dead letter keeps the first KiB",
    "internal_error": "handling the frame raised an unexpected exception (a bug); the detail "
    "names it, and the bridge carries on with the next frame",
}


class UplinkError(Exception):
    """An uplink that cannot become a reading.

    Parameters
    ----------
    reason : str
        One of :data:`REASONS`; stable, for dead-letter tables and metrics.
    detail : str
        Human-readable explanation, e.g. the JSON path of a bad field.
    """

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown UplinkError reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[UplinkError], tuple[str, str]]:
        # Keep the error picklable (multiprocessing, Faust) despite the custom __init__.
        return (type(self), (self.reason, self.detail))


class TransientError(Exception):
    """Something a frame needs is unavailable (database, Kafka): retry, don't dead-letter.

    The bridge leaves the MQTT message unacknowledged so the broker redelivers
    it; the webhook answers 503 so the network server retries.
    """
