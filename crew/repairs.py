"""Confirmed faults become maintenance events: the crew's repair resets the device's features.

A crew that resolves an alert with ``fault_confirmed`` repaired the asset, so
the worker must reset that device's feature baseline, exactly as training does
at a repair (see streams/app.py and models/history.py). The resolution already
wrote the ``alert:<id>`` label in its transaction; this publisher turns each
such label into a maintenance message on the ``readings`` topic, keyed by the
device so it is ordered with its readings, and marks the label as published.

Delivery is at-least-once: a crash between the send and the mark re-sends the
event, and the worker ignores a maintenance event no newer than the last one
it accepted (and ``maintenance_events`` is keyed by device and time).
"""

from __future__ import annotations

import logging

import psycopg
from kafka import KafkaProducer

from core.wire import encode_maintenance

log = logging.getLogger(__name__)

_PENDING = """
SELECT l.label_id, l.device_id, l.asset_id, d.asset_type, l.observed_at
FROM labels l JOIN devices d ON d.device_id = l.device_id
WHERE l.source = 'alert' AND l.outcome = 'fault_confirmed'
  AND NOT l.detail ? 'maintenance_published_at'
ORDER BY l.observed_at
LIMIT %s
FOR UPDATE OF l SKIP LOCKED
"""

_MARK = """
UPDATE labels SET detail = detail || jsonb_build_object('maintenance_published_at', now())
WHERE label_id = ANY(%s)
"""


class RepairEvents:
    """Publishes a maintenance event for every confirmed fault not yet published.

    Parameters
    ----------
    bootstrap_servers : str
        Kafka ``host:port``.
    readings_topic : str
        The full name of the readings topic (``settings.topic("readings")``).
    """

    def __init__(self, bootstrap_servers: str, readings_topic: str) -> None:
        self.readings_topic = readings_topic
        # kafka-python's default partitioner is murmur2, like every citywatch
        # producer: the event lands on its device's partition.
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            client_id="citywatch-repairs",
            enable_idempotence=False,  # Tansu has no InitProducerId
        )

    def publish_pending(self, conn: psycopg.Connection, batch: int = 100) -> int:
        """Send pending events, then mark them, in one database transaction."""
        with conn.transaction(), conn.cursor() as cur:
            rows = cur.execute(_PENDING, (batch,)).fetchall()
            if not rows:
                return 0
            futures = [
                self._producer.send(
                    self.readings_topic,
                    key=device_id.encode(),
                    value=encode_maintenance(
                        device_id=device_id,
                        asset_id=asset_id,
                        asset_type=asset_type,
                        ts=observed_at,
                        source={"kind": "crew", "label_id": label_id},
                    ),
                )
                for label_id, device_id, asset_id, asset_type, observed_at in rows
            ]
            for future in futures:
                future.get(timeout=30)  # raises: the labels stay pending for the next pass
            cur.execute(_MARK, ([r[0] for r in rows],))
        log.info("published %d maintenance events for confirmed faults", len(rows))
        return len(rows)

    def close(self) -> None:
        self._producer.close(timeout=5)
