"""The dump queue against a Redis that is not there yet: errors logged, retried, never raised."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from celery_durable.dlq import open_store
from celery_durable.dlq.dumpqueue import DumpQueue
from tests.helpers.redis_server import RedisServer, free_port
from tests.helpers.wait import wait_for
from tests.integration.dlq_writer import entry

pytestmark = pytest.mark.integration


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_write_errors_are_logged_retried_and_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(free_port())  # not started yet: writes fail
    store = open_store(server.url)
    queue = DumpQueue(store, capacity_bytes=1 << 20, flush_interval=0.05)
    errors = sample("celery_durable_dump_write_errors_total")
    with caplog.at_level(logging.ERROR, logger="celery_durable.dlq.dumpqueue"):
        queue.put(entry("lost-1", 10))
        queue.put(entry("lost-2", 10))
        wait_for(lambda: sample("celery_durable_dump_write_errors_total") >= errors + 2)
    assert "lost-1, lost-2" in caplog.text
    server.start()
    try:
        wait_for(lambda: store.count() == 2, timeout=30)
        wait_for(lambda: len(queue) == 0, timeout=20)  # deleted after the write
    finally:
        server.close()
