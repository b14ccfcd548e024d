"""Restore throughput: dumps republished into redis per second, per dump store.

Beside it, plain Kombu publishing the same messages to the same redis: one
``Producer.publish`` per message (what ``apply_async`` does) and the same inside
``Producer.batch()`` (Kombu 5.7's pipelined publish).  A restore run also reads
and decodes the dumps from its store, rebuilds each message, checks the queue
length (rate control), publishes in pipelined chunks and deletes the dumps.

    .venv/bin/python benchmarks/restore.py [--count 20000] [--repeat 3] [--json PATH]

``--json PATH`` writes the rates (msgs/s) for ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from celery import Celery

from celery_durable.dlq.base import DumpEntry
from celery_durable.dlq.stores import open_store
from celery_durable.restore.message import build_message
from celery_durable.restore.runner import RestoreOptions, restore
from tests.helpers.redis_server import RedisServer

QUEUE = "bench"


def entries(n: int) -> list[DumpEntry]:
    now = time.time() - 3600
    return [
        DumpEntry(
            task_id=f"00000000-0000-4000-8000-{i:012d}",
            task_name="bench.work",
            args=[i, "x" * 40],
            kwargs={"order": i},
            headers={"lang": "py", "retries": 0, "root_id": None, "parent_id": None},
            properties={"priority": 0, "delivery_mode": 2},
            delivery_info={"exchange": "", "routing_key": QUEUE},
            embed={"callbacks": None, "errbacks": None, "chain": None, "chord": None},
            exc_type="ValueError",
            exc_message="boom",
            traceback="Traceback (most recent call last): ...",
            hostname="celery@bench",
            failed_at=now + i * 1e-6,
        )
        for i in range(n)
    ]


def plain_publish(app: Celery, dumps: list[DumpEntry], batched: bool) -> float:
    messages = [build_message(e, app) for e in dumps]
    with app.producer_pool.acquire(block=True) as producer:
        started = time.perf_counter()
        if batched:
            for start in range(0, len(messages), 250):
                with producer.batch(max_size=1001):
                    for m in messages[start : start + 250]:
                        _publish(producer, m)
        else:
            for m in messages:
                _publish(producer, m)
        return time.perf_counter() - started


def _publish(producer: Any, m: Any) -> None:
    producer.publish(
        m.body,
        exchange=m.exchange,
        routing_key=m.routing_key,
        headers=m.headers,
        serializer="json",
        retry=False,
        **m.properties,
    )


def restore_from(app: Celery, url: str, dumps: list[DumpEntry]) -> float:
    store = open_store(url)
    try:
        for start in range(0, len(dumps), 1000):
            store.write([DumpEntry.from_dict(e.to_dict()) for e in dumps[start : start + 1000]])
        opts = RestoreOptions(batch=len(dumps), capacity=10**9, backoff=0.0)
        started = time.perf_counter()
        report = restore(app, store, opts)
        elapsed = time.perf_counter() - started
        assert report.restored == len(dumps), report.as_dict()
        assert not list(store.entries()), "store not empty after restore"
        return elapsed
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N rounds per path")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    n = args.count
    server = RedisServer().start()
    tmp = Path(tempfile.mkdtemp(prefix="durable-bench-"))
    try:
        app = Celery("bench", broker=server.url, set_as_current=False)
        app.conf.task_serializer = "json"
        redis = server.client()
        dumps = entries(n)

        def measure(label: str, run: Any) -> tuple[str, float]:
            best = float("inf")
            for _ in range(args.repeat):
                redis.delete(QUEUE)
                best = min(best, run())
                got = redis.llen(QUEUE)
                assert got == n, f"{label}: {got} messages on the queue, expected {n}"
            return label, n / best

        results = [
            measure("kombu publish (one by one)", lambda: plain_publish(app, dumps, False)),
            measure("kombu publish (Producer.batch)", lambda: plain_publish(app, dumps, True)),
            measure("restore from file://", lambda: restore_from(app, tmp.as_uri(), dumps)),
            measure(
                "restore from redis://",
                lambda: restore_from(app, server.url.replace("/0", "/1"), dumps),
            ),
        ]
        if args.json:
            keys = ("kombu_publish", "kombu_batch", "restore_file", "restore_redis")
            figures = {key: rate for key, (_label, rate) in zip(keys, results, strict=True)}
            Path(args.json).write_text(json.dumps({**figures, "n": n}, indent=2))
        base, pipelined = results[0][1], results[1][1]
        print(
            f"restore benchmark: {n} messages into redis-server {server.port}, "
            f"best of {args.repeat}"
        )
        print(f"{'path':34} {'msgs/s':>10} {'vs one-by-one':>14} {'vs batch':>9}")
        for label, rate in results:
            print(f"{label:34} {rate:>10,.0f} {rate / base:>13.2f}x {rate / pipelined:>8.2f}x")
    finally:
        server.close()


if __name__ == "__main__":
    main()
