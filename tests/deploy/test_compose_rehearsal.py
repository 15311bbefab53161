"""`docker compose up`, rehearsed without Docker (tests/deploy/rehearsal.py says how).

One `up` starts every citywatch service of docker-compose.yml in compose's order, each
gated on its depends_on conditions; the one-shot jobs must exit 0 and every long-running
service must pass its own healthcheck. A second `up` re-runs the one-shot jobs and must
change nothing. Then the documented tool run (crew-admin), an uplink through the
authenticated Mosquitto, and `docker compose stop`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from citywatch.stack import EmbeddedStack, free_port
from core.settings import Settings

from . import rehearsal
from .mosquitto_helpers import compose_mosquitto

pytestmark = pytest.mark.stack

#: Images citywatch does not build: stood in for (kafka, timescaledb, mosquitto) or not
#: runnable here (grafana).
INFRA = {"kafka", "timescaledb", "mosquitto", "grafana"}
FIXTURES = Path(__file__).resolve().parents[1]
LONGEST_HEALTH_WAIT_S = 150.0


def _mqtt_healthy(port: int, password: str) -> bool:
    """Mosquitto's compose healthcheck (mosquitto_sub of $SYS/broker/uptime as the
    healthcheck user), with paho: mosquitto_sub is not installed here."""
    got = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.username_pw_set("healthcheck", password)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("$SYS/broker/uptime")
    client.on_message = lambda c, u, m: got.set()
    try:
        client.connect("127.0.0.1", port)
    except OSError:
        return False
    client.loop_start()
    try:
        return got.wait(5)
    finally:
        client.disconnect()
        client.loop_stop()


class ComposeRehearsal:
    """The rehearsed stack: infrastructure stand-ins, the sandbox, the processes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dotenv = rehearsal.test_env()
        self.compose = rehearsal.load_compose(self.dotenv)
        self.services: dict[str, dict] = self.compose["services"]
        self.sandbox = rehearsal.Sandbox(root / "image")
        self.procs: dict[str, subprocess.Popen] = {}
        self.outputs: dict[str, list[tuple[int, str]]] = {}
        self._ports: dict[str, dict[str, str]] = {}
        self._stack: EmbeddedStack | None = None
        self._mosquitto = None
        self.pg: rehearsal.Postgres | None = None

    # -- infrastructure ---------------------------------------------------------
    def start_infrastructure(self) -> None:
        db = self.services["timescaledb"]["environment"]
        self.owner = db["POSTGRES_USER"]
        self.pg = rehearsal.Postgres.start(
            self.root / "pg", self.owner, db["POSTGRES_PASSWORD"], db["POSTGRES_DB"]
        )
        self.owner_url = (
            f"postgresql://{self.owner}:{db['POSTGRES_PASSWORD']}"
            f"@127.0.0.1:{self.pg.port}/{db['POSTGRES_DB']}"
        )
        mosquitto_env = self.services["mosquitto"]["environment"]
        self._mosquitto = compose_mosquitto(mosquitto_env)
        self.mqtt = self._mosquitto.__enter__()
        # Tansu alone: the database and MQTT broker are the ones above.
        settings = Settings(
            home=self.root / "tansu",
            database_url=self.owner_url,
            mqtt=f"mqtt://127.0.0.1:{self.mqtt.port}",
        )
        self._stack = EmbeddedStack(settings)
        self.kafka = self._stack.up()["kafka"]["url"]
        self.hosts = {
            "kafka:9092": self.kafka,
            "timescaledb:5432": f"127.0.0.1:{self.pg.port}",
            "mosquitto:1883": f"127.0.0.1:{self.mqtt.port}",
        }

    def stop_infrastructure(self) -> None:
        if self._stack is not None:
            self._stack.down()
        if self._mosquitto is not None:
            self._mosquitto.__exit__(None, None, None)
        if self.pg is not None:
            self.pg.stop()

    # -- one service --------------------------------------------------------------
    def _published(self, name: str) -> dict[str, str]:
        """Published ports: container port -> a free loopback port (shared machine)."""
        if name not in self._ports:
            self._ports[name] = {
                spec.rsplit(":", 1)[-1]: str(free_port())
                for spec in self.services[name].get("ports", [])
            }
        return self._ports[name]

    def _hosts(self, name: str) -> dict[str, str]:
        ports = self._published(name)
        return {**self.hosts, **{f"127.0.0.1:{c}": f"127.0.0.1:{h}" for c, h in ports.items()}}

    def env(self, name: str) -> dict[str, str]:
        env = self.sandbox.environment(
            self.services[name].get("environment", {}), self._hosts(name)
        )
        # The stand-in broker is Tansu: the worker must apply its work-arounds.
        env["CITYWATCH_BROKER_FLAVOR"] = "tansu"
        return env

    def argv(self, name: str, command: list[str] | None = None) -> list[str]:
        args = [
            rehearsal.map_hosts(a, self._hosts(name))
            for a in command or self.services[name]["command"]
        ]
        ports = self._published(name)
        out = []
        for i, arg in enumerate(args):
            if i and args[i - 1] == "--port" and arg in ports:
                arg = ports[arg]
            out.append("127.0.0.1" if arg == "0.0.0.0" else arg)
        return out

    def run_once(self, name: str, command: list[str] | None = None, timeout: float = 300) -> int:
        """A one-shot job (or `docker compose run --rm`): its exit code; output kept."""
        log_name = f"{name}-{len(self.outputs.get(name, [])) + 1}"
        proc = self.sandbox.spawn(log_name, self.argv(name, command), self.env(name))
        code = proc.wait(timeout)
        self.outputs.setdefault(name, []).append((code, self.sandbox.log_tail(log_name, 20000)))
        return code

    def healthy(self, name: str) -> tuple[bool, str]:
        if name == "kafka":
            return rehearsal_port_open(self.kafka), "tansu"
        if name == "timescaledb":
            return self.pg is not None and self.pg.proc.poll() is None, "postgres"
        if name == "mosquitto":
            return _mqtt_healthy(self.mqtt.port, self.mqtt.healthcheck_password), "mosquitto"
        check = self.services[name]["healthcheck"]
        test = [rehearsal.map_hosts(a, self._hosts(name)) for a in check["test"]]
        timeout = rehearsal.seconds(check.get("timeout"), 30)
        return self.sandbox.run_check(test, self.env(name), timeout)

    def wait_healthy(self, name: str) -> None:
        check = self.services[name].get("healthcheck", {})
        budget = rehearsal.seconds(check.get("start_period"), 0) + rehearsal.seconds(
            check.get("interval"), 30
        ) * int(check.get("retries", 3))
        deadline = time.monotonic() + min(budget, LONGEST_HEALTH_WAIT_S)
        while True:
            ok, output = self.healthy(name)
            if ok:
                return
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                pytest.fail(f"{name} exited {proc.returncode}:\n{self.sandbox.log_tail(name)}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{name} never passed its healthcheck ({output}):\n"
                    f"{self.sandbox.log_tail(name)}"
                )
            time.sleep(1.0)

    # -- the whole stack ----------------------------------------------------------
    def up(self) -> None:
        """`docker compose up -d`: every service not in a profile, in compose's order."""
        done: set[str] = set()
        for name in rehearsal.start_order(self.services):
            service = self.services[name]
            if service.get("profiles"):
                continue
            for dep, spec in service.get("depends_on", {}).items():
                if spec["condition"] == "service_healthy" and dep not in done:
                    self.wait_healthy(dep)
                    done.add(dep)
                elif spec["condition"] == "service_completed_successfully":
                    assert self.outputs[dep][-1][0] == 0, dep
            if name in INFRA:
                continue
            if service.get("restart") == "no":
                code = self.run_once(name)
                assert code == 0, f"{name} exited {code}:\n{self.outputs[name][-1][1][-3000:]}"
            elif name not in self.procs or self.procs[name].poll() is not None:
                self.procs[name] = self.sandbox.spawn(name, self.argv(name), self.env(name))

    def stop(self) -> dict[str, int | None]:
        """`docker compose stop`: SIGTERM, 10 s grace, in reverse start order."""
        order = [n for n in rehearsal.start_order(self.services) if n in self.procs]
        return {name: rehearsal.stop(self.procs[name]) for name in reversed(order)}


def rehearsal_port_open(address: str) -> bool:
    from citywatch.stack import _port_open

    host, _, port = address.rpartition(":")
    return _port_open(host, int(port))


def _snapshot(url: str, models: Path) -> dict:
    """What the one-shot jobs own: schema, roles, grants, logins, models."""
    queries = {
        "migrations": "SELECT version, name, flavour FROM schema_migrations ORDER BY 1",
        "models": "SELECT version, data_sha256, file_sha256::text FROM model_registry ORDER BY 1",
        "promotions": "SELECT promotion_id, role, version, action, actor FROM model_promotions"
        " ORDER BY 1",
        "roles": "SELECT rolname, rolcanlogin, rolpassword FROM pg_authid ORDER BY 1",
        "memberships": "SELECT roleid::regrole::text, member::regrole::text FROM pg_auth_members"
        " ORDER BY 1, 2",
        "grants": "SELECT c.relname, c.relacl::text FROM pg_class c JOIN pg_namespace n"
        " ON n.oid = c.relnamespace WHERE n.nspname = 'public' ORDER BY 1",
        "devices": "SELECT count(*), count(DISTINCT device_id) FROM devices",
    }
    with psycopg.connect(url) as c:
        found = {key: c.execute(q).fetchall() for key, q in queries.items()}
    found["model_files"] = sorted(
        (str(p.relative_to(models)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in models.rglob("*")
    )
    return found


@pytest.fixture(scope="module")
def composed(base_settings):
    # base_settings first: it drops the developer's CITYWATCH_* (an inherited
    # CITYWATCH_KAFKA would make the stand-in stack skip Tansu).
    if os.geteuid() != 0:
        pytest.skip("running services as the image's uid 10001 needs root (as in CI)")
    root = rehearsal.temporary_root()
    stack = ComposeRehearsal(root)
    try:
        stack.start_infrastructure()
        started = time.monotonic()
        stack.up()
        stack.first_up_s = time.monotonic() - started
        yield stack
    finally:
        stack.stop()
        stack.stop_infrastructure()
        shutil.rmtree(root, ignore_errors=True)


def test_first_up_one_shot_jobs_exit_0_and_every_service_passes_its_healthcheck(composed):
    services = composed.services
    one_shot = {
        n for n, s in services.items() if s.get("restart") == "no" and not s.get("profiles")
    }
    assert one_shot == {"migrate", "train"}
    for name in one_shot:
        assert [code for code, _ in composed.outputs[name]] == [0]
    long_running = {
        n
        for n, s in services.items()
        if n not in INFRA and n not in one_shot and not s.get("profiles")
    }
    assert (
        long_running
        == set(composed.procs)
        == {
            "worker",
            "ingest",
            "ingest-http",
            "simulator",
            "alerts",
        }
    )
    for name in sorted(long_running):
        composed.wait_healthy(name)
        assert composed.procs[name].poll() is None, composed.sandbox.log_tail(name)
    # Every service ran as the image's user, in a /app it cannot write.
    wrote, output = composed.sandbox.run_check(
        ["CMD", "python", "-c", "open('probe', 'w')"], composed.env("worker"), 30
    )
    assert not wrote and "Permission denied" in output
    assert not list(composed.sandbox.app.rglob("*-data")), "something wrote into /app"
    # Faust's data directory is on the worker's volume.
    assert any((composed.sandbox.home / "faust").iterdir())


def test_services_log_in_as_their_own_roles(composed):
    with psycopg.connect(composed.owner_url) as c:
        users = {
            row[0]
            for row in c.execute(
                "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = 'citywatch'"
                " AND usename IS NOT NULL AND pid <> pg_backend_pid()"
            )
        }
    # The notifier, the worker and the sink hold connections; nobody else is the owner.
    assert {"worker", "alerts"} <= users, users
    assert composed.owner not in users, users


def test_a_second_up_changes_nothing(composed):
    models = composed.sandbox.home / "models"
    before = _snapshot(composed.owner_url, models)
    composed.up()
    after = _snapshot(composed.owner_url, models)
    for key in before:
        assert after[key] == before[key], key
    (m1, m2), (t1, t2) = composed.outputs["migrate"], composed.outputs["train"]
    assert m1[0] == m2[0] == 0 and t1[0] == t2[0] == 0
    assert "schema is current" in m2[1] and "logins set: none" in m2[1]
    assert "not training" in t2[1]
    assert len(before["promotions"]) == 1 and before["models"]


def test_crew_admin_creates_grafanas_webhook_token_that_the_api_accepts(composed):
    import httpx

    code = composed.run_once(
        "crew-admin", ["alerts", "user", "add", "grafana", "--role", "webhook"], timeout=60
    )
    output = composed.outputs["crew-admin"][-1][1]
    assert code == 0, output
    token = output.strip().splitlines()[-1]
    firing = json.loads((FIXTURES / "crew" / "fixtures" / "grafana_firing.json").read_text())
    port = composed._published("alerts")["8080"]
    response = httpx.post(
        f"http://127.0.0.1:{port}/api/v1/grafana/webhook",
        json=firing,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    denied = httpx.get(
        f"http://127.0.0.1:{port}/api/v1/alerts",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert denied.status_code == 403


def _ingest_deadletter(composed, dev_eui: str) -> tuple | None:
    deadline = time.monotonic() + 60
    with psycopg.connect(composed.owner_url, autocommit=True) as c:
        while time.monotonic() < deadline:
            row = c.execute(
                "SELECT reason FROM deadletters WHERE stage = 'ingest' AND device_id = %s",
                (dev_eui,),
            ).fetchone()
            if row:
                return row
            time.sleep(0.5)
    return None


def test_an_uplink_to_the_webhook_reaches_the_database(composed):
    """ingest-http (its database role) with the shared secret from .env; a wrong secret
    gets 401."""
    import httpx

    body = json.loads(
        (FIXTURES / "ingest" / "lorawan" / "fixtures" / "chirpstack_up.json").read_text()
    )
    body["deviceInfo"]["devEui"] = "00000000000000a1"
    url = f"http://127.0.0.1:{composed._published('ingest-http')['8081']}/api/v1/lorawan/chirpstack"
    secret = composed.dotenv["CITYWATCH_WEBHOOK_SECRET"]
    wrong = httpx.post(url, json=body, headers={"X-Citywatch-Secret": "x" + secret}, timeout=10)
    assert wrong.status_code == 401
    response = httpx.post(url, json=body, headers={"X-Citywatch-Secret": secret}, timeout=10)
    # The webhook's contract for an unknown device: 400 and a dead letter.
    assert response.json()["status"] == "dead_letter", response.text
    assert _ingest_deadletter(composed, "00000000000000a1") == ("unknown_device",)


def test_an_uplink_from_the_network_server_reaches_the_database(composed):
    """Through the authenticated Mosquitto, the bridge (its MQTT user and database role),
    Kafka and the worker: an unregistered device's uplink becomes an ingest dead letter."""
    payload = (FIXTURES / "ingest" / "lorawan" / "fixtures" / "chirpstack_up.json").read_bytes()
    body = json.loads(payload)
    topic = (
        f"application/{body['deviceInfo']['applicationId']}/device/"
        f"{body['deviceInfo']['devEui']}/event/up"
    )
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.username_pw_set(
        "network-server", composed.dotenv["CITYWATCH_MQTT_NETWORK_SERVER_PASSWORD"]
    )
    client.connect("127.0.0.1", composed.mqtt.port)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()
    row = _ingest_deadletter(composed, body["deviceInfo"]["devEui"])
    assert row == ("unknown_device",), composed.sandbox.log_tail("ingest")


def _permission_errors(composed) -> list[str]:
    return [
        f"{log.name}: {line.strip()}"
        for log in sorted(composed.sandbox.logs.iterdir())
        for line in log.read_text(errors="replace").splitlines()
        if "permission denied" in line.lower() or "InsufficientPrivilege" in line
    ]


def test_compose_stop_ends_every_service_within_its_grace_period(composed):
    # After everything above ran, no service hit a grant it lacks (its role's, or a
    # file's: /app is read-only) even in a warning it survived.
    assert not _permission_errors(composed)
    codes = composed.stop()
    slow = {name: code for name, code in codes.items() if code is None}
    assert not slow, f"still running after SIGTERM + 10 s: {slow}"
    assert codes["simulator"] == 0, composed.sandbox.log_tail("simulator")
