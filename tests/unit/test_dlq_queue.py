"""The dump queue: flush by interval and by capacity, retry on write errors, bounded memory."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from celery_durable.dlq import open_store
from celery_durable.dlq.base import EncodedDump
from celery_durable.dlq.dumpqueue import DumpQueue
from celery_durable.dlq.stores.filestore import FileStore
from celery_durable.exceptions import DumpError
from tests.helpers.wait import wait_for
from tests.integration.dlq_writer import entry


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_flush_after_interval(tmp_path: Path) -> None:
    store = open_store((tmp_path / "dlq").as_uri())
    queue = DumpQueue(store, capacity_bytes=1 << 20, flush_interval=1.0)
    flushes = sample("celery_durable_dump_flushes_total")
    started = time.monotonic()
    queue.put(entry("a", 10))
    queue.put(entry("b", 10))
    assert store.count() == 0  # buffered, not yet due
    wait_for(lambda: store.count() == 2, timeout=20)
    assert time.monotonic() - started >= 0.9
    # Counted just after the store write that the condition above saw.
    wait_for(lambda: sample("celery_durable_dump_flushes_total") == flushes + 1, timeout=20)
    wait_for(lambda: len(queue) == 0, timeout=20)  # the segment is deleted after the write


def test_flush_at_capacity(tmp_path: Path) -> None:
    store = open_store((tmp_path / "dlq").as_uri())
    queue = DumpQueue(store, capacity_bytes=20_000, flush_interval=3600.0)
    queue.put(entry("small", 10))
    assert store.count() == 0
    queue.put(entry("big", 30_000))
    wait_for(lambda: store.count() == 2, timeout=20)
    queue.put(entry("later", 10))
    assert queue.close() and store.count() == 3


class FlakyStore(FileStore):
    """A file store that refuses writes while ``down``."""

    down = True

    def write_encoded(self, dumps: Sequence[EncodedDump]) -> list[str]:
        if self.down:
            raise DumpError("store is down")
        return super().write_encoded(dumps)


def test_a_failed_final_flush_leaves_the_dumps_on_disk_for_the_next_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before the write-ahead log, these dumps were only in memory (and then in the log)."""
    store = FlakyStore((tmp_path / "dlq").as_uri())
    wal = tmp_path / "wal"
    queue = DumpQueue(store, flush_interval=3600, wal_directory=wal)
    for i in range(5):
        queue.put(entry(f"m{i}", 1000))
    assert len(list(wal.glob("*.wal"))) == 1  # on disk before put() returned
    with caplog.at_level(logging.ERROR, logger="celery_durable.dlq.dumpqueue"):
        assert not queue.close(timeout=5)
    assert "5 dumps could not be written" in caplog.text
    assert "DROPPED DUMP" not in caplog.text
    store.down = False
    later = DumpQueue(store, wal_directory=wal)
    assert later.adopt() == 1
    assert later.flush()
    assert sorted(e.task_id for e in store.entries()) == [f"m{i}" for i in range(5)]
    assert not list(wal.glob("*.wal")) and not list(wal.glob("*.lock"))
    assert later.close()


def test_wal_bound_logs_what_it_cannot_take(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store((tmp_path / "dlq").as_uri())
    queue = DumpQueue(
        store, flush_interval=3600, wal_directory=tmp_path / "wal", wal_max_bytes=3000
    )
    with caplog.at_level(logging.ERROR, logger="celery_durable.dlq.dumpqueue"):
        for i in range(5):
            queue.put(entry(f"m{i}", 1000))
    assert len(queue) == 2
    assert "DROPPED DUMP" in caplog.text and '"task_id": "m4"' in caplog.text
    assert '"task_id": "m0"' not in caplog.text
    assert queue.close()
    assert sorted(e.task_id for e in store.entries()) == ["m0", "m1"]


def test_a_flush_writes_its_own_dumps_from_memory_and_reads_back_past_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flusher does not read back what this process just appended (the profile's
    second-largest flush cost), except for a segment past the log's memory bound."""
    from celery_durable.dlq import dumpqueue

    store = open_store((tmp_path / "dlq").as_uri())
    queue = DumpQueue(store, capacity_bytes=4_000, flush_interval=3600.0)
    read: list[Path] = []
    real = dumpqueue.read_segment

    def counting(path: Path) -> object:
        read.append(path)
        return real(path)

    monkeypatch.setattr(dumpqueue, "read_segment", counting)
    queue.put(entry("a", 100))
    queue.put(entry("b", 100))
    assert queue.flush() and read == []
    assert sorted(e.task_id for e in store.entries()) == ["a", "b"]
    queue.capacity_bytes = 1 << 30  # no flush at capacity; one segment past 8,000 bytes
    for i in range(10):
        queue.put(entry(f"big{i}", 1_000))
    assert queue.flush() and len(read) == 1
    assert store.count() == 12 and len(queue) == 0 and queue.pending_bytes == 0
    assert queue.close()


def test_a_queue_used_after_close_flushes_again(tmp_path: Path) -> None:
    """close() stops the flusher; a later put() starts it again (nothing stays unflushed)."""
    store = open_store((tmp_path / "dlq").as_uri())
    queue = DumpQueue(store, flush_interval=0.05)
    queue.put(entry("before", 10))
    assert queue.close() and store.count() == 1
    queue.put(entry("after", 10))
    wait_for(lambda: store.count() == 2, timeout=20)
    assert queue.close()
