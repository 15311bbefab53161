"""Compose's Mosquitto: no anonymous clients, no wrong passwords, each user its own topics.

The real mosquitto binary runs deploy/mosquitto/entrypoint.sh, mosquitto.conf and
acl.conf as shipped (container paths moved to a temporary directory). Every right is
checked by delivery: a message the ACL forbids never reaches any subscriber.
"""

from __future__ import annotations

import secrets
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from .mosquitto_helpers import DEPLOY, compose_mosquitto

UP_CS = "application/7/device/a84041000181c061/event/up"
UP_TTS = "v3/city@ttn/devices/pump-7/up"
DOWN_CS = "application/7/device/a84041000181c061/command/down"
DOWN_TTS = "v3/city@ttn/devices/pump-7/down/push"


class Client:
    """A paho client that records what it receives and how its connection went."""

    def __init__(self, port: int, user: str | None, password: str | None) -> None:
        self.login = (port, user, password)
        self.received: list[tuple[str, bytes]] = []
        self.refused: str | None = None
        self._connected = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=secrets.token_hex(4))
        if user is not None:
            self._client.username_pw_set(user, password)
        self._client.on_connect = self._on_connect
        self._client.on_message = lambda c, u, m: self.received.append((m.topic, m.payload))
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        self._connected.wait(5)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.refused = str(reason_code)
        self._connected.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set() and self.refused is None

    def subscribe(self, *topics: str) -> None:
        done = threading.Event()
        self._client.on_subscribe = lambda *args: done.set()
        self._client.subscribe([(t, 1) for t in topics])
        assert done.wait(5)

    def publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1).wait_for_publish(5)

    def try_publish(self, topic: str, payload: bytes) -> None:
        """Publish from a new connection of the same user: Mosquitto 2.0 may drop the
        connection of a client that publishes where it may not."""
        other = Client(*self.login)
        info = other._client.publish(topic, payload, qos=1)
        info.wait_for_publish(2) if other._client.is_connected() else None
        time.sleep(0.1)
        other.close()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


PASSWORDS = {
    "CITYWATCH_MQTT_BRIDGE_PASSWORD": secrets.token_urlsafe(18),
    "CITYWATCH_MQTT_NETWORK_SERVER_PASSWORD": secrets.token_urlsafe(18),
}


@pytest.fixture(scope="module")
def broker():
    with compose_mosquitto(PASSWORDS) as b:
        yield b


def test_anonymous_and_wrong_passwords_are_refused(broker):
    anonymous = Client(broker.port, None, None)
    assert not anonymous.connected and anonymous.refused, "anonymous client was let in"
    anonymous.close()
    for user in ("citywatch-bridge", "network-server", "healthcheck", "admin"):
        wrong = Client(broker.port, user, "not-" + PASSWORDS["CITYWATCH_MQTT_BRIDGE_PASSWORD"])
        assert not wrong.connected, f"{user} got in with a wrong password"
        wrong.close()
    empty = Client(broker.port, "citywatch-bridge", "")
    assert not empty.connected
    empty.close()


def test_each_user_can_do_exactly_what_its_acl_allows(broker):
    bridge = Client(broker.port, "citywatch-bridge", PASSWORDS["CITYWATCH_MQTT_BRIDGE_PASSWORD"])
    network = Client(
        broker.port, "network-server", PASSWORDS["CITYWATCH_MQTT_NETWORK_SERVER_PASSWORD"]
    )
    health = Client(broker.port, "healthcheck", broker.healthcheck_password)
    clients = (bridge, network, health)
    assert all(c.connected for c in clients), [c.refused for c in clients]
    every = ("#", "$SYS/broker/uptime")
    # Everyone asks for everything; the ACL decides what each one gets.
    for client in clients:
        client.subscribe(*every)
    try:
        allowed = {
            (network, UP_CS): {bridge},
            (network, UP_TTS): {bridge},
            (bridge, DOWN_CS): {network},
            (bridge, DOWN_TTS): {network},
        }
        forbidden = [
            (bridge, UP_CS),  # a bridge cannot forge uplinks
            (network, DOWN_CS),  # nor the network server downlinks
            (bridge, "application/7/device/x/event/join"),
            (network, "citywatch/anything"),
            (health, UP_CS),
            (health, DOWN_TTS),
        ]
        sent: dict[bytes, set] = {}
        for (sender, topic), readers in allowed.items():
            payload = secrets.token_bytes(8)
            sender.publish(topic, payload)
            sent[payload] = readers
        for sender, topic in forbidden:
            payload = secrets.token_bytes(8)
            sender.try_publish(topic, payload)
            sent[payload] = set()
        deadline = time.monotonic() + 5
        want_total = sum(len(r) for r in sent.values())
        while time.monotonic() < deadline:
            got = sum(1 for c in clients for _t, p in c.received if p in sent)
            if got >= want_total:
                break
            time.sleep(0.05)
        time.sleep(0.5)  # a forbidden message would arrive about as fast as an allowed one
        for payload, readers in sent.items():
            got = {c for c in clients if any(p == payload for _t, p in c.received)}
            names = {bridge: "bridge", network: "network-server", health: "healthcheck"}
            assert got == readers, {names[c] for c in got}
        # The healthcheck reads the broker's uptime, nobody else does.
        uptime = [c for c in clients if any(t == "$SYS/broker/uptime" for t, _ in c.received)]
        assert uptime == [health]
    finally:
        for client in clients:
            client.close()


def test_a_missing_or_short_secret_stops_the_broker_without_printing_it(tmp_path):
    short = {**PASSWORDS, "CITYWATCH_MQTT_NETWORK_SERVER_PASSWORD": "tooshort"}
    result = subprocess.run(
        ["sh", str(DEPLOY / "entrypoint.sh")],
        env={"PATH": "/usr/bin:/bin:/usr/sbin", "MOSQUITTO_AUTH_DIR": str(tmp_path), **short},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 1
    assert "CITYWATCH_MQTT_NETWORK_SERVER_PASSWORD" in result.stderr
    assert "tooshort" not in result.stderr + result.stdout
    assert not (tmp_path / "passwd").exists()


def test_the_password_file_holds_hashes_only_and_is_private(broker):
    passwd = broker.directory / "auth" / "passwd"
    text = passwd.read_text()
    assert sorted(line.split(":")[0] for line in text.split()) == [
        "citywatch-bridge",
        "healthcheck",
        "network-server",
    ]
    assert all(line.split(":", 1)[1].startswith("$7$") for line in text.split())
    for secret in PASSWORDS.values():
        assert secret not in text
    assert passwd.stat().st_mode & 0o077 == 0
    assert (broker.directory / "auth" / "healthcheck").stat().st_mode & 0o077 == 0
    acl = broker.directory / "auth" / "acl.conf"
    assert acl.read_text() == (DEPLOY / "acl.conf").read_text()
    assert acl.stat().st_mode & 0o077 == 0
    # Mosquitto read both without complaint (2.0.18+ warns about loose permissions).
    assert "Warning: File" not in broker.log.read_text()
