"""Dead-letter capture benchmark: ``python benchmarks/dlq.py [N] [--json PATH]``.

Measures, in one run:

1. dumps/s through the dump queue itself (``DumpQueue.put`` of N entries with a
   realistic traceback, then the final flush), for the ``file://`` store and a
   local ``redis://`` store (target: >= 5,000/s), and what one ``put`` costs the
   failing task (encoding, and since the write-ahead log, the local append);
2. the per-failing-task cost of capture in Celery's own trace path (what a
   pool process runs for each task), captured vs the same failing task without
   capture;
3. the same in a real ``celery worker`` (solo pool, redis broker): runs of
   N/5 failing tasks with capture and without, alternating (ABBA, ``--rounds``
   of each), timed from ``add_consumer`` to a marker task queued behind them;
   the median of each, in wall time (the figure ``run.py`` reports) and in the
   worker's CPU time (steadier on a shared machine).

``--json PATH`` writes the figures for ``benchmarks/run.py``.  This module is
also the Celery app of part 3 (``celery -A dlq worker`` with this
directory on ``PYTHONPATH``).
"""

from __future__ import annotations

import os
import statistics
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


def bench_worker(n: int, tmp: Path, rounds: int = 4) -> dict[str, Any]:
    """Per failing task in a real solo worker, with capture and without.

    ``rounds`` pairs of runs of ``n`` tasks, alternating ABBA (plain, dumped,
    dumped, plain, ...) so drift in the machine's load hits both alike; each
    figure is the median of its runs.  Wall time runs from ``add_consumer`` to
    the marker task queued behind the failing ones; CPU time is the worker
    process's (user + system, all threads, from ``/proc``), read once the
    round's dumps are in the store, so the flusher's work counts against capture.
    """
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
        node = _node(client)
        store = open_store(dlq_url)
        wall: dict[str, list[float]] = {"plain": [], "dumped": []}
        cpu: dict[str, list[float]] = {"plain": [], "dumped": []}
        threads: dict[str, list[float]] = {"plain": [], "dumped": []}
        order = ["plain", "dumped", "dumped", "plain"] * ((rounds + 1) // 2)
        dumped = 0
        for round_, base in enumerate(order[: 2 * rounds]):
            name = f"bench.fail_{base}"
            queue = f"{base}{round_}"
            with client.producer_or_acquire() as producer:
                for i in range(n):
                    client.send_task(name, args=(i,), queue=queue, producer=producer)
                client.send_task("bench.mark", args=(f"done:{queue}",), queue=queue,
                                 producer=producer)  # fmt: skip
            cpu_before = _cpu_seconds(worker.pid)
            started = time.time()
            client.control.add_consumer(queue, destination=[node], reply=True)
            done = wait_for(lambda q=queue: server.client().get(f"done:{q}"), timeout=300)
            wall[base].append((float(done) - started) / n)
            if base == "dumped":
                dumped += n
                wait_for(lambda d=dumped: store.count() >= d, timeout=120, interval=0.1)
            cpu_after = _cpu_seconds(worker.pid)
            main_s = cpu_after["main"] - cpu_before["main"]
            other_s = cpu_after["other"] - cpu_before["other"]
            cpu[base].append((main_s + other_s) / n)
            threads[base].append(other_s / n)
            client.control.cancel_consumer(queue, destination=[node], reply=True)
        assert store.count() == dumped, (store.count(), dumped)
        return {
            "worker_dumped_s": statistics.median(wall["dumped"]),
            "worker_plain_s": statistics.median(wall["plain"]),
            "worker_dumped_cpu_s": statistics.median(cpu["dumped"]),
            "worker_plain_cpu_s": statistics.median(cpu["plain"]),
            "worker_dumped_threads_cpu_s": statistics.median(threads["dumped"]),
            "worker_plain_threads_cpu_s": statistics.median(threads["plain"]),
            "worker_runs": len(wall["plain"]),
            "worker_wall_runs_s": wall,
            "worker_cpu_runs_s": cpu,
        }
    finally:
        worker.terminate(timeout=60)
        server.close()


def _cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of process ``pid``: its main thread and its other threads.

    From the scheduler's nanosecond counters (``/proc/<pid>/task/<tid>/schedstat``),
    not ``/proc/<pid>/stat``, whose clock ticks are 10 ms.  A thread that ended
    between two reads is lost; the worker's threads live as long as it does.
    """
    found = {"main": 0.0, "other": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            ns = int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
        found["main" if task.name == str(pid) else "other"] += ns / 1e9
    return found


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
    parser.add_argument(
        "--rounds", type=int, default=4, help="solo worker: runs of each kind (alternating)"
    )
    parser.add_argument("--worker-only", action="store_true", help="only part 3 (the solo worker)")
    args = parser.parse_args()
    n = args.n
    figures: dict[str, Any] = {"n": n}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        os.environ["CELERY_DURABLE_DIR"] = str(tmp)
        print(f"celery-durable dlq benchmark, N={n}; ratios vs the 5,000 dumps/s target")
        if not args.worker_only:
            figures.update(bench_parts_1_2(n, tmp))
        wn = max(n // 5, 200)
        worker = bench_worker(wn, tmp, rounds=args.rounds)
        wdumped, wplain = worker["worker_dumped_s"], worker["worker_plain_s"]
        cdumped, cplain = worker["worker_dumped_cpu_s"], worker["worker_plain_cpu_s"]
        print(
            f"solo worker (median of {args.rounds} x {wn} tasks each, ABBA), per failing task: "
            f"plain {wplain * 1e6:7.1f} us, "
            f"captured {wdumped * 1e6:7.1f} us, overhead {(wdumped - wplain) * 1e6:6.1f} us "
            f"(ratio {wdumped / wplain:.3f}; {1 / wdumped:,.0f} captured failures/s)"
        )
        print(
            f"solo worker CPU (user+sys, flush included), per failing task: "
            f"plain {cplain * 1e6:7.1f} us, captured {cdumped * 1e6:7.1f} us, overhead "
            f"{(cdumped - cplain) * 1e6:6.1f} us (ratio {cdumped / cplain:.3f}); of which "
            f"threads other than the main one: plain "
            f"{worker['worker_plain_threads_cpu_s'] * 1e6:.1f} us, captured "
            f"{worker['worker_dumped_threads_cpu_s'] * 1e6:.1f} us"
        )
        for what in ("wall", "cpu"):
            runs = worker[f"worker_{what}_runs_s"]
            print(
                f"  {what} per run (us, in order of kind): "
                + "; ".join(f"{k} " + ", ".join(f"{v * 1e6:.0f}" for v in runs[k]) for k in runs)
            )
        figures.update(worker, worker_n=wn)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


def bench_parts_1_2(n: int, tmp: Path) -> dict[str, float]:
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
    return {
        "queue_file": file_rate,
        "queue_redis": redis_rate,
        "trace_plain_s": plain,
        "trace_dumped_s": dumped,
        "trace_plain_cpu_s": plain_cpu,
        "trace_dumped_cpu_s": dumped_cpu,
    }


if __name__ == "__main__":
    main()
