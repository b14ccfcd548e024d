"""Dead-letter capture in real ``celery worker`` processes (real redis broker)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from celery import VERSION as CELERY_VERSION
from celery import chain

from celery_durable.dlq import open_store
from tests.helpers.processes import celery
from tests.helpers.redis_server import RedisServer, free_port
from tests.helpers.wait import wait_for
from tests.integration.dlq_app import make_app
from tests.integration.dlq_worker import dumps_by_task_id, start_worker

pytestmark = pytest.mark.integration


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())
    except OSError as exc:
        return f"no metrics: {exc}"


def test_final_failures_only_prefork(tmp_path: Path, redis_server: RedisServer) -> None:
    """Autoretry: one dump after the last try; excluded/undecorated/Reject/Ignore: none."""
    url = (tmp_path / "dlq").as_uri()
    backend = redis_server.url.replace("/0", "/1")
    client = make_app(redis_server.url, backend)
    worker = start_worker(tmp_path, redis_server.url, url, backend=backend)
    try:
        retried = client.send_task(
            "dlq.autoretry", args=(7,), headers={"x-trace": "abc"}, priority=3
        )
        negatives = [
            client.send_task("dlq.excluded", args=("value",)),
            client.send_task("dlq.plain", args=(1,)),
        ]
        rejected = client.send_task("dlq.reject")
        if CELERY_VERSION >= (5, 7):
            # Celery 5.7 records a Reject(requeue=False) as FAILURE and sends
            # task_failure for it (which capture must ignore); before, it stays PENDING.
            negatives.append(rejected)
        ignored = client.send_task("dlq.ignore")
        caught = client.send_task("dlq.excluded", args=("key",))
        chained = chain(
            client.signature("dlq.ok", args=(1,)),
            client.signature("dlq.fail", kwargs={"k": "v"}),
            client.signature("dlq.ok"),
        ).apply_async()
        fail_id = chained.parent.id
        again = client.send_task("dlq.fail", args=(5,), headers={"x-durable-restores": 2})

        wanted = {retried.id, caught.id, fail_id, again.id}
        wait_for(
            lambda: wanted <= set(dumps_by_task_id(url)),
            timeout=60,
            message=lambda: f"dumps of {wanted}; log:\n{worker.output()[-4000:]}",
        )
        wait_for(
            lambda: all(r.state == "FAILURE" for r in negatives),
            timeout=30,
            message=lambda: f"{[(r.id, r.state) for r in negatives]}: {worker.output()[-4000:]}",
        )
        wait_for(lambda: f"{rejected.id}] reject requeue=False" in worker.output(), timeout=30)
        wait_for(lambda: f"{ignored.id}] ignored" in worker.output(), timeout=30)
    finally:
        assert worker.terminate(timeout=60) == 0, worker.output()[-3000:]

    dumps = dumps_by_task_id(url)
    log = worker.log.read_text()
    assert set(dumps) == {retried.id, caught.id, fail_id, again.id}, log[-3000:]
    assert all(len(v) == 1 for v in dumps.values())
    assert log.count(f"{retried.id}] retry") == 2

    entry = dumps[retried.id][0]
    assert entry.task_name == "dlq.autoretry"
    assert entry.args == [7] and entry.kwargs == {}
    assert entry.exc_type == "RuntimeError"
    assert entry.exc_message == "order 7 failed on try 2"
    assert "RuntimeError" in entry.traceback and "autoretry" in entry.traceback
    assert entry.headers["id"] == retried.id and entry.headers["task"] == "dlq.autoretry"
    assert entry.headers["retries"] == 2
    assert entry.headers["root_id"] == retried.id
    assert entry.headers["x-trace"] == "abc"
    assert "timelimit" in entry.headers and "origin" in entry.headers
    assert entry.properties["correlation_id"] == retried.id
    assert entry.properties["priority"] == 3
    assert "delivery_tag" not in entry.properties
    assert entry.delivery_info == {"exchange": "", "routing_key": "dlq", "queue": "dlq"}
    assert entry.hostname.startswith("worker@")
    assert entry.host and entry.failed_at > 0 and entry.restores == 0
    assert entry.embed.keys() == {"callbacks", "errbacks", "chain", "chord"}

    chained_entry = dumps[fail_id][0]
    assert chained_entry.kwargs == {"k": "v"}
    assert chained_entry.args == [1]  # the previous step's result
    assert chained_entry.embed["chain"], chained_entry.embed
    assert chained_entry.embed["chain"][0]["task"] == "dlq.ok"
    assert chained_entry.headers["root_id"] == chained.parent.parent.id
    assert chained_entry.headers["parent_id"] == chained.parent.parent.id

    assert dumps[again.id][0].restores == 2
    assert dumps[caught.id][0].exc_type == "KeyError"


def test_all_tasks_threads_pool(tmp_path: Path, redis_server: RedisServer) -> None:
    """durable_dlq_all_tasks alone (the app never imports us) dumps every task (threads pool).

    Also: ``durable_metrics_port`` starts the exporter in the worker.
    """
    url = (tmp_path / "dlq").as_uri()
    client = make_app(redis_server.url)
    port = free_port()
    worker = start_worker(
        tmp_path,
        redis_server.url,
        url,
        pool="threads",
        concurrency=2,
        app="tests.integration.dlq_plain_app",
        DLQ_METRICS_PORT=str(port),
    )
    try:
        plain = [client.send_task("dlq.plain", args=(i,)) for i in range(3)]
        wait_for(
            lambda: {r.id for r in plain} <= set(dumps_by_task_id(url)),
            timeout=60,
            message=lambda: worker.output()[-3000:],
        )
        wait_for(
            lambda: 'celery_durable_dumped_total{task="dlq.plain"} 3.0' in scrape(port),
            timeout=30,
            message=lambda: scrape(port),
        )
    finally:
        assert worker.terminate(timeout=60) == 0
    assert set(dumps_by_task_id(url)) == {r.id for r in plain}


def test_hard_time_limit_and_lost_process_prefork(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Main-process task_failure (hard time limit, killed child) is captured from the Request.

    A revoked task is not dumped.
    """
    url = redis_server.url.replace("/0", "/2")
    client = make_app(redis_server.url)
    worker = start_worker(tmp_path, redis_server.url, url, concurrency=2)
    try:
        slow = client.send_task("dlq.sleepy", args=(60,), headers={"x-trace": "slow"})
        died = client.send_task("dlq.die")
        fine = client.send_task("dlq.sleepy", args=(0.01,))
        wait_for(
            lambda: {slow.id, died.id} <= set(dumps_by_task_id(url)),
            timeout=60,
            message=lambda: worker.output()[-4000:],
        )
        wait_for(lambda: f"{fine.id}] succeeded" in worker.output(), timeout=30)
        # Revoked (terminated while running, or discarded before): never a final failure.
        # Its own time limit: the revoke must win even on a loaded machine.
        victim = client.send_task("dlq.sleepy", args=(30,), time_limit=120)
        wait_for(lambda: f"{victim.id}] received" in worker.output(), timeout=30)
        client.control.revoke(victim.id, terminate=True)
        wait_for(
            lambda: (
                f"Terminating {victim.id}" in worker.output()
                or f"{victim.id}] revoked" in worker.output()
                or f"Discarding revoked task: dlq.sleepy[{victim.id}]" in worker.output()
            ),
            timeout=30,
            message=lambda: worker.output()[-3000:],
        )
    finally:
        assert worker.terminate(timeout=60) == 0
    dumps = dumps_by_task_id(url)
    assert set(dumps) == {slow.id, died.id}, worker.log.read_text()[-3000:]
    # Celery 5.7 reports a hard time limit twice (on_failure, then on_timeout).
    assert len(dumps[slow.id]) == len(dumps[died.id]) == 1
    assert "dump is partial" not in worker.log.read_text()
    timed_out = dumps[slow.id][0]
    assert timed_out.task_name == "dlq.sleepy"
    assert timed_out.exc_type.endswith(".TimeLimitExceeded")
    assert timed_out.args == [60]
    assert timed_out.headers["id"] == slow.id and timed_out.headers["x-trace"] == "slow"
    assert timed_out.headers["timelimit"] == [None, None]  # as sent: the limit is the task's
    assert timed_out.delivery_info["routing_key"] == "dlq"
    assert timed_out.properties["correlation_id"] == slow.id
    assert timed_out.hostname.startswith("worker@")
    lost = dumps[died.id][0]
    assert lost.task_name == "dlq.die"
    assert lost.exc_type == "billiard.exceptions.WorkerLostError"
    assert lost.headers["id"] == died.id


def test_all_tasks_time_limit_and_lost_process_with_a_users_request_class(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """durable_dlq_all_tasks alone sets the Request class, composed with the task's own."""
    url = (tmp_path / "dlq").as_uri()
    client = make_app(redis_server.url)
    worker = start_worker(
        tmp_path, redis_server.url, url, app="tests.integration.dlq_plain_app", concurrency=2
    )
    try:
        slow = client.send_task("dlq.plain_sleepy", args=(60,), headers={"x-trace": "slow"})
        died = client.send_task("dlq.plain_die")
        wait_for(
            lambda: {slow.id, died.id} <= set(dumps_by_task_id(url)),
            timeout=60,
            message=lambda: worker.output()[-4000:],
        )
    finally:
        assert worker.terminate(timeout=60) == 0
    log = worker.log.read_text()
    dumps = dumps_by_task_id(url)
    assert set(dumps) == {slow.id, died.id}, log[-3000:]
    assert len(dumps[slow.id]) == len(dumps[died.id]) == 1
    assert f"audited timeout of {slow.id}" in log  # the user's Request subclass still runs
    assert "dump is partial" not in log
    timed_out = dumps[slow.id][0]
    assert timed_out.task_name == "dlq.plain_sleepy" and timed_out.args == [60]
    assert timed_out.exc_type.endswith(".TimeLimitExceeded")
    assert timed_out.headers["id"] == slow.id and timed_out.headers["x-trace"] == "slow"
    assert timed_out.delivery_info["routing_key"] == "dlq"
    lost = dumps[died.id][0]
    assert lost.task_name == "dlq.plain_die"
    assert lost.exc_type == "billiard.exceptions.WorkerLostError"
    assert lost.headers["id"] == died.id and lost.properties["correlation_id"] == died.id


def test_prefork_2000_failures_exactly_once(tmp_path: Path, redis_server: RedisServer) -> None:
    url = (tmp_path / "dlq").as_uri()
    client = make_app(redis_server.url)
    worker = start_worker(tmp_path, redis_server.url, url, concurrency=2)
    ids: list[str] = []
    try:
        with client.producer_or_acquire() as producer:
            for i in range(2000):
                ids.append(client.send_task("dlq.fail", args=(i,), producer=producer).id)
        store = open_store(url)
        wait_for(
            lambda: store.count() >= 2000,
            timeout=120,
            interval=0.5,
            message=lambda: f"2000 dumps, have {store.count()}",
        )
    finally:
        assert worker.terminate(timeout=60) == 0
    dumps = dumps_by_task_id(url)
    assert set(dumps) == set(ids)
    assert sum(len(v) for v in dumps.values()) == 2000


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_buffer_flushed_on_warm_shutdown(
    pool: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    """With a flush interval of an hour, the dumps still reach the store at shutdown."""
    url = (tmp_path / "dlq").as_uri()
    client = make_app(redis_server.url)
    worker = start_worker(tmp_path, redis_server.url, url, pool=pool, DLQ_FLUSH_INTERVAL="3600")
    store = open_store(url)
    try:
        ids = [client.send_task("dlq.fail", args=(i,)).id for i in range(10)]
        wait_for(
            lambda: all(f"{i}] raised" in worker.output() for i in ids),
            timeout=60,
            message=lambda: worker.output()[-3000:],
        )
        assert store.count() == 0  # still buffered in the pool processes
    finally:
        assert worker.terminate(timeout=60) == 0
    assert {e.task_id for e in store.entries()} == set(ids)


def test_unknown_dlq_url_scheme_stops_the_worker_with_one_line(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Before: the worker started and failed at the first task failure (a traceback)."""
    proc = celery(
        "-A", "tests.integration.dlq_app", "worker", "-P", "solo", "--loglevel=INFO",
        log=tmp_path / "worker.log",
        env={"DLQ_BROKER": redis_server.url, "DLQ_URL": "nope://somewhere/dlq"},
    )  # fmt: skip
    assert proc.wait(timeout=90) != 0
    out = proc.output()
    assert "ready." not in out and "Traceback" not in out, out[-3000:]
    assert [line for line in out.splitlines() if "nope" in line] == [
        "celery-durable: configuration error: durable_dlq_url 'nope://somewhere/dlq': "
        "unknown scheme 'nope'; registered: file, redis, redis+sentinel, rediss, unix"
    ], out[-3000:]
