"""``citywatch bench faults``: every hostile input class through a running worker.

Each class gets its own registered devices: good readings before, the class's
hostile messages (``ingest.hostile``), good readings after, all keyed by
device. Then, per class, from the tables alone: readings and maintenance
events of its devices, dead letters of its offsets (by reason), good readings
left unscored, and worker exits. ``lost = sent - stored - dead letters`` must
be 0, and so must restarts. ``tests/streams/test_worker_hostile.py`` runs the
same plan through the same accounting.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import click
import psycopg

from core.settings import Settings
from ingest.hostile import CLASSES, STORED, Hostile, HostileClass, Template, good_value
from ingest.hostile import make_devices as hostile_devices
from services.processes import start_worker, stop_process, wait_for_log

STOPPING = "stopping the worker"  # what the worker logs when a bug stops it


@dataclass
class Plan:
    """One class's messages, in sending order, and what each should become."""

    name: str
    devices: list[dict]
    messages: list[tuple[bytes | None, bytes | None, Hostile | None]]  # None = good reading
    good: set[tuple[str, datetime]] = field(default_factory=set)  # (device_id, ts)


@dataclass
class Outcome:
    name: str
    sent: int
    stored: int
    deadletters: dict[str, int]
    lost: int
    restarts: int
    unscored: int
    unexpected: list[str]  # "note: got X, expected {..}"

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.restarts == 0 and not self.unexpected and not self.unscored


def plan_class(
    cls: HostileClass,
    rng: random.Random,
    tag: str,
    now: datetime,
    *,
    cases: int = 1,
    good_before: int = 50,
    good_after: int = 50,
) -> Plan:
    """Good readings, ``cases`` rounds of the class's messages, good readings again.

    Timestamps: good readings from now - 2 h at one per device-second; each case
    gets a 60 s slot after them (its variants use ts + k s); the readings after
    start past every slot, so all must still be scored.
    """
    devices = hostile_devices(tag, 4)
    base = (now - timedelta(hours=2)).replace(microsecond=0)
    plan = Plan(cls.name, devices, [])

    def good(i: int, start: datetime) -> None:
        d = devices[i % len(devices)]
        ts = start + timedelta(seconds=i // len(devices))
        doc = {
            "device_id": d["device_id"],
            "asset_id": d["asset_id"],
            "asset_type": d["asset_type"],
            "ts": ts.isoformat(),
            "metrics": good_value(rng, d["asset_type"]),
            "source": {"kind": "bench-faults", "seq": i},
        }
        plan.messages.append((d["device_id"].encode(), json.dumps(doc).encode(), None))
        plan.good.add((d["device_id"], ts))

    for i in range(good_before):
        good(i, base)
    slots = base + timedelta(seconds=good_before)
    for case in range(cases):
        d = devices[case % len(devices)]
        t = Template(
            d["device_id"],
            d["asset_id"],
            d["asset_type"],
            slots + timedelta(seconds=60 * case),
            good_value(rng, d["asset_type"]),
        )
        plan.messages += [(h.key, h.value, h) for h in cls.make(rng, t, now)]
    after = slots + timedelta(seconds=60 * cases + 60)
    for i in range(good_after):
        good(i, after)
    return plan


def send(producer, topic: str, plan: Plan) -> list[tuple[int, int]]:
    """Produce the plan in order; (partition, offset) of each message."""
    futures = [producer.send(topic, key=k, value=v) for k, v, _ in plan.messages]
    producer.flush()
    return [(m.partition, m.offset) for m in (f.get(timeout=60) for f in futures)]


def settled(database_url: str, plan: Plan, topic: str, offsets) -> tuple[int, dict]:
    """Rows of this plan so far: (readings + maintenance events, {(p, o): reason})."""
    ids = [d["device_id"] for d in plan.devices]
    parts, offs = zip(*offsets, strict=True)
    with psycopg.connect(database_url) as db:
        stored = db.execute(
            "SELECT (SELECT count(*) FROM readings WHERE device_id = ANY(%(ids)s))"
            " + (SELECT count(*) FROM maintenance_events WHERE device_id = ANY(%(ids)s))",
            {"ids": ids},
        ).fetchone()[0]
        dead = db.execute(
            "SELECT source_partition, source_offset, reason FROM deadletters"
            " WHERE source_topic = %s AND (source_partition, source_offset) IN"
            " (SELECT * FROM unnest(%s::int[], %s::bigint[]))",
            (topic, list(parts), list(offs)),
        ).fetchall()
    return stored, {(p, o): r for p, o, r in dead}


def account(
    database_url: str,
    plan: Plan,
    topic: str,
    offsets: list[tuple[int, int]],
    *,
    restarts: int,
) -> Outcome:
    stored, dead = settled(database_url, plan, topic, offsets)
    # Not a dead letter: stored when the counts add up, otherwise stored or lost.
    settled_all = stored + len(dead) == len(plan.messages)
    unexpected = []
    for (_k, _v, hostile), where in zip(plan.messages, offsets, strict=True):
        got = dead.get(where, STORED if settled_all else "no dead letter (stored or lost)")
        expected = hostile.expected if hostile else {STORED}
        if where not in dead and not settled_all and STORED in expected:
            continue  # stored or lost: ``lost`` counts it, this message may be fine
        if got not in expected:
            note = hostile.note if hostile else "good reading"
            wanted = " or ".join(sorted(expected))
            unexpected.append(f"{note or 'message'} at {where}: got {got}, expected {wanted}")
    with psycopg.connect(database_url) as db:
        scored = {
            (d, ts)
            for d, ts in db.execute(
                "SELECT device_id, ts FROM scores WHERE role = 'champion' AND device_id = ANY(%s)",
                ([d["device_id"] for d in plan.devices],),
            ).fetchall()
        }
    return Outcome(
        name=plan.name,
        sent=len(plan.messages),
        stored=stored,
        deadletters=dict(Counter(dead.values()).most_common()),
        lost=len(plan.messages) - stored - len(dead),
        restarts=restarts,
        unscored=len(plan.good - scored),
        unexpected=unexpected,
    )


def wait_settled(
    database_url: str,
    plan: Plan,
    topic: str,
    offsets,
    *,
    timeout_s: float,
    alive: Callable[[], bool],
) -> None:
    """Until every message of the plan has a row, the timeout, or the worker is gone."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        stored, dead = settled(database_url, plan, topic, offsets)
        if stored + len(dead) >= len(plan.messages):
            return
        time.sleep(0.3)


class SupervisedWorker:
    """The worker as a supervisor runs it: restarted when it exits, exits counted."""

    def __init__(self, settings: Settings, conn, log_path) -> None:
        self.settings, self.conn, self.log_path = settings, conn, log_path
        self.proc = None
        self.exits = 0

    def start(self) -> None:
        self.proc = start_worker(self.settings, self.conn, self.log_path)
        wait_for_log(self.log_path, "Worker ready", self.proc, timeout_s=120)

    def check(self) -> bool:
        """True while the same process runs; restarts it (and counts) when it exited."""
        if self.proc.poll() is None:
            return True
        self.exits += 1
        offset = self.log_path.stat().st_size
        self.proc = start_worker(self.settings, self.conn, self.log_path)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.proc.poll() is None:
            if "Worker ready" in self.log_path.read_bytes()[offset:].decode(errors="replace"):
                break
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


@click.command("faults")
@click.option(
    "--per-class",
    envvar="CITYWATCH_BENCH_PER_CLASS",
    type=int,
    default=2,
    show_default=True,
    help="Rounds of each class's messages (each round covers all its variants).",
)
@click.option("--good", type=int, default=50, show_default=True, help="Good readings before/after.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--timeout", "timeout_s", type=float, default=60.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.pass_obj
def bench_faults(
    settings: Settings, per_class: int, good: int, seed: int, timeout_s: float, as_json: bool
) -> None:
    """Every hostile input class, between good readings, through one running worker.

    Per class: sent, stored (readings + maintenance events), dead letters by
    reason, lost (sent - stored - dead letters), restarts (worker exits),
    unscored good readings and messages with an unexpected outcome. Exits
    non-zero when anything was lost, unscored or unexpected, or the worker
    restarted.
    """
    from kafka import KafkaProducer

    from citywatch.runtime import bench_run
    from storage.sinks import register_devices
    from streams.topics import READINGS

    settings, conn, run_id = bench_run(settings, progress=not as_json)
    topic = settings.topic(READINGS)
    rng = random.Random(seed)

    from tqdm import tqdm

    # Every device registered before the worker starts: its directory reloads at most
    # once a second, so a device registered just before its first reading may be unknown.
    tags = [f"fa{run_id}{i:02x}" for i in range(len(CLASSES))]
    for tag in tags:
        register_devices(conn.database_url, hostile_devices(tag, 4))
    log_path = settings.home.resolve() / f"bench-faults-{run_id}.log"
    worker = SupervisedWorker(settings, conn, log_path)
    worker.start()
    producer = KafkaProducer(
        bootstrap_servers=conn.kafka, acks="all", linger_ms=5, max_request_size=1_000_000
    )
    outcomes: list[Outcome] = []

    def supervise() -> bool:
        # A restarted worker may still store the class: keep waiting until the timeout.
        worker.check()
        return True

    try:
        for i, cls in enumerate(
            tqdm(CLASSES, desc="classes", disable=True if as_json else None, unit="class")
        ):
            # Planned just in time: the mute attack's forged ts is relative to now.
            plan = plan_class(
                cls,
                rng,
                tags[i],
                datetime.now(UTC),
                cases=per_class,
                good_before=good,
                good_after=good,
            )
            exits, log_at = worker.exits, log_path.stat().st_size
            offsets = send(producer, topic, plan)
            wait_settled(
                conn.database_url, plan, topic, offsets, timeout_s=timeout_s, alive=supervise
            )
            worker.check()
            stops = log_path.read_bytes()[log_at:].decode(errors="replace").count(STOPPING)
            restarts = max(worker.exits - exits, stops)
            outcomes.append(account(conn.database_url, plan, topic, offsets, restarts=restarts))
    finally:
        producer.close()
        worker.stop()

    if as_json:
        click.echo(json.dumps([asdict(o) | {"ok": o.ok} for o in outcomes], indent=2))
    else:
        click.echo(
            f"{'class':<18} {'sent':>5} {'stored':>6} {'dead':>5} {'lost':>5} {'restarts':>8}"
            f" {'unscored':>8}  dead letters by reason"
        )
        for o in outcomes:
            reasons = ", ".join(f"{r}={n}" for r, n in o.deadletters.items())
            click.echo(
                f"{o.name:<18} {o.sent:>5} {o.stored:>6} {sum(o.deadletters.values()):>5}"
                f" {o.lost:>5} {o.restarts:>8} {o.unscored:>8}  {reasons}"
            )
            for line in o.unexpected[:5]:
                click.echo(f"    unexpected: {line}")
    if not all(o.ok for o in outcomes):
        raise SystemExit(1)
