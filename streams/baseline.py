"""The benchmark baseline: a trivial Faust agent that only counts messages.

Run as ``python -m streams.baseline BOOTSTRAP TOPIC N RESULT_FILE``; it writes
``{"messages": N, "seconds": t}`` (first to N-th message). The caller stops the
process once the file exists: an agent that stops its own app waits on itself.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

import faust

from .tansu import install_faust_fetch_wait_fix, install_faust_highwater_fix


def main() -> None:
    bootstrap, topic_name, expected, result_file = (
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        sys.argv[4],
    )
    # The worker's own consumer settings on Tansu, so the ratio compares like with like.
    install_faust_highwater_fix(bootstrap)
    install_faust_fetch_wait_fix()
    app = faust.App(
        f"baseline-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
    )
    topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")
    state = {"count": 0, "first": None}

    @app.agent(topic)
    async def count(stream):
        async for _ in stream:
            if state["first"] is None:
                state["first"] = time.perf_counter()
            state["count"] += 1
            if state["count"] >= expected:
                elapsed = time.perf_counter() - state["first"]
                tmp = result_file + ".tmp"
                with open(tmp, "w") as fh:
                    json.dump({"messages": state["count"], "seconds": elapsed}, fh)
                os.replace(tmp, result_file)

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
