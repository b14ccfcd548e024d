"""The restore lock of a ``redis://`` dump store, against a real redis-server (issue 9.4).

Two fleets sharing one redis with different ``?prefix=`` must restore at the same
time; before the fix the lock passed ``?prefix=`` to redis-py (a raw ``TypeError``)
and one global key made the fleets block each other.
"""

from __future__ import annotations

import threading

import pytest
from celery import Celery

from celery_durable.dlq import open_store
from celery_durable.restore.lock import REDIS_LOCK_KEY
from celery_durable.restore.runner import RestoreOptions, RestoreReport, restore
from tests.helpers.redis_server import RedisServer
from tests.helpers.wait import wait_for
from tests.unit.restore_memstore import make_entry

pytestmark = pytest.mark.integration


def _fleet(server: RedisServer, prefix: str, count: int) -> str:
    url = f"redis://127.0.0.1:{server.port}/0?prefix={prefix}"
    store = open_store(url)
    store.write([make_entry(f"{prefix}-{i}", queue=f"{prefix}-q") for i in range(count)])
    store.close()
    return url


def _app(server: RedisServer) -> Celery:
    return Celery("lock", broker=f"redis://127.0.0.1:{server.port}/1", set_as_current=False)


def test_a_store_with_a_prefix_restores(redis_server: RedisServer) -> None:
    url = _fleet(redis_server, "fleet-x", 10)
    store = open_store(url)
    report = restore(_app(redis_server), store, RestoreOptions(backoff=0.0))
    assert report.restored == 10 and not report.busy
    assert redis_server.client(1).llen("fleet-x-q") == 10
    assert store.count() == 0


def test_two_prefixes_restore_concurrently_and_one_prefix_runs_once(
    redis_server: RedisServer,
) -> None:
    count = 1500
    url_a, url_b = _fleet(redis_server, "fleet-a", count), _fleet(redis_server, "fleet-b", count)
    app = _app(redis_server)
    # Rate-limited so fleet A's run holds its lock for about a second.
    slow = RestoreOptions(backoff=0.0, batch=None, rate=1500.0)
    result: dict[str, RestoreReport] = {}
    run_a = threading.Thread(
        target=lambda: result.setdefault("a", restore(app, open_store(url_a), slow))
    )
    run_a.start()
    client = redis_server.client()
    try:
        wait_for(lambda: client.exists("fleet-a:restore-lock"), timeout=30, message="A's lock")
        # While A runs: fleet B (another prefix) is not blocked ...
        report_b = restore(app, open_store(url_b), RestoreOptions(backoff=0.0, batch=None))
        assert run_a.is_alive(), "fleet A finished before B started: no overlap tested"
        # ... and a second run over A's own store is.
        assert restore(app, open_store(url_a), RestoreOptions(backoff=0.0)).busy
    finally:
        run_a.join(timeout=120)
    assert not report_b.busy and report_b.restored == count
    assert not result["a"].busy and result["a"].restored == count
    broker = redis_server.client(1)
    assert broker.llen("fleet-a-q") == count and broker.llen("fleet-b-q") == count
    assert not client.exists(REDIS_LOCK_KEY)  # no fleet took the global key
