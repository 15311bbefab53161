"""Tansu's ListOffsets fault, and the Fetch-based fix the worker relies on."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from streams.tansu import true_end_offsets

pytestmark = pytest.mark.stack


async def produce_in_batches(bootstrap: str, topic: str, batches: int, size: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for b in range(batches):
            for i in range(size):
                await producer.send(topic, f"{b}-{i}".encode(), partition=0)
            await producer.flush()
    finally:
        await producer.stop()


async def reported_end(bootstrap: str, tp: TopicPartition) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()


def test_true_end_offsets_corrects_list_offsets(conn):
    topic = f"tansu-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition(topic, 0)

    async def scenario():
        await produce_in_batches(conn.kafka, topic, batches=5, size=50)
        reported = await reported_end(conn.kafka, tp)
        fixed = await true_end_offsets(conn.kafka, {tp: reported})
        empty = await true_end_offsets(conn.kafka, {TopicPartition(topic, 1): 0})
        return reported, fixed[tp], empty

    reported, fixed, empty = asyncio.run(scenario())
    assert fixed == 250
    # The fault this works around; if Tansu fixes it, the work-around is harmless.
    assert reported <= fixed
    assert list(empty.values()) == [0]
