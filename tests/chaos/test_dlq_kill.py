"""SIGKILL a process in the middle of a dump flush: no partial record is ever read as valid."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from celery_durable.dlq import open_store
from celery_durable.dlq.stores.filestore import FileStore
from tests.helpers.processes import ROOT, python
from tests.helpers.redis_server import RedisServer
from tests.helpers.wait import wait_for
from tests.integration.dlq_app import make_app
from tests.integration.dlq_worker import start_worker

pytestmark = pytest.mark.chaos


def corrupt_count() -> float:
    return (
        REGISTRY.get_sample_value("celery_durable_corrupt_records_total", {"store": "dlq"}) or 0.0
    )


def test_worker_killed_mid_flush_file_store(tmp_path: Path, redis_server: RedisServer) -> None:
    """Kill a prefork worker (whole process group) while a segment is being written."""
    url = (tmp_path / "dlq").as_uri()
    store = open_store(url)
    assert isinstance(store, FileStore)
    client = make_app(redis_server.url)
    worker = start_worker(tmp_path, redis_server.url, url, DLQ_CAPACITY="65536")
    sent: list[str] = []
    try:
        with client.producer_or_acquire() as producer:
            for i in range(300):
                r = client.send_task(
                    "dlq.fail", args=(i,), kwargs={"pad": "p" * 200_000}, producer=producer
                )
                sent.append(r.id)
        # The moment a segment is half written, kill everything.
        wait_for(
            lambda: any(store.segments_dir.iterdir()) and any(store.tmp_dir.iterdir()),
            timeout=60,
            interval=0.001,
        )
        os.killpg(worker.pid, signal.SIGKILL)
    finally:
        worker.kill()
    before = corrupt_count()
    got = [e.task_id for e in store.entries()]
    assert len(got) == len(set(got)) and set(got) <= set(sent)
    assert got, "some dumps were written before the kill"
    assert all(e.kwargs == {"pad": "p" * 200_000} for e in store.entries())
    assert store.quarantined() == []
    assert corrupt_count() == before
    # What the killed flush left behind stays in tmp/, never read as a segment.
    assert any(store.tmp_dir.iterdir()) or len(got) == 300


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_writer_killed_repeatedly(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A writer SIGKILLed at random points of its flushes, three times over."""
    if kind == "file":
        url = (tmp_path / "dlq").as_uri()
    else:
        url = request.getfixturevalue("redis_server").url
    store = open_store(url)
    before = corrupt_count()
    for round_ in range(3):
        seen = store.count()
        proc = python(
            ROOT / "tests/integration/dlq_writer.py",
            url,
            "0",
            f"r{round_}",
            "20000",
            log=tmp_path / f"writer{round_}.log",
        )
        wait_for(lambda s=seen: store.count() > s + 20, timeout=60, interval=0.005)
        proc.kill()
    ids = [e.task_id for e in store.entries()]
    assert len(ids) == len(set(ids)) > 60
    assert all(e.traceback == "x" * 20000 for e in store.entries())
    assert store.quarantined() == []
    assert corrupt_count() == before
