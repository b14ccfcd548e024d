"""The dump queue: flush by interval and by capacity, retry on write errors, bounded memory."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from celery_durable.dlq import open_store
from celery_durable.dlq.dumpqueue import DumpQueue
from tests.helpers.redis_server import free_port
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
    assert sample("celery_durable_dump_flushes_total") == flushes + 1
    assert len(queue) == 0


def test_flush_at_capacity(tmp_path: Path) -> None:
    store = open_store((tmp_path / "dlq").as_uri())
    queue = DumpQueue(store, capacity_bytes=20_000, flush_interval=3600.0)
    queue.put(entry("small", 10))
    assert store.count() == 0
    queue.put(entry("big", 30_000))
    wait_for(lambda: store.count() == 2, timeout=20)
    queue.put(entry("later", 10))
    assert queue.close() and store.count() == 3


def test_memory_bound_drops_oldest_into_the_log(caplog: pytest.LogCaptureFixture) -> None:
    store = open_store(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    queue = DumpQueue(store, capacity_bytes=1 << 20, flush_interval=3600, max_pending_bytes=3000)
    with caplog.at_level(logging.ERROR, logger="celery_durable.dlq.dumpqueue"):
        for i in range(5):
            queue.put(entry(f"m{i}", 1000))
        assert queue.pending_bytes <= 3000
        assert "DROPPED DUMP" in caplog.text and '"task_id": "m0"' in caplog.text
        assert not queue.close(timeout=5)  # the final flush fails: the rest is logged too
    assert all(f'"task_id": "m{i}"' in caplog.text for i in range(5))
    assert len(queue) == 0
