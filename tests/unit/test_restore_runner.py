"""The restore run against Kombu's memory:// transport and an in-memory store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from kombu import Connection, Queue

from celery_durable import metrics
from celery_durable.exceptions import RestoreError
from celery_durable.restore.gate import clear_postponements
from celery_durable.restore.message import RESTORES_HEADER
from celery_durable.restore.runner import RestoreOptions, restore

from .restore_memstore import MemoryDumpStore, make_entry


@pytest.fixture
def app() -> Iterator[Celery]:
    clear_postponements()
    app = Celery("t", broker="memory://", set_as_current=False)
    app.conf.task_serializer = "json"
    for queue in ("celery", "full", "other"):  # memory:// state is process-global
        drain(app, queue)
    yield app
    clear_postponements()


def drain(app: Celery, queue: str) -> list[Any]:
    """All messages on ``queue`` (memory:// is per process, shared by connections)."""
    out = []
    with Connection(app.conf.broker_url) as conn:
        q = Queue(queue, channel=conn.default_channel)
        q.declare()
        while (msg := q.get(no_ack=True)) is not None:
            out.append(msg)
    return out


def opts(**kw: Any) -> RestoreOptions:
    base: dict[str, Any] = {"backoff": 10.0, "max_attempts": 3, "postpone_interval": 30.0}
    base.update(kw)
    return RestoreOptions(**base)


def test_republishes_original_message_oldest_first_and_deletes(app: Celery) -> None:
    store = MemoryDumpStore()
    store.write([make_entry(f"id-{i}", args=[i]) for i in range(5)])
    report = restore(app, store, opts())
    assert report.restored == 5
    assert not store.data
    msgs = drain(app, "celery")
    assert [m.headers["id"] for m in msgs] == [f"id-{i}" for i in range(5)]
    first = msgs[0]
    assert first.headers[RESTORES_HEADER] == 1
    assert first.headers["task"] == "tasks.add"
    assert first.content_type == "application/json"
    assert first.decode() == [
        [0],
        {"k": "v"},
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    ]
    assert first.properties["correlation_id"] == "id-0"


def test_backoff_parking_and_batch(app: Celery) -> None:
    now = time.time()
    store = MemoryDumpStore()
    store.write(
        [
            make_entry("due0", restores=0, failed_at=now - 11),  # due after 10
            make_entry("early1", restores=1, failed_at=now - 11),  # due after 20
            make_entry("due1", restores=1, failed_at=now - 21),
            make_entry("parked", restores=3, failed_at=now - 1000),
            make_entry("due-b", failed_at=now - 100),
            make_entry("due-c", failed_at=now - 100),
        ]
    )
    parked_before = metrics.PARKED._value.get()
    restored_before = metrics.RESTORED.labels(queue="celery")._value.get()
    report = restore(app, store, opts(batch=3))
    assert report.restored == 3
    assert metrics.RESTORED.labels(queue="celery")._value.get() == restored_before + 3
    assert metrics.RESTORE_LAG._value.get() == pytest.approx(100, abs=5)
    assert report.not_due == 1
    assert report.parked == 1
    assert report.lag == pytest.approx(100, abs=5)  # due-c waits for the next run
    assert [m.headers["id"] for m in drain(app, "celery")] == ["due0", "due1", "due-b"]
    assert sorted(e.task_id for e in store.entries()) == ["due-c", "early1", "parked"]
    restore(app, store, opts(batch=3))
    # Counted once per entry, however many runs see it parked.
    assert metrics.PARKED._value.get() == parked_before + 1
    assert sorted(e.task_id for e in store.entries()) == ["early1", "parked"]


def test_full_queue_postponed_other_queue_continues(app: Celery) -> None:
    with Connection(app.conf.broker_url) as conn:
        producer = conn.Producer()
        full = Queue("full", channel=conn.default_channel)
        full.declare()
        for _ in range(4):
            producer.publish({"x": 1}, routing_key="full")
    store = MemoryDumpStore()
    store.write([make_entry(f"f{i}", queue="full") for i in range(3)])
    store.write([make_entry(f"o{i}", queue="other") for i in range(3)])
    o = opts(allow_rate=0.5, capacity=10)  # limit 5: "full" takes one more, then stops
    report = restore(app, store, o)
    assert report.by_queue == {"full": 1, "other": 3}
    assert report.postponed == {"full": 2}
    assert len(drain(app, "full")) == 5  # drained now, but the queue stays postponed
    assert restore(app, store, o).restored == 0
    clear_postponements()
    assert restore(app, store, o).restored == 2


def test_rate_limits_the_run(app: Celery) -> None:
    store = MemoryDumpStore()
    store.write([make_entry(f"r{i}") for i in range(30)])
    started = time.monotonic()
    assert restore(app, store, opts(rate=100.0)).restored == 30
    # Chunks of 10, each started no earlier than (published so far) / rate.
    assert time.monotonic() - started >= 0.19


def test_dry_run_changes_nothing(app: Celery) -> None:
    store = MemoryDumpStore()
    store.write([make_entry("d1"), make_entry("d2", restores=5)])
    report = restore(app, store, opts(ignore_backoff=True, include_parked=True), dry_run=True)
    assert [m.entry.task_id for m in report.planned] == ["d1", "d2"]
    assert len(store.data) == 2
    assert drain(app, "celery") == []


def test_publish_failure_keeps_the_dumps(app: Celery) -> None:
    store = MemoryDumpStore()
    store.write([make_entry("p1"), make_entry("p2")])
    errors = metrics.RESTORE_ERRORS._value.get()
    app.conf.task_serializer = "no-such-serializer"
    with pytest.raises(RestoreError, match="publish failed"):
        restore(app, store, opts())
    assert len(store.data) == 2
    assert metrics.RESTORE_ERRORS._value.get() == errors + 2


def test_concurrent_run_is_skipped(app: Celery) -> None:
    from celery_durable.restore.lock import run_lock

    store = MemoryDumpStore(url="memory://locked")
    store.write([make_entry("l1")])
    holder = run_lock(store.url)
    assert holder.acquire()
    try:
        assert restore(app, store, opts()).busy
    finally:
        holder.release()
    assert restore(app, store, opts()).restored == 1


def test_file_lock_is_exclusive(tmp_path: Any) -> None:
    from celery_durable.restore.lock import run_lock

    url = f"file://{tmp_path / 'dlq'}"
    a, b = run_lock(url), run_lock(url)
    assert a.acquire()
    assert not b.acquire()
    a.release()
    assert b.acquire()
    b.release()


def test_unreachable_broker_is_a_restore_error() -> None:
    app = Celery("down", broker="redis://127.0.0.1:1/0", set_as_current=False)
    app.conf.broker_connection_timeout = 0.5
    store = MemoryDumpStore(url="memory://down")
    store.write([make_entry("x")])
    with pytest.raises(RestoreError, match="restore run failed"):
        restore(app, store, opts())
    assert len(store.data) == 1


def _corrupt_count() -> float:
    return metrics.CORRUPT_RECORDS.labels(store="dlq")._value.get()


def test_a_malformed_dump_is_quarantined_and_the_others_restored(app: Celery) -> None:
    """Issue 10.5: one dump with ``restores: "many"`` used to stop the whole run (TypeError)."""
    store = MemoryDumpStore()
    entries = [make_entry(f"id-{i}", args=[i]) for i in range(4)]
    entries[1].restores = "many"  # type: ignore[assignment]
    entries[2].args = "abc"  # type: ignore[assignment]
    store.write(entries)
    before = _corrupt_count()
    report = restore(app, store, opts())
    assert report.restored == 2
    assert [q[1] for q in report.quarantined] == ["'id-1'", "'id-2'"]
    assert "restores: expected an integer >= 0, got str 'many'" in report.quarantined[0][2]
    assert "args: expected a list, got str 'abc'" in report.quarantined[1][2]
    assert report.as_dict()["quarantined"] == 2
    assert [m.headers["id"] for m in drain(app, "celery")] == ["id-0", "id-3"]
    assert sorted(e.task_id for e in store.entries()) == ["id-1", "id-2"]  # kept
    assert _corrupt_count() == before + 2
    again = restore(app, store, opts())  # skipped again, counted once per process
    assert again.restored == 0 and len(again.quarantined) == 2
    assert _corrupt_count() == before + 2


def test_a_body_the_serializer_cannot_encode_is_quarantined(app: Celery) -> None:
    store = MemoryDumpStore()
    entries = [make_entry(f"enc-{i}", args=[i]) for i in range(3)]
    entries[1].args = [object()]  # decoded from a pickle dump, republished as JSON
    store.write(entries)
    report = restore(app, store, opts())
    assert report.restored == 2 and report.error == ""
    assert "cannot serialize its body with json" in report.quarantined[0][2]
    # Kombu's generic path may have sent enc-0 before it met enc-1: at least once.
    assert sorted(set(m.headers["id"] for m in drain(app, "celery"))) == ["enc-0", "enc-2"]
    assert [e.task_id for e in store.entries()] == ["enc-1"]
