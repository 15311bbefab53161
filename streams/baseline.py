"""The benchmark baselines: Faust agents that do none of the worker's work.

Run as ``python -m streams.baseline BOOTSTRAP TOPIC N RESULT_FILE [OPTIONS]``,
OPTIONS being ``--batch=SIZE:WITHIN``, optionally followed by ``--io=PARTITIONS``
and ``--state=BYTES``.
It writes ``{"messages": m, "seconds": t}``. The caller stops the process once
the file exists: an agent that stops its own app waits on itself.

Without ``--batch``, the trivial agent: ``async for`` over the stream, counting
(``m`` = N, first to N-th message). With ``--batch``, the floor of the worker's
batch path: ``take_events(SIZE, within=WITHIN)``, ``json.loads`` of every value
(the worker parses every reading), and take_events' own acknowledgement of each
event after the batch; from the first message to the last full batch (``m``
its messages), since a short last batch only waits out ``within``. With
``--io=PARTITIONS`` as well, the I/O floor: each batch is also stored and its
scores published the way the worker must (``streams.baseline_io``); with
``--state=BYTES``, each device's state of that size also goes to a Faust table.
"""

from __future__ import annotations

import json
import sys
import time
import uuid

import faust

from core.files import write_text_atomic

from .tansu import install_faust_fetch_wait_fix, install_faust_highwater_fix


def parse_batch(arg: str) -> tuple[int, float]:
    """``--batch=500:0.5`` -> ``(500, 0.5)``."""
    size, _, within = arg.removeprefix("--batch=").partition(":")
    return int(size), float(within or 0.5)


def _option(args: list[str], prefix: str) -> int:
    """``--io=4`` -> 4 for prefix ``--io=``; 0 when absent."""
    return next((int(a.removeprefix(prefix)) for a in args if a.startswith(prefix)), 0)


def _write(result_file: str, messages: int, seconds: float, **counts: int) -> None:
    # Atomic: the bench polls for the file and reads it as soon as it exists.
    doc = {"messages": messages, "seconds": seconds, **counts}
    write_text_atomic(result_file, json.dumps(doc))


def main() -> None:
    bootstrap, topic_name, expected, result_file = (
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        sys.argv[4],
    )
    batch = parse_batch(sys.argv[5]) if len(sys.argv) > 5 else None
    io = _option(sys.argv[6:], "--io=")
    state_bytes = _option(sys.argv[6:], "--state=")
    # The worker's own consumer settings on Tansu, so the ratio compares like with like.
    install_faust_highwater_fix(bootstrap)
    install_faust_fetch_wait_fix()
    extra = {} if batch is None else {"stream_buffer_maxsize": 8 * batch[0]}  # as the worker
    app = faust.App(
        f"baseline-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        **extra,
    )
    topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")
    state = {"count": 0, "first": None}
    floor = None
    if io:
        from .baseline_io import IOFloor, create_scores_topic

        create_scores_topic(bootstrap, f"{topic_name}-io-floor-scores", io)
        floor = IOFloor(app, f"{topic_name}-io-floor-scores", io, state_bytes)

    async def count(stream):
        async for _ in stream:
            if state["first"] is None:
                state["first"] = time.perf_counter()
            state["count"] += 1
            if state["count"] >= expected:
                _write(result_file, state["count"], time.perf_counter() - state["first"])

    async def count_batches(stream):
        size, within = batch

        def stamp(value):  # runs as each message enters take_events' buffer
            if state["first"] is None:
                state["first"] = time.perf_counter()
            return value

        stream.add_processor(stamp)
        full = (0, 0.0)  # messages through the last full batch, and when it was yielded
        async for events in stream.take_events(size, within=within):
            parsed = [json.loads(event.value) for event in events]
            if floor is not None:
                await floor.handle(parsed)
            state["count"] += len(events)
            done = state["count"] >= expected
            if floor is not None and done:
                await floor.settle()  # the clock stops once the last batch is stored
            now = time.perf_counter() - state["first"]
            if len(events) >= size:
                full = (state["count"], now)
            if done:
                # A short last batch waited ``within`` for messages that never
                # come: the clock stops at the last full batch when there is one.
                messages, seconds = full if full[0] else (state["count"], now)
                counts = {}
                if floor is not None:
                    counts = {"stored": floor.stored, "published": floor.published}
                _write(result_file, messages, seconds, **counts)

    app.agent(topic, name="count")(count if batch is None else count_batches)
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
