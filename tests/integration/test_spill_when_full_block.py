"""spill_when_full="block": a publisher waits for room instead of getting SpillFull."""

from __future__ import annotations

import threading

import pytest
from kombu import Connection
from prometheus_client import REGISTRY

import celery_durable  # noqa: F401 - registers the alias
from celery_durable.transport.spiller import shutdown_all
from tests.helpers.redis_server import RedisServer
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration


def spill_full() -> float:
    return REGISTRY.get_sample_value("celery_durable_spill_full_total") or 0.0


def test_block_waits_for_the_drainer_then_publishes() -> None:
    server = RedisServer()  # down for now
    options = {"spill_max_bytes": 20_000, "spill_when_full": "block"}
    conn = Connection(f"durable+redis://127.0.0.1:{server.port}/0", transport_options=options)
    full_before = spill_full()
    published: list[int] = []

    def publish_all() -> None:
        producer = conn.Producer()
        for n in range(200):
            producer.publish({"n": n, "pad": "x" * 100}, routing_key="q")
            published.append(n)

    thread = threading.Thread(target=publish_all, daemon=True)
    try:
        thread.start()
        # The store filled up and the publisher is waiting, not failing.
        wait_for(lambda: spill_full() > full_before, timeout=30)
        assert thread.is_alive() and len(published) < 200
        server.start()  # the drainer makes room; the publisher goes on
        thread.join(60)
        assert not thread.is_alive() and published == list(range(200))
        wait_for(lambda: server.client().llen("q") == 200, timeout=60)
    finally:
        conn.release()
        shutdown_all(0.0)
        server.close()
