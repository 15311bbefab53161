"""A local webhook receiver that records what it gets (benchmark and tests).

It stands in for a crew's chat or paging system on loopback; it is a real
HTTP server, so the notifier's HTTP path is exercised end to end.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    """Records ``(monotonic receipt time, path, headers, JSON body)``; can fail on purpose."""

    def __init__(self, port: int, fail_first: int = 0) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.received: list[tuple[float, str, dict[str, str], Any]] = []
        self.fail_first = fail_first
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"null")
                with receiver._cond:
                    if receiver.fail_first > 0:
                        receiver.fail_first -= 1
                        self.send_response(503)
                        self.end_headers()
                        return
                    receiver.received.append(
                        (time.monotonic(), self.path, dict(self.headers), body)
                    )
                    receiver._cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def wait_for(self, predicate, timeout: float = 10.0) -> tuple[float, str, dict, Any] | None:
        """The first recorded request matching ``predicate(path, body)``, waiting for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for item in self.received:
                    if predicate(item[1], item[3]):
                        return item
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
