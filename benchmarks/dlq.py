"""Dead-letter capture benchmark: ``python benchmarks/dlq.py [N] [--json PATH]``.

Measures, in one run:

1. dumps/s through the dump queue itself (``DumpQueue.put`` of N entries with a
   realistic traceback, then the final flush), for the ``file://`` store and a
   local ``redis://`` store (target: >= 5,000/s), and what one ``put`` costs the
   failing task (encoding, and since the write-ahead log, the local append);
2. the per-failing-task cost of capture in Celery's own trace path (what a
   pool process runs for each task), captured vs the same failing task without
   capture;
3. the same in a real ``celery worker`` (solo pool, redis broker): N failing
   tasks with capture vs N without, timed from ``add_consumer`` to a marker task
   queued behind them.

``--json PATH`` writes the figures for ``benchmarks/run.py``.  This module is
also the Celery app of part 3 (``celery -A dlq worker`` with this
directory on ``PYTHONPATH``).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from celery import Celery  # noqa: E402

from celery_durable import dead_letter  # noqa: E402

app = Celery("dlq_bench", broker=os.environ.get("BENCH_BROKER", "memory://"))
app.conf.update(
    broker_connection_retry_on_startup=True,
    durable_dlq_url=os.environ.get("BENCH_DLQ_URL", ""),
    worker_hijack_root_logger=False,
)


@dead_letter
@app.task(name="bench.fail_dumped")
def fail_dumped(n: int) -> None:
    raise RuntimeError(f"failed {n}")


@app.task(name="bench.fail_plain")
def fail_plain(n: int) -> None:
    raise RuntimeError(f"failed {n}")


@app.task(name="bench.mark")
def mark(key: str) -> None:
    import redis

    redis.Redis.from_url(app.conf.broker_url).set(key, repr(time.time()))


def sample_entry(i: int) -> Any:
    from celery_durable.dlq import DumpEntry

    try:
        raise RuntimeError(f"order {i} failed")
    except RuntimeError:
        tb = traceback.format_exc() * 4
    task_id = str(uuid.uuid4())
    return DumpEntry(
        task_id=task_id,
        task_name="shop.charge",
        args=[i, "EUR"],
        kwargs={"order_id": i, "retry": True},
        headers={"id": task_id, "task": "shop.charge", "retries": 3, "root_id": task_id},
        properties={"correlation_id": task_id, "reply_to": "", "priority": 0},
        delivery_info={"exchange": "", "routing_key": "celery", "queue": "celery"},
        embed={"callbacks": None, "errbacks": None, "chain": None, "chord": None},
        exc_type="RuntimeError",
        exc_message=f"order {i} failed",
        traceback=tb,
        hostname="celery@bench",
        failed_at=time.time(),
    )


def bench_queue(url: str, n: int) -> tuple[float, float]:
    """(dumps/s through put and the final flush, seconds per put)."""
    from celery_durable.dlq import open_store
    from celery_durable.dlq.dumpqueue import DumpQueue

    store = open_store(url)
    entries = [sample_entry(i) for i in range(n)]
    queue = DumpQueue(store, capacity_bytes=1 << 20, flush_interval=1.0)
    started = time.perf_counter()
    put_time = 0.0
    for e in entries:
        t0 = time.perf_counter()
        queue.put(e)
        put_time += time.perf_counter() - t0
    assert queue.close(timeout=120)
    elapsed = time.perf_counter() - started
    assert store.count() == n, store.count()
    return n / elapsed, put_time / n


def bench_trace(n: int, tmp: Path) -> tuple[float, float, float, float]:
    """Per failing task through Celery's tracer: wall seconds (with capture, without),
    then CPU seconds of the whole process, flush to the store included (same order).

    CPU time is what capture costs the machine, and is far less sensitive to
    other load on a shared machine than wall time.
    """
    import logging

    from celery.app.trace import build_tracer

    from celery_durable.dlq.capture import queue_for_app

    logging.getLogger("celery.app.trace").setLevel(logging.CRITICAL)
    app.conf.durable_dlq_url = (tmp / "trace").as_uri()

    def run(name: str) -> tuple[float, float]:
        task = app.tasks[name]
        tracer = build_tracer(name, task, eager=False, app=app, propagate=False)
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            task_id = str(uuid.uuid4())
            tracer(task_id, [i], {}, {"id": task_id, "task": name, "hostname": "bench"})
        wall = (time.perf_counter() - started) / n
        assert queue_for_app(app).flush()
        return wall, (time.process_time() - cpu) / n

    run("bench.fail_plain")  # warm up
    plain, dumped = [], []
    for _ in range(3):  # interleaved, best of three: the machine is shared
        plain.append(run("bench.fail_plain"))
        dumped.append(run("bench.fail_dumped"))
    queue_for_app(app).close()
    return (
        min(w for w, _ in dumped),
        min(w for w, _ in plain),
        min(c for _, c in dumped),
        min(c for _, c in plain),
    )


def bench_worker(n: int, tmp: Path) -> tuple[float, float]:
    """Seconds per failing task in a real solo worker: (with capture, without)."""
    from celery_durable.dlq import open_store
    from tests.helpers.processes import celery
    from tests.helpers.redis_server import RedisServer
    from tests.helpers.wait import wait_for

    server = RedisServer().start()
    dlq_url = (tmp / "worker").as_uri()
    env = {
        "BENCH_BROKER": server.url,
        "BENCH_DLQ_URL": dlq_url,
        "PYTHONPATH": str(Path(__file__).parent),
    }
    client = Celery("bench_client", broker=server.url)
    worker = celery(
        "-A", "dlq", "worker", "-P", "solo", "-Q", "idle", "-n", "bench@%h",
        "--loglevel=WARNING", "--without-heartbeat", "--without-mingle", "--without-gossip",
        log=tmp / "worker.log", env=env, cwd=Path(__file__).parent,
    )  # fmt: skip
    try:
        wait_for(lambda: _pong(client), timeout=60, interval=0.2)
        results: dict[str, list[float]] = {"plain": [], "dumped": []}
        rounds = [("bench.fail_plain", "plain"), ("bench.fail_dumped", "dumped")] * 2
        for round_, (name, base) in enumerate(rounds):
            queue = f"{base}{round_}"
            with client.producer_or_acquire() as producer:
                for i in range(n):
                    client.send_task(name, args=(i,), queue=queue, producer=producer)
                client.send_task("bench.mark", args=(f"done:{queue}",), queue=queue,
                                 producer=producer)  # fmt: skip
            started = time.time()
            client.control.add_consumer(queue, destination=[_node(client)], reply=True)
            done = wait_for(lambda q=queue: server.client().get(f"done:{q}"), timeout=300)
            results[base].append((float(done) - started) / n)
            client.control.cancel_consumer(queue, destination=[_node(client)], reply=True)
        store = open_store(dlq_url)
        wait_for(lambda: store.count() == 2 * n, timeout=60)
        return min(results["dumped"]), min(results["plain"])
    finally:
        worker.terminate(timeout=60)
        server.close()


def _pong(client: Celery) -> bool:
    return bool(client.control.ping(timeout=0.5))


def _node(client: Celery) -> str:
    return next(iter(client.control.ping(timeout=1.0)[0]))


def main() -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=5000, help="failing tasks")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    n = args.n
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        os.environ["CELERY_DURABLE_DIR"] = str(tmp)
        print(f"celery-durable dlq benchmark, N={n}; ratios vs the 5,000 dumps/s target")
        file_rate, file_put = bench_queue((tmp / "q").as_uri(), n)
        print(
            f"dump queue -> file://   {file_rate:10,.0f} dumps/s  ({file_rate / 5000:.1f}x); "
            f"put() {file_put * 1e6:6.1f} us"
        )
        from tests.helpers.redis_server import RedisServer

        server = RedisServer().start()
        try:
            redis_rate, redis_put = bench_queue(server.url, n)
        finally:
            server.close()
        print(
            f"dump queue -> redis://  {redis_rate:10,.0f} dumps/s  ({redis_rate / 5000:.1f}x); "
            f"put() {redis_put * 1e6:6.1f} us"
        )
        dumped, plain, dumped_cpu, plain_cpu = bench_trace(n, tmp)
        print(
            f"trace path, per failing task: plain {plain * 1e6:7.1f} us, captured "
            f"{dumped * 1e6:7.1f} us, overhead {(dumped - plain) * 1e6:6.1f} us "
            f"(ratio {dumped / plain:.2f})"
        )
        print(
            f"trace path, CPU per failing task incl. flush: plain {plain_cpu * 1e6:7.1f} us, "
            f"captured {dumped_cpu * 1e6:7.1f} us, overhead "
            f"{(dumped_cpu - plain_cpu) * 1e6:6.1f} us (ratio {dumped_cpu / plain_cpu:.2f})"
        )
        wn = max(n // 5, 200)
        wdumped, wplain = bench_worker(wn, tmp)
        print(
            f"solo worker (best of 2 x {wn} tasks), per failing task: "
            f"plain {wplain * 1e6:7.1f} us, "
            f"captured {wdumped * 1e6:7.1f} us, overhead {(wdumped - wplain) * 1e6:6.1f} us "
            f"(ratio {wdumped / wplain:.2f}; {1 / wdumped:,.0f} captured failures/s)"
        )
        if args.json:
            figures = {
                "queue_file": file_rate,
                "queue_redis": redis_rate,
                "trace_plain_s": plain,
                "trace_dumped_s": dumped,
                "worker_plain_s": wplain,
                "worker_dumped_s": wdumped,
                "n": n,
                "worker_n": wn,
            }
            Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
