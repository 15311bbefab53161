"""`stack up` starts Mosquitto when installed; `status` shows it; `down` stops it."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from citywatch.stack import mosquitto_binary
from tests.test_stack import alive, cli

pytestmark = pytest.mark.stack


@pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")
def test_stack_runs_and_stops_mosquitto() -> None:
    home = Path(tempfile.mkdtemp(prefix="citywatch-mqtt-"))
    home.chmod(0o755)
    try:
        up = json.loads(cli(home, "stack", "up", "--json").stdout)
        mqtt = up["mqtt"]
        assert mqtt["running"] and mqtt["url"].startswith("mqtt://127.0.0.1:")
        config = (home / "mosquitto.conf").read_text()
        assert "127.0.0.1" in config and "max_inflight_messages 0" in config
        status = json.loads(cli(home, "stack", "status", "--json").stdout)
        assert status["mqtt"]["pid"] == mqtt["pid"]
        cli(home, "stack", "down")
        assert not alive(mqtt["pid"])
    finally:
        cli(home, "stack", "down")
        shutil.rmtree(home, ignore_errors=True)
