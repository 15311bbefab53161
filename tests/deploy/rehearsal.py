"""The compose rehearsal: docker-compose.yml's citywatch services, run as the image runs them.

No Docker engine runs here, so this is the closest thing to ``docker compose up``:

- the compose file is read and interpolated like compose does (``${VAR:?}``,
  ``${VAR:-default}``), from a test ``.env`` of strong random secrets;
- each citywatch service runs its own ``command`` with its own ``environment`` and
  the Dockerfile's ``ENV``, as the image's uid (10001), in a root-owned read-only
  copy of what the Dockerfile COPYs, with its named volumes as the only writable
  directories;
- Kafka, TimescaleDB and Mosquitto are stood in for by Tansu, a PostgreSQL with
  password (SCRAM) authentication for TCP, and the real mosquitto binary running
  compose's own entrypoint, config and ACL; compose's host names map to them.

What it cannot check is listed in docs/deploy.md.
"""

from __future__ import annotations

import fnmatch
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
IMAGE_UID = 10001
#: Where the image keeps its state (the Dockerfile's CITYWATCH_HOME and VOLUME).
IMAGE_HOME = "/var/lib/citywatch"
#: Interpreters to try, in order: the test's own, then the system's Python 3.11 (the
#: test venv's interpreter may live under /root, which uid 10001 cannot enter).
PYTHONS = (str(Path(sys.executable).resolve()), "/usr/bin/python3.11")
#: The test environment's packages: what `pip install .` put in the image.
SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


class ComposeError(ValueError):
    """What `docker compose` itself would refuse (a required variable unset)."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution: ``${VAR}``, ``${VAR:-default}``, ``${VAR:?err}``
    and ``$$``. Hand-written: the reference implementation is Go (compose-go), and
    these four forms are all the compose file uses."""

    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.groups()
        value = env.get(name)
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":?", "?") and unset:
            raise ComposeError(f"required variable {name} is missing a value: {arg}")
        if op in (":-", "-") and unset:
            return arg
        return value or ""

    return _VAR.sub(one, text)


def required_secrets(text: str) -> list[str]:
    """Every variable the compose file requires (``${VAR:?...}``)."""
    return sorted({m.group(1) for m in _VAR.finditer(text) if m.group(2) == ":?"})


def load_compose(env: Mapping[str, str]) -> dict:
    """docker-compose.yml with every string interpolated from ``env``."""

    def walk(node):
        if isinstance(node, str):
            return interpolate(node, env)
        if isinstance(node, list):
            return [walk(item) for item in node]
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        return node

    # Skip profiles' services only after interpolation, like compose (it checks all).
    return walk(yaml.safe_load((REPO / "docker-compose.yml").read_text()))


def test_env() -> dict[str, str]:
    """A .env: a strong random value for every required secret (URL-safe, as documented)."""
    text = (REPO / "docker-compose.yml").read_text()
    return {name: secrets.token_urlsafe(24) for name in required_secrets(text)}


def dockerfile_env() -> dict[str, str]:
    """The Dockerfile's ``ENV`` instructions."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    found: dict[str, str] = {}
    for line in re.findall(r"^ENV\s+(.+)$", text, flags=re.M):
        found.update(re.findall(r"(\w+)=(\S+)", line))
    return found


def _ignored(relative: str, patterns: list[str]) -> bool:
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        anywhere = pattern.startswith("**/")
        pattern = pattern.removeprefix("**/")
        for prefix in prefixes:
            name = prefix.rsplit("/", 1)[-1] if anywhere else prefix
            if fnmatch.fnmatchcase(name, pattern):
                return True
    return False


def copy_build_context(target: Path) -> None:
    """``COPY . .``: the repository minus .dockerignore, root-owned and read-only."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for root, dirs, files in os.walk(REPO):
        rel_root = Path(root).relative_to(REPO).as_posix()
        rel_root = "" if rel_root == "." else rel_root + "/"
        dirs[:] = [d for d in dirs if not _ignored(rel_root + d, patterns)]
        for name in files:
            if not _ignored(rel_root + name, patterns):
                destination = target / (rel_root + name)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(root) / name, destination)
    for path in [target, *target.rglob("*")]:
        os.chown(path, 0, 0)
        path.chmod(path.stat().st_mode & ~0o222 | (0o555 if path.is_dir() else 0o444))


def image_python() -> str:
    """A Python 3.11 (the image's minor version, the packages' ABI) uid 10001 can run."""
    for candidate in PYTHONS:
        try:
            done = subprocess.run(
                [candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 11)"],
                capture_output=True,
                preexec_fn=_as_image_user,
                timeout=30,
            )
        except OSError:
            continue
        if done.returncode == 0:
            return candidate
    raise RuntimeError(f"no Python 3.11 that uid {IMAGE_UID} may run among {PYTHONS}")


def _as_image_user() -> None:  # pragma: no cover - runs in the child
    os.setgroups([])
    os.setgid(IMAGE_UID)
    os.setuid(IMAGE_UID)


@dataclass
class Sandbox:
    """The image, as far as it matters: interpreter, /app, the volumes, the user."""

    root: Path
    app: Path = field(init=False)
    home: Path = field(init=False)
    python_bin: Path = field(init=False)
    logs: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(mode=0o755)
        self.app = self.root / "app"
        self.home = self.root / "volumes"  # stands for /var/lib/citywatch and its volumes
        self.logs = self.root / "logs"
        venv = self.root / "venv"
        subprocess.run([image_python(), "-m", "venv", "--without-pip", str(venv)], check=True)
        # The project's dependencies, as `pip install .` put them in the image.
        (venv / "lib" / "python3.11" / "site-packages" / "citywatch-deps.pth").write_text(
            f"import site; site.addsitedir({str(SITE_PACKAGES)!r})\n"
        )
        self.python_bin = venv / "bin"
        probe = subprocess.run(
            [str(self.python_bin / "python"), "-c", "import faust, lightgbm, psycopg"],
            capture_output=True,
            text=True,
            preexec_fn=_as_image_user,
        )
        if probe.returncode != 0:
            raise RuntimeError(
                f"uid {IMAGE_UID} cannot import the project's packages from {SITE_PACKAGES}: "
                "every directory above them must be readable and searchable by others "
                f"(o+rx).\n{probe.stderr[-1000:]}"
            )
        copy_build_context(self.app)
        for directory in (self.home / "models", self.home / "faust"):
            directory.mkdir(parents=True)
        for path in (self.home, *self.home.rglob("*")):
            os.chown(path, IMAGE_UID, IMAGE_UID)  # the Dockerfile's chown of its volumes
        self.logs.mkdir()

    def environment(self, service_env: Mapping[str, str], hosts: Mapping[str, str]) -> dict:
        """Dockerfile ENV, then the service's environment; compose host names and the
        image's paths mapped to this machine."""
        env = {**dockerfile_env(), **{k: str(v) for k, v in service_env.items()}}
        env = {k: map_hosts(v.replace(IMAGE_HOME, str(self.home)), hosts) for k, v in env.items()}
        env["PATH"] = f"{self.python_bin}:/usr/local/bin:/usr/bin:/bin"
        env["PYTHONPATH"] = str(self.app)  # the image pip-installs /app; same files
        # The image has a passwd entry for uid 10001 (useradd citywatch); this machine
        # has none, and getpass.getuser() reads LOGNAME first.
        env["LOGNAME"] = "citywatch"
        return env

    def spawn(self, name: str, argv: list[str], env: Mapping[str, str]) -> subprocess.Popen:
        """The image's ENTRYPOINT (citywatch) with ``argv``, as uid 10001 in /app."""
        log = (self.logs / f"{name}.log").open("ab")
        # -P: like the console script, /app is not on sys.path; PYTHONPATH has it.
        return subprocess.Popen(
            [str(self.python_bin / "python"), "-P", "-m", "citywatch", *argv],
            env=dict(env),
            cwd=self.app,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_as_image_user,
        )

    def run_check(self, test: list[str], env: Mapping[str, str], timeout: float) -> tuple:
        """One compose healthcheck (``CMD`` form) inside the image: (passed, output)."""
        assert test[0] == "CMD", f"rehearsal runs CMD healthchecks only, not {test[0]}"
        try:
            done = subprocess.run(
                test[1:],
                env=dict(env),
                cwd=self.app,
                capture_output=True,
                text=True,
                timeout=timeout,
                preexec_fn=_as_image_user,
            )
        except subprocess.TimeoutExpired:
            return False, f"timed out after {timeout} s"
        return done.returncode == 0, (done.stdout + done.stderr).strip()

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def map_hosts(text: str, hosts: Mapping[str, str]) -> str:
    for compose_address, local in hosts.items():
        text = text.replace(compose_address, local)
    return text


def seconds(value: str | None, default: float) -> float:
    """A compose duration (``30s``, ``1m30s``) in seconds."""
    if not value:
        return default
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|h|m|s)", value))


def start_order(services: Mapping[str, dict]) -> list[str]:
    """Services in an order that respects depends_on (compose's own start order)."""
    order: list[str] = []

    def visit(name: str) -> None:
        for dep in services[name].get("depends_on", {}):
            visit(dep)
        if name not in order:
            order.append(name)

    for name in services:
        visit(name)
    return order


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> int | None:
    """`docker compose stop`: SIGTERM, then SIGKILL after the grace period (None then)."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        return None


@dataclass
class Postgres:
    """PostgreSQL as the timescaledb container runs it: a superuser POSTGRES_USER with
    POSTGRES_PASSWORD, database POSTGRES_DB, and password authentication over TCP."""

    port: int
    proc: subprocess.Popen

    @classmethod
    def start(cls, root: Path, user: str, password: str, database: str) -> Postgres:
        import psycopg

        from citywatch.stack import _postgres_os_user, free_port, postgres_bin_dir

        bin_dir = postgres_bin_dir()
        os_user = _postgres_os_user()
        root.mkdir(mode=0o755)
        data = root / "data"
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        if os_user:
            for path in (root, pwfile):
                shutil.chown(path, user=os_user)
        subprocess.run(
            [
                str(bin_dir / "initdb"),
                *("-D", str(data), "-U", user, "--pwfile", str(pwfile)),
                *("--auth-local=scram-sha-256", "--auth-host=scram-sha-256"),
                *("--encoding=UTF8", "--no-instructions"),
            ],
            check=True,
            capture_output=True,
            user=os_user,
        )
        pwfile.unlink()
        port = free_port()
        log = (root / "postgres.log").open("ab")
        proc = subprocess.Popen(
            [
                str(bin_dir / "postgres"),
                *("-D", str(data), "-p", str(port), "-k", str(root)),
                *("-c", "listen_addresses=127.0.0.1", "-c", "max_connections=100"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            user=os_user,
        )
        url = f"postgresql://{user}:{password}@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=2) as c:
                    c.execute(f'CREATE DATABASE "{database}"')
                return cls(port, proc)
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


def temporary_root() -> Path:
    # Not under pytest's tmp_path (mode 700 under /tmp/pytest-of-root): uid 10001 and
    # PostgreSQL's user must reach it.
    root = Path(tempfile.mkdtemp(prefix="citywatch-rehearsal-"))
    root.chmod(0o755)
    return root
