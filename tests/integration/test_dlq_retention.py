"""Retention: every bound and both policies, on the real file:// and redis:// stores.

Counts are checked three ways: what is left in the store, the store's persistent
``dropped_counts()`` and the ``celery_durable_dumps_dropped_total{reason}`` counter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from celery_durable.dlq import DumpEntry, DumpStore, open_store
from celery_durable.dlq.dumpqueue import DumpQueue
from celery_durable.dlq.retention import Retention, dropped_counts, enforce
from celery_durable.dlq.stores.filestore import FileStore
from celery_durable.dlq.stores.redisstore import RedisStore
from tests.helpers.redis_server import RedisServer
from tests.helpers.wait import wait_for
from tests.integration.dlq_app import make_app
from tests.integration.dlq_worker import start_worker
from tests.integration.dlq_writer import entry

pytestmark = pytest.mark.integration


@pytest.fixture(params=["file", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DumpStore]:
    if request.param == "file":
        url = (tmp_path / "dlq").as_uri()
    else:
        url = f"{request.getfixturevalue('redis_server').url}?prefix=ret:dlq"
    opened = open_store(url)
    yield opened
    opened.close()


def dropped_metric(reason: str) -> float:
    return REGISTRY.get_sample_value("celery_durable_dumps_dropped_total", {"reason": reason}) or 0


def write_each(store: DumpStore, count: int, start: float) -> list[str]:
    """``count`` equal-sized dumps, one write (one segment) each, failed_at ascending."""
    ids = []
    for i in range(count):
        e = entry(f"task-{i:03d}", 200)
        e.failed_at = start + i
        store.write([e])
        ids.append(e.task_id)
    return ids


def left(store: DumpStore) -> list[str]:
    return [e.task_id for e in store.entries()]


def entry_size(store: DumpStore) -> int:
    """The stored size of one dump written alone (what the bytes bound counts)."""
    first = next(store.entries())
    if isinstance(store, FileStore):
        stem = first.entry_id.split(":")[0]
        return (store.segments_dir / f"{stem}.seg").stat().st_size
    assert isinstance(store, RedisStore)
    return int(store.client.hstrlen(store.data_key, first.entry_id))


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
def test_max_entries(store: DumpStore, policy: str) -> None:
    ids = write_each(store, 10, time.time())
    before = dropped_metric("max_entries")
    got = enforce(store, Retention(max_entries=6, when_full=policy))
    assert got["max_entries"] == 4
    assert left(store) == (ids[4:] if policy == "drop_oldest" else ids[:6])
    assert dropped_counts(store) == {"max_age": 0, "max_entries": 4, "max_bytes": 0}
    assert dropped_metric("max_entries") - before == 4
    # Idempotent: within the bound now, a second run drops nothing.
    assert enforce(store, Retention(max_entries=6, when_full=policy))["max_entries"] == 0
    assert store.count() == 6


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
def test_max_bytes(store: DumpStore, policy: str) -> None:
    ids = write_each(store, 8, time.time())
    size = entry_size(store)
    before = dropped_metric("max_bytes")
    got = enforce(store, Retention(max_bytes=int(size * 3.5), when_full=policy))
    assert got["max_bytes"] == 5
    assert left(store) == (ids[5:] if policy == "drop_oldest" else ids[:3])
    assert dropped_counts(store)["max_bytes"] == 5
    assert dropped_metric("max_bytes") - before == 5
    assert enforce(store, Retention(max_bytes=int(size * 3.5)))["max_bytes"] == 0


def test_max_age_expires_the_old_and_keeps_the_recent(store: DumpStore) -> None:
    write_each(store, 3, time.time() - 10)
    middle = time.time()  # file://: segment names carry their write time, before or after this
    new = []
    for i in range(2):
        e = entry(f"new-{i}", 50)
        e.failed_at = middle + 1 + i
        store.write([e])
        new.append(e.task_id)
    before = dropped_metric("max_age")
    got = enforce(store, Retention(max_age=100.0), now=middle + 100.0)
    assert got == {"max_age": 3, "max_entries": 0, "max_bytes": 0}
    assert left(store) == new
    assert dropped_counts(store)["max_age"] == 3
    assert dropped_metric("max_age") - before == 3


def test_parked_dumps_count_and_go_like_any_other(store: DumpStore) -> None:
    parked = entry("parked", 100)
    parked.restores = 99
    parked.failed_at = time.time() - 5
    store.write([parked])
    ids = write_each(store, 3, time.time())
    enforce(store, Retention(max_entries=3))
    assert left(store) == ids  # the parked one was the oldest: dropped first


def test_bounds_apply_in_order_and_counts_add_up(store: DumpStore) -> None:
    write_each(store, 6, time.time())
    enforce(store, Retention(max_entries=4))
    enforce(store, Retention(max_entries=2, when_full="drop_newest"))
    assert store.count() == 2
    assert dropped_counts(store) == {"max_age": 0, "max_entries": 4, "max_bytes": 0}


def test_the_dump_queue_enforces_after_each_flush(
    store: DumpStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.retention = Retention(max_entries=3)  # type: ignore[attr-defined]
    queue = DumpQueue(store, flush_interval=60)
    entries: list[DumpEntry] = []
    for i in range(5):
        e = entry(f"q{i}", 20)
        e.failed_at = time.time() + i
        entries.append(e)
        queue.put(e)
    with caplog.at_level(logging.WARNING, logger="celery_durable.dlq.retention"):
        assert queue.flush()
    queue.close()
    assert left(store) == ["q2", "q3", "q4"]
    assert dropped_counts(store)["max_entries"] == 2
    assert "dropped 2 dump(s)" in caplog.text and "max_entries" in caplog.text


def test_unbounded_store_is_left_alone(store: DumpStore) -> None:
    write_each(store, 3, time.time())
    assert enforce(store, Retention()) == {}
    assert store.count() == 3


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_a_real_worker_keeps_its_store_bounded(
    kind: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    """Prefork worker, 8 final failures, durable_dlq_max_entries=5: 5 kept, 3 dropped, logged."""
    url = (tmp_path / "dlq").as_uri() if kind == "file" else redis_server.url.replace("/0", "/3")
    client = make_app(redis_server.url)
    worker = start_worker(
        tmp_path, redis_server.url, url, app="tests.integration.retention_app", DLQ_MAX_ENTRIES="5"
    )
    try:
        sent = [client.send_task("dlq.fail", args=(n,)).id for n in range(8)]
        store = open_store(url)

        def settled() -> bool:
            return store.count() == 5 and dropped_counts(store)["max_entries"] == 3

        wait_for(
            settled,
            timeout=60,
            message=lambda: f"5 dumps kept, 3 dropped; now {store.count()} kept, "
            f"{dropped_counts(store)}; log:\n{worker.output()[-3000:]}",
        )
        assert {e.task_id for e in store.entries()} <= set(sent)
        assert "dropped" in worker.output() and "max_entries bound" in worker.output()
        store.close()
    finally:
        worker.terminate()


def test_redis_checks_the_byte_bound_at_most_every_interval(redis_server: RedisServer) -> None:
    store = open_store(f"{redis_server.url}?prefix=thr:dlq")
    assert isinstance(store, RedisStore)
    write_each(store, 4, time.time())
    bound = Retention(max_bytes=int(entry_size(store) * 4.5))
    assert enforce(store, bound)["max_bytes"] == 0  # checked: within the bound
    e = entry("later", 200)
    e.failed_at = time.time() + 100
    store.write([e])
    assert enforce(store, bound)["max_bytes"] == 0  # not checked again so soon
    store.client.delete(store._retention_keys()[5])  # as if the interval had passed
    assert enforce(store, bound)["max_bytes"] == 1
    assert store.count() == 4
    store.close()


def test_bounds_hold_across_passes_with_writes_and_deletes_between(store: DumpStore) -> None:
    bound = Retention(max_entries=5)
    start = time.time()
    ids = write_each(store, 3, start)
    assert enforce(store, bound)["max_entries"] == 0  # within: remembered
    more = [entry(f"more-{i}", 200) for i in range(3)]
    for i, e in enumerate(more):
        e.failed_at = start + 10 + i
        store.write([e])
    assert enforce(store, bound)["max_entries"] == 1  # 6 > 5: the oldest goes
    assert left(store) == ids[1:] + [e.task_id for e in more]
    store.delete([next(store.entries()).entry_id])  # a restore or purge meanwhile
    assert enforce(store, bound)["max_entries"] == 0
    late = entry("late", 200)
    late.failed_at = start + 20
    store.write([late])
    assert enforce(store, bound)["max_entries"] == 0  # 5 again: within
    assert store.count() == 5
