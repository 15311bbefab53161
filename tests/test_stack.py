"""`citywatch stack up/status/down` with its own home: leaves no process behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYWATCH_")}
    env["CITYWATCH_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "citywatch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(")")[-1].split()[0] != "Z"


def test_up_status_down():
    home = Path(tempfile.mkdtemp(prefix="citywatch-stack-"))
    home.chmod(0o755)
    try:
        up = json.loads(cli(home, "stack", "up", "--json").stdout)
        assert up["kafka"]["running"] and up["postgres"]["running"]
        assert up["kafka"]["url"].startswith("127.0.0.1:")
        assert up["postgres"]["url"].startswith("postgresql://citywatch@127.0.0.1:")
        again = json.loads(cli(home, "stack", "up", "--json").stdout)
        assert again["kafka"]["pid"] == up["kafka"]["pid"], "up is idempotent"
        status = json.loads(cli(home, "stack", "status", "--json").stdout)
        assert status["postgres"]["url"] == up["postgres"]["url"]
        pids = [up["kafka"]["pid"], up["postgres"]["pid"]]
        children = subprocess.run(
            ["pgrep", "-g", str(os.getpgid(up["postgres"]["pid"]))], capture_output=True, text=True
        ).stdout.split()
        cli(home, "stack", "down")
        leftovers = [int(p) for p in pids + children if alive(int(p))]
        assert leftovers == []
        assert json.loads(cli(home, "stack", "status", "--json").stdout) == {}
    finally:
        cli(home, "stack", "down")
        shutil.rmtree(home, ignore_errors=True)


def test_external_services_start_nothing():
    home = Path(tempfile.mkdtemp(prefix="citywatch-ext-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYWATCH_")}
    env.update(
        CITYWATCH_HOME=str(home),
        CITYWATCH_KAFKA="broker.example:9092",
        CITYWATCH_DATABASE_URL="postgresql://u@db.example/x",
    )
    out = subprocess.run(
        [sys.executable, "-m", "citywatch", "stack", "up", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    status = json.loads(out.stdout)
    assert status["kafka"] == {**status["kafka"], "external": True, "pid": None}
    assert status["postgres"]["external"] and status["postgres"]["pid"] is None
    assert not (home / "stack.json").exists()
    shutil.rmtree(home, ignore_errors=True)
