"""The bridge over mqtts:// with a password, against a real Mosquitto that refuses anonymous
clients and speaks only TLS; credentials never reach a log."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr

from citywatch.stack import _port_open, free_port, mosquitto_binary
from ingest.lorawan.bridge import MqttBridge, UplinkProcessor, default_client_id
from ingest.lorawan.dedup import FrameDeduplicator
from ingest.lorawan.mqtt_conn import parse_mqtt_url
from ingest.lorawan.publisher import KafkaPublisher
from ingest.lorawan.uplink_sim import UplinkEncoder
from tests.ingest.conftest import read_topic
from tests.ingest.lorawan.test_bridge import fleet, frames, registry, run_until, topics  # noqa: F401

pytestmark = pytest.mark.stack

PASSWORD = "s3cret-Bridge-pass"


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_broker():
    """Mosquitto on a free port: TLS only, a password file, no anonymous clients."""
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto is not installed")
    # Not under pytest's tmp (mode 700): run as root, Mosquitto drops to its own user
    # before it reads the password file.
    d = Path(tempfile.mkdtemp(prefix="citywatch-mqtt-tls-"))
    d.chmod(0o755)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=citywatch test CA", "-keyout", "ca.key", "-out", "ca.crt", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt",
             cwd=d)  # fmt: skip
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(d / "passwd"), "bridge", PASSWORD],
        check=True,
        capture_output=True,
    )
    for path in d.iterdir():
        path.chmod(0o644)
    port = free_port()
    (d / "mosquitto.conf").write_text(
        "\n".join(
            [
                f"listener {port} 127.0.0.1",
                "allow_anonymous false",
                f"password_file {d / 'passwd'}",
                f"cafile {d / 'ca.crt'}",
                f"certfile {d / 'server.crt'}",
                f"keyfile {d / 'server.key'}",
                "persistence false",
                "log_dest stdout",
                "",
            ]
        )
    )
    log = open(d / "mosquitto.log", "wb")  # noqa: SIM115 - the broker writes it until the end
    proc = subprocess.Popen([str(binary), "-c", str(d / "mosquitto.conf")], stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while not _port_open("127.0.0.1", port) and time.monotonic() < deadline:
        time.sleep(0.05)
    yield port, d / "ca.crt"
    proc.terminate()
    proc.wait(10)
    log.close()
    shutil.rmtree(d, ignore_errors=True)


def _connects(target, client_id: str) -> bool:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    target.configure(client)
    result = {}
    client.on_connect = lambda c, u, f, rc, p: result.setdefault("rc", rc)
    try:
        client.connect(target.host, target.port)
    except OSError:  # TLS handshake refused
        return False
    client.loop_start()
    deadline = time.monotonic() + 5
    while "rc" not in result and time.monotonic() < deadline:
        time.sleep(0.02)
    client.disconnect()
    client.loop_stop()
    return "rc" in result and not result["rc"].is_failure


def test_the_broker_refuses_anonymous_and_wrong_passwords(tls_broker):
    port, ca = tls_broker
    base = parse_mqtt_url(f"mqtts://127.0.0.1:{port}").with_credentials(ca_file=ca)
    assert not _connects(base, "anon")
    assert not _connects(base.with_credentials("bridge", SecretStr("wrong")), "wrong")
    assert _connects(base.with_credentials("bridge", SecretStr(PASSWORD)), "right")
    # Without our CA the server's certificate is refused: verification is always on.
    assert not _connects(parse_mqtt_url(f"mqtts://bridge:{PASSWORD}@127.0.0.1:{port}"), "noca")


def test_the_bridge_publishes_over_tls_and_never_logs_the_password(
    tls_broker,
    conn,
    topics,  # noqa: F811
    fleet,  # noqa: F811
    registry,  # noqa: F811
    caplog,
):
    port, ca = tls_broker
    readings_topic, dl_topic = topics
    target = parse_mqtt_url(f"mqtts://bridge:{PASSWORD}@127.0.0.1:{port}").with_credentials(
        ca_file=ca
    )
    assert PASSWORD not in target.redacted and PASSWORD not in repr(target)
    client_id = default_client_id("test-tls")
    publisher = KafkaPublisher(conn.kafka, readings_topic, dl_topic)
    processor = UplinkProcessor(publisher, dict(registry), dedup=FrameDeduplicator(window_s=0.1))
    caplog.set_level(logging.DEBUG)
    bridge = MqttBridge(target, "chirpstack", processor, client_id=client_id)
    assert bridge.start(), "subscribed over TLS"
    encoder = UplinkEncoder("chirpstack", registry, gateways=1, application_id="app", seed=8)
    batches = frames(fleet, encoder, ticks=2)
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=default_client_id("tls-pub"))
    target.configure(sender)
    sender.connect(target.host, target.port)
    sender.loop_start()
    for copies in batches:
        for message in copies:
            sender.publish(message.topic, message.payload, qos=1).wait_for_publish(10)
    sender.disconnect()
    sender.loop_stop()
    try:
        run_until(bridge, lambda: processor.stats.acked >= len(batches))
    finally:
        bridge.stop()
    assert processor.stats.published == len(batches)
    stored = read_topic(conn.kafka, readings_topic, len(batches))
    publisher.close()
    assert len(stored) == len(batches)
    assert all(json.loads(r.value)["source"]["kind"] == "lorawan" for r in stored)
    assert PASSWORD not in caplog.text


def test_the_cli_logs_the_url_without_its_password(tls_broker, conn, base_settings, tmp_path):
    port, ca = tls_broker
    env = {
        **os.environ,
        "CITYWATCH_KAFKA": conn.kafka,
        "CITYWATCH_DATABASE_URL": conn.database_url,
        "CITYWATCH_HOME": str(base_settings.home),
        "CITYWATCH_MQTT_PASSWORD": PASSWORD,
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "citywatch",
            "ingest",
            "lorawan",
            "--format",
            "chirpstack",
            "--mqtt",
            f"mqtts://bridge@127.0.0.1:{port}",
            "--mqtt-ca",
            str(ca),
            "--duration",
            "1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-2000:]
    assert f"mqtts://bridge:***@127.0.0.1:{port}" in output
    assert "not subscribed yet" not in output  # the password from the environment worked
    assert PASSWORD not in output
