"""Start compose's Mosquitto outside a container: the shipped files, paths rewritten.

deploy/mosquitto/entrypoint.sh builds the password file and starts the real mosquitto
binary with deploy/mosquitto/mosquitto.conf and acl.conf; only the listener, the
container paths and the persistence directory change (a loopback port, a temporary
directory). Used by the ACL test and the compose rehearsal.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from citywatch.stack import _port_open, free_port, mosquitto_binary

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "mosquitto"


@dataclass(frozen=True)
class Broker:
    port: int
    directory: Path
    log: Path

    @property
    def healthcheck_password(self) -> str:
        return (self.directory / "auth" / "healthcheck").read_text()


def shipped_config(port: int, directory: Path) -> str:
    """deploy/mosquitto/mosquitto.conf with container paths moved under ``directory``."""
    text = (DEPLOY / "mosquitto.conf").read_text()
    replacements = {
        r"^listener 1883 0\.0\.0\.0$": f"listener {port} 127.0.0.1",
        r"^password_file /mosquitto/auth/passwd$": f"password_file {directory}/auth/passwd",
        r"^acl_file /mosquitto/auth/acl\.conf$": f"acl_file {directory}/auth/acl.conf",
        r"^persistence_location /mosquitto/data/$": f"persistence_location {directory}/data/",
    }
    for pattern, new in replacements.items():
        text, count = re.subn(pattern, new, text, flags=re.M)
        assert count == 1, f"deploy/mosquitto/mosquitto.conf no longer has {pattern}"
    return text


@contextmanager
def compose_mosquitto(passwords: dict[str, str]) -> Iterator[Broker]:
    """Run deploy/mosquitto/entrypoint.sh with these env secrets; yield the broker."""
    if mosquitto_binary() is None or shutil.which("mosquitto_passwd") is None:
        import pytest

        pytest.skip("mosquitto is not installed")
    # Mosquitto drops to its own user when started as root: it must reach these files.
    directory = Path(tempfile.mkdtemp(prefix="citywatch-mosquitto-"))
    directory.chmod(0o755)
    (directory / "data").mkdir()
    if os.geteuid() == 0:
        shutil.chown(directory / "data", user="mosquitto")
    port = free_port()
    config = directory / "mosquitto.conf"
    config.write_text(shipped_config(port, directory))
    log = directory / "mosquitto.log"
    env = {
        "PATH": f"{Path(mosquitto_binary()).parent}:{os.environ['PATH']}",
        "MOSQUITTO_AUTH_DIR": str(directory / "auth"),
        "MOSQUITTO_CONFIG": str(config),
        "MOSQUITTO_ACL": str(DEPLOY / "acl.conf"),
        **passwords,
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["sh", str(DEPLOY / "entrypoint.sh")], env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 15
        while not _port_open("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield Broker(port, directory, log)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)
