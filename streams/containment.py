"""Containment: a batch is acknowledged only when every message in it is settled.

Settled means stored, or stored as a dead letter. Two facts shape this module:

- Faust's ``take_events`` acknowledges a batch in a ``finally`` block, even when
  the body raised (faust/streams.py, ``Stream.take_events``). We therefore take
  one more reference on every message (:func:`hold`), so that acknowledgement
  only drops the count back to ours, and acknowledge ourselves (:func:`release`)
  what was settled. Faust commits the highest *contiguous* acknowledged offset
  per partition, so an unsettled message also holds back everything after it.
- One bad message must not cost the rest of its batch. A batch whose
  processing raises is split in halves until the message that raises is alone
  (:class:`Containment`); that message is tried ``attempts`` times and then
  becomes a ``poison`` dead letter with the exception. Transient failures (the
  database or the broker unavailable) are not the message's fault: the same
  batch is retried with backoff and nothing is acknowledged meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
from aiokafka.errors import KafkaError, KafkaTimeoutError
from faust.types import EventT

from storage.sinks import SinkUnavailableError

from .ordering import RefetchedEvent

log = logging.getLogger("citywatch.worker")


def is_transient(exc: BaseException) -> bool:
    """A failure of the infrastructure, not of a message: retry, never dead-letter."""
    if isinstance(exc, SinkUnavailableError | KafkaTimeoutError | ConnectionError | TimeoutError):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


Process = Callable[[Sequence[EventT]], Awaitable[None]]
OnPoison = Callable[[EventT, BaseException], Awaitable[None]]


def hold(events: Sequence[EventT]) -> None:
    """Keep ``take_events``' own acknowledgement from committing these messages."""
    for event in events:
        event.message.incref()


async def release(stream: Any, events: Sequence[EventT], consumer: Any) -> None:
    """Acknowledge settled messages: their offsets may now be committed."""
    for event in events:
        if isinstance(event, RefetchedEvent):
            consumer.ack(event.message)  # read directly (streams.ordering), not via the stream
        else:
            await stream.ack(event)


def describe(exc: BaseException, limit: int = 1500) -> str:
    """``Type: message`` and where it was raised: a dead letter's detail."""
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" at {where[0].filename.rsplit('/', 1)[-1]}:{where[0].lineno}" if where else ""
    text = f"{type(exc).__name__}: {exc}"
    return (text[:limit] + "...") if len(text) > limit else text + at


class Containment:
    """Runs a batch step so that it settles every message or holds the batch.

    Parameters
    ----------
    step : str
        Name for logs (``scoring``, ``alerting``, ``ingest dead letters``).
    stopping : callable
        True when the worker is shutting down: stop retrying, settle nothing more.
    attempts : int
        Tries of a lone message that raises before it is poison.
    """

    def __init__(self, step: str, stopping: Callable[[], bool], attempts: int = 3) -> None:
        self.step = step
        self.stopping = stopping
        self.attempts = attempts
        self.poisoned = 0

    async def run(
        self, events: Sequence[EventT], process: Process, on_poison: OnPoison
    ) -> list[EventT]:
        """Process ``events``; return the settled ones, a prefix of ``events``.

        Only a shutdown leaves a suffix unsettled; those messages stay
        unacknowledged and are delivered again after the restart.
        """
        settled: list[EventT] = []
        await self._run(list(events), process, on_poison, settled)
        return settled

    async def _run(
        self, events: list[EventT], process: Process, on_poison: OnPoison, settled: list
    ) -> bool:
        delay = 0.5
        failures = 0
        while True:
            try:
                await process(events)
                settled.extend(events)
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_transient(exc):
                    if self.stopping():
                        return False
                    log.warning("%s: %s; retrying in %.1fs", self.step, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                if len(events) > 1:
                    # Bisect: halves keep their order, so per-device state sees the
                    # same sequence; log2(batch) rounds find the message.
                    log.warning(
                        "%s: a batch of %d failed (%s); isolating the message that caused it",
                        self.step,
                        len(events),
                        describe(exc, 300),
                    )
                    half = len(events) // 2
                    return await self._run(
                        events[:half], process, on_poison, settled
                    ) and await self._run(events[half:], process, on_poison, settled)
                failures += 1
                if failures < self.attempts:
                    continue
                message = events[0].message
                log.error(
                    "%s: message %s[%d]@%d failed %d times; stored as a poison dead letter: %s",
                    self.step,
                    message.topic,
                    message.partition,
                    message.offset,
                    failures,
                    describe(exc, 300),
                )
                if not await self._settle_poison(events[0], exc, on_poison):
                    return False
                self.poisoned += 1
                settled.append(events[0])
                return True

    async def _settle_poison(self, event: EventT, exc: BaseException, on_poison: OnPoison) -> bool:
        # The dead letter must be stored before the message is acknowledged.
        # Its text is sanitised by the sink, so only an outage can stop it.
        return await retry_until_done(
            lambda: on_poison(event, exc),
            self.stopping,
            f"{self.step}: cannot store the poison dead letter yet",
        )


async def retry_until_done(
    attempt: Callable[[], Awaitable[Any]], stopping: Callable[[], bool], what: str
) -> bool:
    """Await ``attempt()`` until it succeeds (True), backing off 0.5 s doubling to 10 s;
    False once the worker is stopping. Every failure counts as an outage here."""
    delay = 0.5
    while True:
        try:
            await attempt()
            return True
        except asyncio.CancelledError:
            raise
        except Exception as err:
            if stopping():
                return False
            log.warning("%s (%s); retrying in %.1fs", what, describe(err, 300), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


@contextlib.asynccontextmanager
async def fail_fast(app: faust.App, step_name: str):
    """Stop the whole worker if containment itself fails, instead of a dead agent.

    Containment settles or holds every message, so this only catches a bug in
    it. Faust restarts a crashed agent a few times and then gives up while the
    process stays up, which looks healthy but processes nothing. Stopping lets
    the supervisor restart the worker; the held batch was never acknowledged,
    so it is delivered again.
    """
    try:
        yield
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception(
            "%s failed; stopping the worker so it restarts from committed offsets", step_name
        )
        os.kill(os.getpid(), signal.SIGTERM)
        raise
