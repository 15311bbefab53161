"""How long a message waits in the broker, by the consumer's fetch_max_wait_ms.

Run against the embedded stack (`citywatch stack up`):
    python scripts/tansu_fetch_wait.py
It prints p50/p90/max send-to-receipt seconds for 1500 ms (Faust's fixed value)
and 100 ms (what streams/tansu.py sets for Tansu).
"""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from citywatch.runtime import connect
from core.settings import Settings

MESSAGES = 40


async def probe(bootstrap: str, topic: str, wait_ms: int) -> list[float]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, fetch_max_wait_ms=wait_ms, auto_offset_reset="latest"
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await consumer.start()
    await producer.start()
    await asyncio.sleep(1.0)
    waits: list[float] = []

    async def receive() -> None:
        async for message in consumer:
            waits.append(time.time() - float(message.value))
            if len(waits) >= MESSAGES:
                return

    receiving = asyncio.create_task(receive())
    await asyncio.sleep(0.5)
    for _ in range(MESSAGES):
        await producer.send_and_wait(topic, str(time.time()).encode())
        await asyncio.sleep(0.05)
    await asyncio.wait_for(receiving, 60)
    await producer.stop()
    await consumer.stop()
    return sorted(waits)


def main() -> None:
    bootstrap = connect(Settings(), start_embedded=False).kafka
    topic = f"fetch-wait-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    admin.close()
    for wait_ms in (1500, 100):
        w = asyncio.run(probe(bootstrap, topic, wait_ms))
        print(
            f"fetch_max_wait_ms={wait_ms:5d}: p50 {w[len(w) // 2]:.3f} s, "
            f"p90 {w[int(len(w) * 0.9)]:.3f} s, max {w[-1]:.3f} s"
        )


if __name__ == "__main__":
    main()
