"""docker-compose.yml and Dockerfile, checked statically (no Docker engine on this machine).

What `docker compose up` would trip over, or start in the wrong order: missing
services, floating images, long-running services without healthchecks,
dependencies that are missing or not gated on health, undeclared volumes,
mount paths that are not the contracted ones, commands the CLI does not have,
default secrets, services connecting as the database owner, an anonymous Mosquitto.
tests/test_compose_commands.py runs their commands against the test stack, and
tests/deploy/test_compose_rehearsal.py rehearses the services themselves.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
import yaml

from citywatch.cli import main

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
CONTRACT = {
    *("kafka", "timescaledb", "grafana", "mosquitto"),
    *("worker", "ingest", "simulator", "alerts"),
}
# Services in a profile (crew-admin: `docker compose run`) are not started by `up`.
TOOLS = {name for name, s in SERVICES.items() if s.get("profiles")}
ONE_SHOT = {name for name, s in SERVICES.items() if s.get("restart") == "no"} - TOOLS
CITYWATCH = {name for name, s in SERVICES.items() if s.get("image", "").startswith("citywatch:")}
PINNED = re.compile(r"^[\w./-]+:(?!latest$)[\w][\w.-]*$")


def test_every_contracted_service_is_present():
    assert set(SERVICES) >= CONTRACT
    assert {"worker", "ingest", "simulator", "alerts"} <= CITYWATCH
    assert {"migrate", "train"} == ONE_SHOT


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_image_is_pinned(name):
    image = SERVICES[name].get("image")
    assert image, f"{name} has no image"
    assert PINNED.match(image), f"{name}: {image!r} is not pinned to a tag"
    if name in CITYWATCH:
        assert SERVICES[name].get("build") == ".", "the citywatch image is built from Dockerfile"


@pytest.mark.parametrize("name", sorted(set(SERVICES) - ONE_SHOT - TOOLS))
def test_long_running_service_has_a_healthcheck_and_restarts(name):
    service = SERVICES[name]
    check = service.get("healthcheck", {})
    assert check.get("test"), f"{name} has no healthcheck"
    assert check["test"][0] in ("CMD", "CMD-SHELL")
    assert not check.get("disable")
    assert service.get("restart") == "unless-stopped"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_dependencies_exist_and_are_gated(name):
    depends = SERVICES[name].get("depends_on", {})
    assert isinstance(depends, dict), f"{name}: use the long depends_on form with conditions"
    for dep, spec in depends.items():
        assert dep in SERVICES, f"{name} depends on unknown service {dep}"
        expected = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
        assert spec.get("condition") == expected, f"{name} -> {dep}"


def test_start_order_has_no_cycle_and_puts_migrations_first():
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...] = ()) -> None:
        assert name not in path, f"dependency cycle: {' -> '.join((*path, name))}"
        for dep in SERVICES[name].get("depends_on", {}):
            visit(dep, (*path, name))
        if name not in order:
            order.append(name)

    for name in SERVICES:
        visit(name)
    for name in CITYWATCH - {"migrate"}:
        assert order.index("migrate") < order.index(name)
    assert order.index("train") < order.index("worker")


def test_citywatch_services_point_at_the_compose_kafka_and_database():
    for name in CITYWATCH:
        env = SERVICES[name]["environment"]
        assert env["CITYWATCH_KAFKA"] == "kafka:9092"
        url = env["CITYWATCH_DATABASE_URL"]
        assert url.startswith("postgresql://") and "@timescaledb:5432/citywatch" in url
    kafka_env = SERVICES["kafka"]["environment"]
    assert "controller" in kafka_env["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert kafka_env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert SERVICES["timescaledb"]["image"].startswith("timescale/timescaledb:")
    assert SERVICES["grafana"]["image"].startswith("grafana/grafana:11.6.")


def test_ports_are_the_contracted_ones():
    published = {
        name: {p.rsplit(":", 1)[-1] for p in s.get("ports", [])} for name, s in SERVICES.items()
    }
    assert "8080" in published["alerts"]
    assert "8081" in published["ingest-http"]
    assert "3000" in published["grafana"]
    assert SERVICES["alerts"]["command"][-1] == "8080"
    assert SERVICES["ingest-http"]["command"][-1] == "8081"


def mounts(name: str) -> list[tuple[str, str]]:
    out = []
    for volume in SERVICES[name].get("volumes", []):
        source, target = volume.split(":")[:2]
        out.append((source, target))
    return out


def test_named_volumes_are_declared_and_bind_mounts_exist():
    declared = set(COMPOSE.get("volumes", {}))
    used = set()
    for name in SERVICES:
        for source, _target in mounts(name):
            if source.startswith("./"):
                if not source.startswith("./dashboards/"):  # D2's files, checked below
                    assert (REPO / source).exists(), f"{name}: {source} missing"
            else:
                assert source in declared, f"{name}: volume {source} not declared"
                used.add(source)
    assert used == declared, "declared but unused volumes"


def test_grafana_mounts_the_contracted_provisioning_paths():
    grafana = dict(mounts("grafana"))
    assert grafana["./dashboards/provisioning"] == "/etc/grafana/provisioning"
    assert grafana["./dashboards/json"] == "/var/lib/grafana/dashboards"


def test_grafana_provisioning_files_are_in_the_tree():
    provisioning = REPO / "dashboards" / "provisioning"
    if not provisioning.exists():
        pytest.skip("dashboards/provisioning is written by the dashboards issue (D2), not here yet")
    for sub in ("datasources", "dashboards"):
        assert (provisioning / sub).is_dir(), f"dashboards/provisioning/{sub} missing"
    assert (REPO / "dashboards" / "json").is_dir()
    # Grafana expands $VAR / ${VAR} in provisioning files: each must be in its environment.
    env = SERVICES["grafana"]["environment"]
    for path in provisioning.rglob("*.y*ml"):
        for var in re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", path.read_text()):
            assert var in env, f"{path.relative_to(REPO)} reads ${var}, not set for grafana"


def _resolve(args: list[str]) -> click.Command | None:
    command: click.Command = main
    for arg in args:
        if arg.startswith("-"):
            break
        if not isinstance(command, click.Group):
            break
        command = command.commands.get(arg)
        if command is None:
            return None
    return command


@pytest.mark.parametrize("name", sorted(CITYWATCH))
def test_command_exists_in_the_cli(name):
    args = SERVICES[name]["command"]
    command = _resolve(args)
    assert command is not None, f"{name}: `citywatch {' '.join(args)}` does not exist"
    known = {opt for p in command.params for opt in getattr(p, "opts", [])}
    for arg in args:
        if arg.startswith("--"):
            assert arg in known, f"{name}: {arg} is not an option of {command.name}"


def test_healthcheck_module_runs_in_the_image():
    from citywatch import healthcheck

    assert healthcheck.main(["tcp", "127.0.0.1:1"]) == 1
    assert healthcheck.main(["nonsense"]) == 2
    for name in CITYWATCH - ONE_SHOT - TOOLS:
        test = SERVICES[name]["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python", "-m", "citywatch.healthcheck"]


def test_dockerfile_is_pinned_and_runs_the_cli_unprivileged():
    text = (REPO / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert bases and all(PINNED.match(b) for b in bases), bases
    assert 'ENTRYPOINT ["citywatch"]' in text
    assert re.search(r"^USER\s+citywatch", text, flags=re.M)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".git", ".citywatch"} <= set(ignored)


def test_mosquitto_limits_match_the_embedded_broker():
    """Both Mosquitto configs cap payloads at the same size, far above the bridge's limit."""
    from citywatch.stack import MQTT_MESSAGE_SIZE_LIMIT, mosquitto_config
    from ingest.lorawan.uplink import MAX_MESSAGE_BYTES

    def settings(text: str) -> dict[str, str]:
        lines = (line.split(None, 1) for line in text.splitlines() if line and line[0] != "#")
        return {parts[0]: parts[1].strip() for parts in lines if len(parts) == 2}

    deployed = settings((REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text())
    embedded = settings(mosquitto_config(1883))
    for config in (deployed, embedded):
        assert int(config["message_size_limit"]) == MQTT_MESSAGE_SIZE_LIMIT
        assert config["max_inflight_messages"] == config["max_queued_messages"] == "0"
    assert MQTT_MESSAGE_SIZE_LIMIT >= 32 * MAX_MESSAGE_BYTES


# -- issue M: compose that comes up on the first try ------------------------------


def test_faust_datadir_is_under_home_not_the_working_directory(tmp_path, monkeypatch):
    """Faust's default datadir is `{id}-data` in the CWD: /app, read-only for uid 10001."""
    from core.settings import Settings
    from streams.app import create_app

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    settings = Settings(home=tmp_path / "home", app_id="compose-datadir-test")
    app = create_app(settings, "127.0.0.1:1", "postgresql:///unused", tansu=False)
    assert Path(app.conf.datadir).resolve() == (tmp_path / "home" / "faust").resolve()
    assert not any(cwd.iterdir()), "create_app wrote into the working directory"
    explicit = Settings(home=tmp_path / "home", faust_datadir=tmp_path / "elsewhere")
    assert explicit.faust_path == tmp_path / "elsewhere"


def test_worker_has_a_writable_volume_for_its_faust_datadir():
    worker = SERVICES["worker"]
    home = worker["environment"]["CITYWATCH_HOME"]
    datadir = worker["environment"].get("CITYWATCH_FAUST_DATADIR", f"{home}/faust")
    targets = {target for source, target in mounts("worker") if not source.startswith("./")}
    assert any(datadir == t or datadir.startswith(t + "/") for t in targets), (
        f"no named volume holds the worker's Faust datadir {datadir}"
    )
    text = (REPO / "Dockerfile").read_text()
    assert "chown -R citywatch /var/lib/citywatch" in text  # volumes inherit image ownership
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"*-data/", ".citywatch/"} <= set(ignored)


def test_database_healthcheck_checks_tcp_not_the_socket():
    test = " ".join(SERVICES["timescaledb"]["healthcheck"]["test"])
    assert re.search(r"pg_isready .*-h (127\.0\.0\.1|localhost)", test), test


def test_grafana_alert_rules_and_dashboards_share_one_folder_in_either_order():
    """Grafana 11 file-provisions alert rules before dashboards, and a rule group names
    its folder by title only (no UID field; grafana/grafana#125079). So the dashboard
    provider must name the same title and no folderUid: both then find-or-create the
    folder by title, whichever runs first."""
    provisioning = REPO / "dashboards" / "provisioning"
    providers = yaml.safe_load((provisioning / "dashboards" / "citywatch.yaml").read_text())
    rules = yaml.safe_load((provisioning / "alerting" / "rules.yaml").read_text())
    rule_folders = {group["folder"] for group in rules["groups"]}
    assert len(rule_folders) == 1
    for provider in providers["providers"]:
        assert provider["folder"] in rule_folders
        assert not provider.get("folderUid"), "a folderUid misses the rules' random-UID folder"
    for group in rules["groups"]:
        assert not {"folderUid", "folderUID"} & set(group), "not read by file provisioning"


def test_every_service_waits_for_what_it_opens_at_start():
    """Kafka healthy for each Kafka client; migrations finished for each database user."""
    kafka_clients = {"worker", "ingest", "ingest-http", "simulator", "alerts"}
    assert {"crew-admin"} == TOOLS
    for name in kafka_clients:
        assert SERVICES[name]["depends_on"]["kafka"] == {"condition": "service_healthy"}, name
    for name in (CITYWATCH | {"grafana"}) - {"migrate"}:
        assert SERVICES[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }, name
    assert SERVICES["migrate"]["depends_on"]["timescaledb"] == {"condition": "service_healthy"}


def test_compose_has_no_default_secret_and_every_secret_is_in_env_example():
    """Every ${VAR} that holds a secret stops `up` when unset; .env.example lists each."""
    text = (REPO / "docker-compose.yml").read_text() + "".join(
        path.read_text() for path in sorted((REPO / "deploy").rglob("*.sh"))
    )
    secret = re.compile(r"\$\{([A-Z_]*(?:PASSWORD|SECRET|TOKEN)[A-Z_]*)(:?[-?])?([^}]*)\}")
    found = secret.findall(text)
    assert found, "the compose file reads its secrets from the environment"
    for name, op, value in found:
        # ${VAR:?message} refuses to start without it; ${VAR:-} may only default to empty.
        # A bare ${VAR} would start with an empty secret: it needs :? too.
        assert op == ":?" or (op == ":-" and value == ""), f"{name}: ${{{name}{op or ''}...}}"
    example = (REPO / ".env.example").read_text()
    listed = set(re.findall(r"^([A-Z_]+)=", example, flags=re.MULTILINE))
    assert {name for name, _, _ in found} <= listed
    assert all(line.endswith("=") for line in example.splitlines() if re.match(r"^[A-Z_]+=", line))
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".env" in ignored and ".env" in (REPO / ".gitignore").read_text().split()


# -- issue M: least privilege and an authenticated Mosquitto ------------------------


def _db_user(name: str) -> str:
    url = SERVICES[name]["environment"]["CITYWATCH_DATABASE_URL"]
    return re.match(r"postgresql://([^:@/]+):\$\{", url).group(1)


def test_only_the_migration_job_connects_as_the_owner():
    from storage.service_roles import LOGINS

    owner = SERVICES["timescaledb"]["environment"]["POSTGRES_USER"]
    users = {name: _db_user(name) for name in CITYWATCH}
    assert users.pop("migrate") == owner
    assert owner not in users.values(), users
    expected = {
        "train": "trainer",
        "worker": "worker",
        "ingest": "ingest",
        "ingest-http": "ingest",
        "simulator": "simulator",
        "alerts": "alerts",
        "crew-admin": "crew_admin",
    }
    assert users == expected
    assert set(users.values()) | {"grafana"} == set(LOGINS)
    assert SERVICES["grafana"]["environment"]["CITYWATCH_GRAFANA_DB_USER"] == "grafana"
    # The x-citywatch anchor has no database URL: a new service must choose its login.
    assert "CITYWATCH_DATABASE_URL" not in COMPOSE["x-citywatch"]["environment"]
    # The migrate job gets every login's password, and creates the logins from them.
    migrate_env = SERVICES["migrate"]["environment"]
    for login in LOGINS:
        assert f"CITYWATCH_{login.upper()}_DB_PASSWORD" in migrate_env, login
    # Each service's password is the one the migrate job sets for that login.
    for name, login in expected.items():
        url = SERVICES[name]["environment"]["CITYWATCH_DATABASE_URL"]
        assert f"${{CITYWATCH_{login.upper()}_DB_PASSWORD:?" in url, name
    # Nothing in compose copies the embedded stack's trust authentication.
    text = (REPO / "docker-compose.yml").read_text()
    assert "trust" not in text.lower() and "POSTGRES_HOST_AUTH_METHOD" not in text


def test_mosquitto_requires_a_password_file_and_acls_built_from_secrets():
    conf = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    lines = {
        line.split(None, 1)[0]: line.split(None, 1)[1]
        for line in conf.splitlines()
        if line and not line.startswith("#")
    }
    assert lines["allow_anonymous"] == "false"
    assert lines["password_file"] == "/mosquitto/auth/passwd"
    assert lines["acl_file"] == "/mosquitto/auth/acl.conf"  # the entrypoint's private copy
    mosquitto = SERVICES["mosquitto"]
    assert mosquitto["entrypoint"] == ["/bin/sh", "/mosquitto/config/entrypoint.sh"]
    targets = dict(mounts("mosquitto"))
    assert targets["./deploy/mosquitto/acl.conf"] == "/mosquitto/config/acl.conf"
    assert targets["./deploy/mosquitto/entrypoint.sh"] == "/mosquitto/config/entrypoint.sh"
    assert "/mosquitto/auth" in mosquitto["tmpfs"]
    assert (
        'acl="${MOSQUITTO_ACL:-/mosquitto/config/acl.conf}"'
        in (REPO / "deploy" / "mosquitto" / "entrypoint.sh").read_text()
    )
    assert not list((REPO / "deploy").rglob("passwd*")), "a password file is never shipped"
    entry = (REPO / "deploy" / "mosquitto" / "entrypoint.sh").read_text()
    for var in mosquitto["environment"]:
        assert f"require {var} " in entry, f"the entrypoint does not check {var}"
    health = " ".join(mosquitto["healthcheck"]["test"])
    assert "-u healthcheck" in health and "/mosquitto/auth/healthcheck" in health
    ingest = SERVICES["ingest"]["environment"]
    assert ingest["CITYWATCH_MQTT_USERNAME"] == "citywatch-bridge"
    assert "CITYWATCH_MQTT_BRIDGE_PASSWORD:?" in ingest["CITYWATCH_MQTT_PASSWORD"]
    acl_users = re.findall(r"^user (\S+)$", (REPO / "deploy/mosquitto/acl.conf").read_text(), re.M)
    assert acl_users == ["citywatch-bridge", "network-server", "healthcheck"]
