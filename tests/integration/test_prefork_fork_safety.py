"""A prefork worker that adopted a big dead store still spills in its pool children.

LevelDB is not fork-safe: once a process's LevelDB flushed or compacted, a
child forked from it hangs at its second memtable switch (~8 MB written: the
flush the first one scheduled never runs) or when closing the store.
Before the fix the worker's *main* process adopted and drained dead producers'
stores at ``worker_ready``; every pool child forked after that (here: the one
replacing a child after ``--max-tasks-per-child 1``) hung the first time it
spilled more than ~8 MB during an outage (measured: the test timed out).  Now pool children adopt
(``worker_process_init``) and the main process never opens a spill store.

Real redis, real ``celery worker --pool prefork``, every message counted.
"""

from __future__ import annotations

import json

import pytest

from celery_durable.transport.naming import broker_dir_name
from tests.helpers.processes import python
from tests.helpers.wait import wait_for

from .conftest import Cluster

pytestmark = pytest.mark.integration

DEAD_RECORDS = 20_000  # x 1,000 bytes: a 20 MB store, many tables and compactions
BURST = 120  # subtasks x ~100 KB: ~12 MB spilled in the pool child, 3 memtables
PAD = 100_000

# The dead producer's memtable never switched (a big write buffer, as a store
# of a fork-tainted process has): its 20 MB are all in the log, so whoever
# adopts it writes several level-0 tables while recovering it and LevelDB
# schedules a compaction there, starting its background thread in that process.
WRITER = f"""
import sys
import plyvel
_DB = plyvel.DB
plyvel.DB = lambda *a, **k: _DB(*a, **{{**k, "write_buffer_size": 256 << 20}})
from celery_durable.spill import SpillRecord, SpillStore
with SpillStore(sys.argv[1]) as store:  # closed, not destroyed: its owner is gone
    for b in range({DEAD_RECORDS // 100}):
        store.extend([
            SpillRecord(body=b"%d|" % (b * 100 + i) + b"p" * 1000, exchange="",
                        routing_key="deadq")
            for i in range(100)
        ])
"""


def test_pool_child_forked_after_adoption_spills_12mb_without_hanging(cluster: Cluster) -> None:
    store = (
        cluster.durable_dir / "spill" / broker_dir_name(cluster.broker.url)
        / "deadhost-4242-0badf00d"
    )  # fmt: skip
    script = cluster.tmp_path / "dead_writer.py"
    script.write_text(WRITER)
    writer = python(script, str(store), log=cluster.tmp_path / "dead_writer.log")
    assert writer.wait(120) == 0, writer.output()

    worker = cluster.worker(
        "--pool=prefork", "--concurrency=1", "--max-tasks-per-child=1",
        "--without-mingle", "--without-gossip", "--without-heartbeat",
    )  # fmt: skip
    broker = cluster.broker.client()
    wait_for(
        lambda: broker.llen("deadq") >= DEAD_RECORDS,
        timeout=120,
        message=lambda: f"the dead store drained; worker log:\n{worker.output()[-3000:]}",
    )
    wait_for(lambda: not store.exists(), timeout=30, message="the drained dead store deleted")

    app = cluster.app()
    app.send_task("durable_app.add", (1, 1))  # the first child exits after it
    app.send_task("durable_app.spawn_big", ("a", BURST, PAD))
    results = cluster.results.client()
    # spawn_big runs in a child forked after the adoption, before the outage.
    wait_for(
        lambda: results.llen("started") == 1,
        timeout=60,
        message=lambda: f"spawn_big started; worker log:\n{worker.output()[-3000:]}",
    )
    cluster.broker.stop()
    results.set("go", 1)
    wait_for(
        lambda: results.llen("spawned") == 1,
        timeout=60,
        message=lambda: (
            f"the child spilled {BURST} x {PAD} bytes (before the fix it hung); "
            f"worker log:\n{worker.output()[-3000:]}"
        ),
    )
    name, pid = results.lrange("spawned", 0, -1)[0].decode().split(":")

    cluster.broker.start()
    broker = cluster.broker.client()
    wait_for(
        lambda: broker.llen("burst") >= BURST,
        timeout=120,
        message=lambda: (
            f"{BURST} subtasks in redis, {broker.llen('burst')} there; "
            f"worker log:\n{worker.output()[-3000:]}"
        ),
    )
    ids = {json.loads(raw)["headers"]["id"] for raw in broker.lrange("burst", 0, -1)}
    assert len(ids) == BURST  # every subtask, once
    assert name == "a" and int(pid) != worker.pid
    assert "forked from a process whose LevelDB" not in worker.output()
    assert "Traceback" not in worker.output(), worker.output()[-3000:]
    app.close()
