"""Restore end to end: real redis-server, ``celery worker`` and ``celery beat``."""

from __future__ import annotations

import itertools
import json
import socket
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from celery_durable.dlq.base import DumpEntry
from celery_durable.dlq.history import HISTORY_HEADER

from .restore_support import RestoreHarness, flaky_dump

pytestmark = pytest.mark.integration


def test_thousand_dumped_tasks_succeed_after_the_fix(h: RestoreHarness) -> None:
    h.conf["durable_restore_batch"] = 400  # three beat ticks' worth
    h.worker("w1@%h", "work,durable-restore", "-c", "2")
    ids = h.send("restore_app.flaky", 1000)
    h.wait(lambda: len(h.dumps()) == 1000, 180, "1000 dumps")
    assert {e.task_id for e in h.dumps()} == set(ids)
    assert not h.runs()

    h.state.set("fixed", 1)
    h.beat()
    h.wait(lambda: len(h.runs()) == 1000, 180, "1000 restored tasks to succeed")
    h.wait(lambda: not h.dumps(), 30, "the dump store to empty")
    runs = h.runs()
    assert set(runs) == set(ids)  # the original task ids
    assert set(runs.values()) == {1}


def test_full_queue_gets_nothing_until_it_drains(h: RestoreHarness) -> None:
    h.conf.update(durable_restore_queue_capacity=10, durable_restore_allow_rate=0.5)  # limit 5
    slow = [str(uuid.uuid4()) for _ in range(8)]
    fast = [str(uuid.uuid4()) for _ in range(8)]
    store = h.store()
    store.write([flaky_dump(t, "slow") for t in slow] + [flaky_dump(t, "fast") for t in fast])
    store.close()
    h.send("restore_app.noop", 20, queue="slow")  # held above the allow rate
    h.state.set("fixed", 1)
    h.worker("w1@%h", "fast,durable-restore")
    h.beat()

    h.wait(lambda: set(fast) <= set(h.runs()), 60, "the other queue to be restored")
    seen = h.restore_runs()
    h.wait(lambda: h.restore_runs() >= seen + 3, 60, "three more restore runs")
    assert h.broker.llen("slow") == 20  # nothing published to the full queue
    assert {e.task_id for e in h.dumps()} == set(slow)

    h.worker("w2@%h", "slow")  # drains it
    h.wait(lambda: set(slow) <= set(h.runs()), 60, "the drained queue to be restored")
    h.wait(lambda: not h.dumps(), 30, "the dump store to empty")


def test_always_failing_task_is_restored_max_attempts_times_then_parked(
    h: RestoreHarness,
) -> None:
    h.conf["durable_restore_max_attempts"] = 3
    h.every = 0.25
    h.worker("w1@%h", "work,durable-restore")
    h.beat()
    [tid] = h.send("restore_app.always_fails", 1)

    def parked() -> bool:
        return [e.restores for e in h.dumps() if e.task_id == tid] == [3]

    h.wait(parked, 90, "the dump to be parked after 3 restores")
    key = f"attempts:{tid}"
    attempts = [json.loads(raw) for raw in h.state.lrange(key, 0, -1)]
    assert [restores for _, restores in attempts] == [0, 1, 2, 3]
    times = [t for t, _ in attempts]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for n, gap in enumerate(gaps):
        assert gap >= 0.5 * 2**n, gaps  # backoff * 2**restores
    assert gaps[0] < gaps[2], gaps  # growing, with room for a slow beat tick

    seen = h.restore_runs()
    h.wait(lambda: h.restore_runs() >= seen + 4, 60, "four more restore runs")
    assert h.state.llen(key) == 4  # never restored automatically again

    rc, out = h.cli("dlq", "ls", "--parked")
    assert rc == 0, out
    line = next(line for line in out.splitlines() if tid in line)
    assert "PARKED" in line
    assert "1 parked" in out


def test_one_beat_tick_restores_every_hosts_file_store(h: RestoreHarness, tmp_path: Path) -> None:
    h.dlq_url = ""  # the default file:// store, under each worker's own CELERY_DURABLE_DIR
    h.every = 3.0
    dirs = {"qa": tmp_path / "host-a", "qb": tmp_path / "host-b"}
    workers = [
        h.worker("a@host-a", "qa,durable-restore", CELERY_DURABLE_DIR=str(dirs["qa"])),
        h.worker("b@host-b", "qb,durable-restore", CELERY_DURABLE_DIR=str(dirs["qb"])),
    ]
    ids = {q: h.send("restore_app.flaky", 15, queue=q) for q in dirs}
    urls = {q: (d / "dlq").resolve().as_uri() for q, d in dirs.items()}
    for q in dirs:
        h.wait(lambda q=q: len(h.dumps(urls[q])) == 15, 60, f"15 dumps in {urls[q]}")
    assert {e.task_id for e in h.dumps(urls["qa"])} == set(ids["qa"])

    h.state.set("fixed", 1)
    beat = h.beat()
    tick = "Sending due task celery-durable-restore"
    h.wait(lambda: tick in beat.output(), 60, "one beat tick")
    # Beat logs the tick before it publishes: stop it only once a worker has the
    # task (SIGTERM in between would cancel the publish), long before the next tick.
    received = "Task celery_durable.restore["
    h.wait(lambda: any(received in w.output() for w in workers), 30, "the restore task received")
    beat.terminate()
    assert beat.log.read_text().count(tick) == 1
    h.wait(lambda: set(ids["qa"] + ids["qb"]) <= set(h.runs()), 60, "both hosts' tasks")
    h.wait(lambda: not h.dumps(urls["qa"]) and not h.dumps(urls["qb"]), 30, "both stores empty")
    h.wait(lambda: h.restore_runs() == 1, 30, "the restore task to finish (it waits for replies)")
    # The replies the task waited for (a worker slower than the 1 s reply timeout
    # still runs the command; the empty stores above are what counts).
    result = json.loads(h.state.lindex("restore_results", 0))
    assert set(result["fanout"]) <= {"a@host-a", "b@host-b"}
    assert all(reply == {"ok": "started"} for reply in result["fanout"].values())


def test_cli_restore_dry_run_ids_rate_control_and_force(h: RestoreHarness) -> None:
    h.conf.update(durable_restore_queue_capacity=10, durable_restore_allow_rate=0.5)  # limit 5
    ids = [str(uuid.uuid4()) for _ in range(8)]
    store = h.store()
    # Not due (failed just now, backoff 60 s) and one of them parked: the CLI ignores both.
    h.conf["durable_restore_backoff"] = 60.0
    h.conf["durable_restore_max_attempts"] = 2
    dumps = [flaky_dump(t, "cliq", n) for n, t in enumerate(ids)]
    for d in dumps:
        d.failed_at = time.time()
    dumps[0].restores = 2
    store.write(dumps)
    store.close()

    rc, out = h.cli("dlq", "restore", "--all", "--dry-run")
    assert rc == 0, out
    assert f"{ids[0]}  restore_app.flaky  -> cliq  (restore #3, parked)" in out
    assert "would restore 5 dump(s)" in out  # the queue takes 5 before the limit
    assert "held back by rate control: cliq: 3" in out
    assert len(h.dumps()) == 8

    rc, out = h.cli("dlq", "restore", ids[0], ids[1])
    assert rc == 0, out
    assert "restored 2 dump(s) (cliq: 2)" in out
    assert h.broker.llen("cliq") == 2
    headers = [json.loads(raw)["headers"] for raw in h.broker.lrange("cliq", 0, -1)]
    assert {(x["id"], x["x-durable-restores"]) for x in headers} == {(ids[0], 3), (ids[1], 1)}

    rc, out = h.cli("dlq", "restore", "--task", "restore_app.flaky")
    assert rc == 1
    assert "restored 3 dump(s) (cliq: 3)" in out
    assert out.strip().splitlines()[-1].startswith("Error: dlq restore: held back, queue above")
    assert h.broker.llen("cliq") == 5

    rc, out = h.cli("dlq", "restore", "--all", "--force")
    assert rc == 0, out
    assert h.broker.llen("cliq") == 8
    assert not h.dumps()

    rc, out = h.cli("dlq", "restore", "no-such-id")
    assert rc == 1
    assert out.strip().splitlines()[-1] == "Error: dlq restore: no dump for task id(s) no-such-id"


def test_restore_history_travels_with_the_task_through_a_second_failure(
    h: RestoreHarness,
) -> None:
    h.worker("w1@%h", "work")
    [tid] = h.send("restore_app.fails_by_round", 1)
    h.wait(lambda: [e.task_id for e in h.dumps()] == [tid], 60, "the first dump")
    [first] = h.dumps()
    assert first.restores == 0 and HISTORY_HEADER not in first.headers
    assert first.exc_message == "'failed after 0 restores'"

    rc, out = h.cli("dlq", "restore", tid)
    assert rc == 0, out
    assert "restored 1 dump(s)" in out

    def second() -> list[DumpEntry]:
        return [e for e in h.dumps() if e.task_id == tid and e.restores == 1]

    [dump] = h.wait(second, 60, "the restored task to fail and be dumped again")
    assert dump.exc_message == "'failed after 1 restores'"
    [record] = dump.headers[HISTORY_HEADER]
    assert record["restores"] == 1
    assert record["by"] == "cli" and record["host"] == socket.gethostname()
    assert record["exc_type"] == "KeyError"
    assert record["exc_message"] == "'failed after 0 restores'"  # the first failure
    restored_at = datetime.fromisoformat(record["at"])
    assert restored_at.utcoffset() == timedelta(0)
    assert abs(restored_at.timestamp() - time.time()) < 300

    rc, out = h.cli("dlq", "show", tid)
    assert rc == 0, out
    shown = json.loads(out[out.index("{") :])
    assert shown["restore_history"] == [record]
