"""``citywatch bench ingest``: the LoRaWAN bridge against a bare MQTT subscriber, one run.

Both read the same pre-published uplinks from the same Mosquitto: the messages
are queued for two persistent sessions (the bridge's and a bare paho
subscriber's) before either connects, so neither waits for a publisher. The
raw figure is the broker-to-Python receive rate; the bridge figure adds JSON
parsing, codec decoding, de-duplication, Kafka produce with acks and the MQTT
acks sent only after Kafka confirmed. Then the worker stores the readings and
we count frames stored more than once.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import click
import psycopg
from tqdm import tqdm

from citywatch.runtime import connect
from core.settings import Settings
from services.processes import start_worker, stop_process, wait_for_log


def _persistent_client(client_id: str):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 65_535
    return client, props


def raw_receive_rate(url: str, client_id: str, expected: int, timeout_s: float = 300) -> float:
    """Connect a bare paho subscriber to its queued session; messages/s until all arrived."""
    from ingest.lorawan.bridge import parse_mqtt_url

    target = parse_mqtt_url(url)
    host, port = target.host, target.port
    client, props = _persistent_client(client_id)
    got = [0]
    done = threading.Event()

    def on_message(c, u, m) -> None:
        got[0] += 1
        if got[0] >= expected:
            done.set()

    client.on_message = on_message
    start = time.perf_counter()
    client.connect(host, port, clean_start=False, properties=props)
    client.loop_start()
    finished = done.wait(timeout_s)
    elapsed = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    if not finished:
        raise click.ClickException(f"raw subscriber got {got[0]} of {expected} messages")
    return expected / elapsed


def create_session(url: str, client_id: str, topic_filter: str) -> None:
    """Create a persistent session subscribed to ``topic_filter``, then leave."""
    from ingest.lorawan.bridge import parse_mqtt_url

    target = parse_mqtt_url(url)
    host, port = target.host, target.port
    client, props = _persistent_client(client_id)
    subscribed = threading.Event()
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, *a: c.subscribe(topic_filter, qos=1)
    client.connect(host, port, clean_start=False, properties=props)
    client.loop_start()
    if not subscribed.wait(10):
        raise click.ClickException(f"could not subscribe on {url}")
    client.disconnect()
    client.loop_stop()


@click.command("ingest")
@click.option(
    "--messages",
    envvar="CITYWATCH_BENCH_MESSAGES",
    type=int,
    default=15_000,
    show_default=True,
    help="MQTT messages (frame copies) per round.",
)
@click.option(
    "--devices", envvar="CITYWATCH_BENCH_DEVICES", type=int, default=200, show_default=True
)
@click.option(
    "--gateways",
    envvar="CITYWATCH_BENCH_GATEWAYS",
    type=int,
    default=3,
    show_default=True,
    help="Copies of each frame (one per gateway): the duplicates to remove.",
)
@click.option(
    "--format",
    "fmt",
    envvar="CITYWATCH_BENCH_FORMAT",
    type=click.Choice(["chirpstack", "tts"]),
    default="chirpstack",
    show_default=True,
)
@click.option("--mqtt", "mqtt_url", envvar="CITYWATCH_MQTT", default=None, help="mqtt://host:port")
@click.option(
    "--rounds",
    envvar="CITYWATCH_BENCH_ROUNDS",
    type=int,
    default=3,
    show_default=True,
    help="Alternating raw/bridge measurements; medians are reported.",
)
@click.option(
    "--no-store",
    is_flag=True,
    help="Skip the worker and PostgreSQL stage (duplicates_stored is then null).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.pass_obj
def bench_ingest(
    settings: Settings, messages, devices, gateways, fmt, mqtt_url, rounds, no_store, as_json
) -> None:
    """LoRaWAN bridge uplinks/s against a bare MQTT subscriber on the same broker.

    Prints decode_publish_per_s (uplink messages/s parsed, decoded,
    de-duplicated, published to Kafka with acks, then MQTT-acked),
    raw_mqtt_receive_per_s (a bare paho subscriber on the same broker and
    messages) and duplicates_stored (frames stored more than once after the
    worker wrote the multi-gateway burst to PostgreSQL; must be 0).
    """
    from citywatch.stack import EmbeddedStack
    from ingest.lorawan.bridge import TOPIC_FILTERS
    from ingest.lorawan.mqtt_out import UplinkPublisher
    from ingest.lorawan.publisher import KafkaPublisher
    from ingest.lorawan.uplink_sim import UplinkEncoder
    from ingest.simulator import FleetSimulator
    from services.fleet import register_lorawan_devices
    from streams.topics import DEADLETTER, READINGS, ensure_topics

    run_id = uuid.uuid4().hex[:8]
    settings = settings.model_copy(
        update={"topic_prefix": f"bench-{run_id}-", "app_id": f"citywatch-bench-{run_id}"}
    )
    conn = connect(settings)
    mqtt_url = mqtt_url or EmbeddedStack(settings).mqtt_url()
    if not mqtt_url:
        raise click.ClickException("no MQTT broker: install mosquitto or pass --mqtt")
    ensure_topics(conn.kafka, settings)

    # The uplinks: a fleet's readings as network-server JSON, `gateways` copies per frame.
    fleet = FleetSimulator(n_devices=devices, seed=21)
    registry = register_lorawan_devices(conn.database_url, fleet.devices, seed=21)
    encoder = UplinkEncoder(fmt, registry, gateways=gateways, application_id=f"bench-{run_id}")
    publisher = KafkaPublisher(conn.kafka, settings.topic(READINGS), settings.topic(DEADLETTER))
    dev_euis = sorted(d.device_id for d in fleet.devices)
    totals: Counter[str] = Counter()
    raw_rates, bridge_rates = [], []
    # Rounds alternate raw and bridge so both see the same background load
    # (2 shared cores); the medians are reported, every round is listed.
    for round_no in range(rounds):
        frames: list[tuple[str, dict, datetime]] = []
        while len(frames) * gateways < messages:
            readings, _ = fleet.step(datetime.now(UTC))
            frames += [(r.device.device_id, r.metrics, r.ts) for r in readings]
        raw_id, bridge_id = f"bench-raw-{run_id}-{round_no}", f"bench-bridge-{run_id}-{round_no}"
        for client_id in (raw_id, bridge_id):
            create_session(mqtt_url, client_id, TOPIC_FILTERS[fmt])
        sender = UplinkPublisher(mqtt_url, encoder, client_id=f"bench-pub-{run_id}")
        for dev_eui, metrics, ts in tqdm(
            frames,
            desc=f"publishing {round_no + 1}/{rounds}",
            disable=None if not as_json else True,
            unit="frame",
        ):
            sender.publish_reading(dev_eui, metrics, ts)
        sender.close()
        total = sender.messages
        raw_rates.append(raw_receive_rate(mqtt_url, raw_id, total))
        stats, elapsed = _bridge_round(
            mqtt_url, fmt, publisher, registry, bridge_id, total, as_json
        )
        bridge_rates.append(total / elapsed)
        totals.update(
            messages=total,
            frames=len(frames),
            readings_published=stats.published,
            duplicates_removed=stats.duplicates,
            deadletters=sum(stats.deadletters.values()),
        )
    publisher.close()

    figures: dict = {
        **totals,
        "gateways": gateways,
        "format": fmt,
        "rounds": rounds,
        "decode_publish_per_s": round(statistics.median(bridge_rates), 1),
        "raw_mqtt_receive_per_s": round(statistics.median(raw_rates), 1),
        "decode_publish_per_s_rounds": [round(r, 1) for r in bridge_rates],
        "raw_mqtt_receive_per_s_rounds": [round(r, 1) for r in raw_rates],
        "duplicates_stored": None,
        "readings_stored": None,
    }
    figures["decode_vs_raw"] = round(
        figures["decode_publish_per_s"] / figures["raw_mqtt_receive_per_s"], 3
    )
    if not no_store:
        figures.update(
            _store_and_count(settings, conn, dev_euis, totals["readings_published"], as_json)
        )
    if as_json:
        click.echo(json.dumps(figures, indent=2))
    else:
        click.echo(
            f"bridge decode+publish : {figures['decode_publish_per_s']:>10,.0f} uplinks/s\n"
            f"raw MQTT receive      : {figures['raw_mqtt_receive_per_s']:>10,.0f} msg/s\n"
            f"ratio                 : {figures['decode_vs_raw']:.2f} (must be >= 0.5)\n"
            f"duplicates removed    : {figures['duplicates_removed']}\n"
            f"duplicates stored     : {figures['duplicates_stored']}"
        )


def _bridge_round(mqtt_url, fmt, publisher, registry, client_id, total, quiet):
    """Connect a bridge to its queued session; run until every message is acked."""
    from ingest.lorawan.bridge import MqttBridge, UplinkProcessor
    from ingest.lorawan.dedup import FrameDeduplicator

    processor = UplinkProcessor(publisher, dict(registry), dedup=FrameDeduplicator(window_s=0.2))
    bridge = MqttBridge(mqtt_url, fmt, processor, client_id=client_id)
    start = time.perf_counter()
    bridge.start()
    deadline = time.monotonic() + 600
    with tqdm(total=total, desc="bridge", disable=None if not quiet else True, unit="msg") as bar:
        while processor.stats.acked < total and time.monotonic() < deadline:
            if not bridge.step():
                time.sleep(0.005)
            bar.update(processor.stats.acked - bar.n)
    elapsed = time.perf_counter() - start
    bridge.stop()
    if processor.stats.acked < total:
        raise click.ClickException(f"bridge acked {processor.stats.acked} of {total} messages")
    return processor.stats, elapsed


_DUPLICATE_FRAMES = """
    SELECT count(*) FROM (
        SELECT device_id, source->>'f_cnt' FROM readings
        WHERE device_id = ANY(%s) AND source->>'kind' = 'lorawan'
        GROUP BY 1, 2 HAVING count(*) > 1
    ) AS repeated
"""


def _store_and_count(settings: Settings, conn, dev_euis: list[str], published: int, quiet: bool):
    """Run the worker over the bench topic; count frames stored more than once."""
    from models.bundle_store import load_champion
    from services.training import train_synthetic

    if load_champion(settings.models_path) is None:
        train_synthetic(settings, progress=not quiet)
    with psycopg.connect(conn.database_url, autocommit=True) as db:
        db.execute("DELETE FROM readings WHERE device_id = ANY(%s)", (dev_euis,))
    log_path = settings.home.resolve() / f"bench-ingest-worker-{settings.app_id}.log"
    worker = start_worker(settings, conn, log_path)
    stored = 0
    try:
        wait_for_log(log_path, "Worker ready", worker, timeout_s=120)
        deadline = time.monotonic() + 300
        with psycopg.connect(conn.database_url, autocommit=True) as db:
            while time.monotonic() < deadline:
                stored = db.execute(
                    "SELECT count(*) FROM readings WHERE device_id = ANY(%s)", (dev_euis,)
                ).fetchone()[0]
                if stored >= published:
                    break
                time.sleep(0.5)
            # A little longer: a duplicate would arrive after the originals.
            time.sleep(2 * settings.batch_within_s + 1.0)
            stored = db.execute(
                "SELECT count(*) FROM readings WHERE device_id = ANY(%s)", (dev_euis,)
            ).fetchone()[0]
            repeated = db.execute(_DUPLICATE_FRAMES, (dev_euis,)).fetchone()[0]
    finally:
        stop_process(worker)
    return {"duplicates_stored": repeated, "readings_stored": stored}
