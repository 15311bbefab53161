"""Topic names and creation, shared by the worker and every producer."""

from __future__ import annotations

import contextlib
import logging

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from core.settings import Settings

log = logging.getLogger(__name__)

READINGS = "readings"
SCORES = "scores"
ALERTS = "alerts"
DEADLETTER = "deadletter"
NETWORK_READINGS = "network-readings"  # network sensor readings keyed by district


def ensure_topics(bootstrap: str, settings: Settings) -> None:
    """Create the pipeline's topics with ``settings.partitions`` partitions if missing."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="citywatch-admin")
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(settings.topic(name), num_partitions=settings.partitions, replication_factor=1)
            for name in (READINGS, SCORES, ALERTS, DEADLETTER, NETWORK_READINGS)
            if settings.topic(name) not in existing
        ]
        if wanted:
            # Another process may create them between our list and create.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(wanted)
            log.info("created topics %s", [t.name for t in wanted])
    finally:
        admin.close()
