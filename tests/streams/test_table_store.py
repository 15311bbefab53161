"""The worker's tables on disk: a slot per worker process, and stale copies discarded."""

from __future__ import annotations

import subprocess
import sys
import uuid

import faust
import pytest
import rocksdict
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from streams.table_store import SCHEME, KeyPartitionedStore, claim_datadir, discard_stale_partitions


def test_each_process_gets_its_own_slot_and_a_killed_one_frees_it(tmp_path):
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from streams.table_store import "
            "claim_datadir; print(claim_datadir(Path(sys.argv[1])).name, flush=True); "
            "time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "slot-0"
        assert claim_datadir(tmp_path).name == "slot-1"  # slot-0 is the child's
    finally:
        child.kill()
        child.wait()
    # The kernel dropped the killed child's lock: its slot (and state) is free again.
    assert claim_datadir(tmp_path).name == "slot-0"


@pytest.mark.stack
def test_a_local_partition_ahead_of_its_changelog_is_discarded(conn, tmp_path):
    app = faust.App(f"table-check-{uuid.uuid4().hex[:8]}", store=f"{SCHEME}://", datadir=tmp_path)
    table = app.Table("device-state", partitions=2, key_type=bytes, use_partitioner=True)
    topic = table.changelog_topic.get_topic_name()
    admin = KafkaAdminClient(bootstrap_servers=conn.kafka)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=conn.kafka)
    for i in range(3):
        producer.send(topic, key=b"k", value=b"v%d" % i, partition=0)
    producer.flush()
    producer.close()

    store = table.data
    assert isinstance(store, KeyPartitionedStore)
    # Partition 0 holds offsets 0..2 and the local copy applied up to 2: kept.
    # Partition 1's changelog is empty, but a local copy claims offset 7: discarded.
    for partition, offset in ((0, 2), (1, 7)):
        store.partition_path(partition).parent.mkdir(parents=True, exist_ok=True)
        db = rocksdict.Rdict(str(store.partition_path(partition)))
        db[KeyPartitionedStore.offset_key] = str(offset).encode()
        db.close()

    removed = discard_stale_partitions(app, conn.kafka, tansu=conn.tansu)
    assert removed == [str(store.partition_path(1))]
    assert store.partition_path(0).exists() and not store.partition_path(1).exists()
