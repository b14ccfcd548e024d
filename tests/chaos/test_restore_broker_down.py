"""The broker dies between restore runs: the run fails loudly, keeps every dump, and
the next run after the broker is back restores them through the same producer pool."""

from __future__ import annotations

import pytest
from celery import Celery

from celery_durable.exceptions import RestoreError
from celery_durable.restore.runner import RestoreOptions, restore
from tests.helpers.redis_server import RedisServer
from tests.unit.restore_memstore import MemoryDumpStore, make_entry

pytestmark = pytest.mark.chaos


def test_broker_down_keeps_dumps_and_next_run_restores(redis_server: RedisServer) -> None:
    app = Celery("down", broker=redis_server.url, set_as_current=False)
    app.conf.broker_connection_timeout = 1.0
    app.conf.broker_transport_options = {"socket_timeout": 2, "socket_connect_timeout": 1}
    store = MemoryDumpStore(url="memory://broker-down")
    store.write([make_entry(f"a{i}") for i in range(50)])
    assert restore(app, store, RestoreOptions(backoff=0)).restored == 50

    store.write([make_entry(f"b{i}") for i in range(50)])
    redis_server.stop()  # SIGKILL
    with pytest.raises(RestoreError):
        restore(app, store, RestoreOptions(backoff=0))
    assert len(store.data) == 50

    redis_server.start()  # empty: no persistence
    report = restore(app, store, RestoreOptions(backoff=0))
    assert report.restored == 50
    assert not store.data
    assert redis_server.client().llen("celery") == 50
