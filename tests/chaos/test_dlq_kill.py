"""SIGKILL workers and writers: no captured failure is lost, no partial record is read as valid."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from celery_durable.dlq import open_store
from celery_durable.dlq.stores.filestore import FileStore
from tests.helpers.processes import ROOT, Proc, python
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


def _witnessed(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


def _pool_children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


@pytest.mark.parametrize(
    ("victim", "kind"), [("worker", "file"), ("pool-child", "file"), ("worker", "redis")]
)
def test_no_final_failure_lost_when_a_prefork_worker_is_sigkilled(
    victim: str, kind: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    """~1,000 tasks fail for good; SIGKILL mid-run; every captured failure reaches the store.

    ``worker``: the whole process group, then a restart (its processes adopt the
    dead processes' dump logs).  ``pool-child``: one pool process; its
    replacement adopts.  Before the write-ahead log this lost 51-222 failures per
    kill: those still in the dead processes' memory buffers.
    """
    url = (tmp_path / "dlq").as_uri() if kind == "file" else redis_server.url[:-1] + "3"
    witness = tmp_path / "witness"
    env = {"DLQ_FLUSH_INTERVAL": "1.0", "DLQ_WITNESS": str(witness)}
    client = make_app(redis_server.url)
    worker = start_worker(tmp_path, redis_server.url, url, concurrency=2, **env)
    workers: list[Proc] = [worker]
    try:
        with client.producer_or_acquire() as producer:
            for i in range(1000):
                client.send_task("dlq.fail", args=(i,), kwargs={"pad": "p" * 500},
                                 producer=producer)  # fmt: skip
        wait_for(lambda: len(_witnessed(witness)) >= 300, timeout=120, interval=0.01)
        if victim == "worker":
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
            at_kill = set(_witnessed(witness))
            workers.append(start_worker(tmp_path, redis_server.url, url, name="again", **env))
        else:
            os.kill(_pool_children(worker.pid)[0], signal.SIGKILL)
            at_kill = set(_witnessed(witness))
        store = open_store(url)

        def missing() -> set[str]:
            return set(_witnessed(witness)) - {e.task_id for e in store.entries()}

        wait_for(
            lambda: not missing() and len(_witnessed(witness)) >= len(at_kill) + 100,
            timeout=120,
            interval=0.5,
            message=lambda: (
                f"{len(missing())} witnessed failures missing from the store; "
                + workers[-1].output()[-3000:]
            ),
        )
    finally:
        for proc in workers:
            proc.kill()
    ids = [e.task_id for e in store.entries()]
    assert at_kill <= set(ids), f"{len(at_kill - set(ids))} captured failures lost"
    if kind == "redis":  # a replayed log segment is stored under the same ids
        assert len(ids) == len(set(ids))
