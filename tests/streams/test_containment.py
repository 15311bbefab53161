"""Containment's decisions, step by step (the real worker runs them in test_worker_containment)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import psycopg
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from storage.sinks import SinkUnavailableError
from streams.containment import Containment, is_transient


@dataclass
class FakeMessage:
    offset: int
    topic: str = "readings"
    partition: int = 0
    key: bytes = b"k"
    value: bytes = b"v"


@dataclass
class FakeEvent:
    message: FakeMessage


def events(n: int) -> list[FakeEvent]:
    return [FakeEvent(FakeMessage(i)) for i in range(n)]


def run(containment, batch, process, on_poison):
    return asyncio.run(containment.run(batch, process, on_poison))


def test_a_message_that_raises_is_isolated_and_the_rest_processed_in_order():
    processed: list[int] = []
    poisoned: list[tuple[int, str]] = []

    async def process(batch):
        offsets = [e.message.offset for e in batch]
        if 13 in offsets:
            raise ValueError("bad message 13")
        processed.extend(offsets)

    async def on_poison(event, exc):
        poisoned.append((event.message.offset, str(exc)))

    containment = Containment("test", lambda: False, attempts=3)
    settled = run(containment, events(40), process, on_poison)
    assert [e.message.offset for e in settled] == list(range(40))
    assert processed == [i for i in range(40) if i != 13]  # order kept across the halves
    assert poisoned == [(13, "bad message 13")]
    assert containment.poisoned == 1


def test_a_message_that_fails_once_is_retried_not_poisoned():
    calls = {"n": 0}

    async def process(batch):
        calls["n"] += 1
        if calls["n"] <= 2:  # the whole batch, then its first half
            raise RuntimeError("flaky")

    async def on_poison(event, exc):
        raise AssertionError("nothing is poison here")

    settled = run(Containment("test", lambda: False), events(4), process, on_poison)
    assert len(settled) == 4


def test_transient_failures_hold_the_batch_until_it_is_stored(monkeypatch):
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    failures = [SinkUnavailableError("db down"), KafkaConnectionError("broker down")]

    async def process(batch):
        if failures:
            raise failures.pop(0)

    async def on_poison(event, exc):
        raise AssertionError("an outage is not the message's fault")

    settled = run(Containment("test", lambda: False), events(5), process, on_poison)
    assert len(settled) == 5


def test_a_stop_during_an_outage_settles_nothing(monkeypatch):
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    stopping = {"now": False}

    async def process(batch):
        stopping["now"] = True
        raise SinkUnavailableError("db down")

    async def on_poison(event, exc):
        raise AssertionError

    settled = run(Containment("test", lambda: stopping["now"]), events(5), process, on_poison)
    assert settled == []


def test_what_counts_as_transient():
    assert is_transient(SinkUnavailableError("x"))
    assert is_transient(KafkaConnectionError())
    assert not is_transient(MessageSizeTooLargeError())
    assert not is_transient(psycopg.errors.UntranslatableCharacter())
    assert not is_transient(ValueError())


async def _no_sleep(_seconds):
    return None
