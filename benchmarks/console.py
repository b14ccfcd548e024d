"""Console listing benchmark: ``python benchmarks/console.py [N] [--segment-size K]``.

Fills a ``file://`` store and a ``redis://`` store (a fresh local redis-server)
with N dumps (default 100,000; the file store in segments of K dumps, default
100, as a busy fleet's dump queues write them), starts a real
``celery durable web`` for each and times, over 20 requests each with a real
HTTP client:

1. the first page of the dead-letter list (``/dumps``);
2. a filtered page (task name + exception type + text search);
3. the overview page (``/``).

Target: < 300 ms median for 1 and 2.  The very first request of a console
process reads and summarises every dump (the cold start) and is reported on its
own; the 20 timed requests follow it, a quarter of a second apart, while
writers keep adding dumps in the background (``--writers``, a flush every 0.2 s
each, like failing workers), so every request finds new segments or ids to read.

This module is also the Celery app the console runs (``-A console``).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from celery import Celery  # noqa: E402

from celery_durable.dlq import DumpEntry, open_store  # noqa: E402

app = Celery("console_bench", broker="memory://")
app.conf.update(durable_dlq_url=os.environ.get("BENCH_DLQ_URL", ""), durable_dlq_max_entries=None)

TASKS = [f"shop.tasks.{name}" for name in ("charge", "email", "invoice", "ship", "refund")]
EXCS = ["ValueError", "KeyError", "TimeoutError", "requests.exceptions.HTTPError"]
TRACEBACK = "".join(
    f'  File "/srv/app/shop/tasks.py", line {n}, in step_{n}\n    do_step({n})\n'
    for n in range(12)
)


def make(i: int, now: float) -> DumpEntry:
    task_id = f"{i:08d}-5b1c-4a43-9d5e-{i:012d}"
    return DumpEntry(
        task_id=task_id,
        task_name=TASKS[i % len(TASKS)],
        args=[i, f"order-{i}"],
        kwargs={"amount": i % 997, "currency": "EUR"},
        headers={"id": task_id, "task": TASKS[i % len(TASKS)], "retries": 3},
        properties={"correlation_id": task_id, "priority": 0},
        delivery_info={"exchange": "", "routing_key": "default", "queue": "default"},
        embed={"callbacks": None, "errbacks": None, "chain": None, "chord": None},
        exc_type=EXCS[i % len(EXCS)],
        exc_message=f"order {i} failed: upstream answered 503 (attempt {i % 7})",
        traceback="Traceback (most recent call last):\n" + TRACEBACK,
        hostname=f"celery@worker-{i % 8}",
        failed_at=now - 86400 + i * 0.5,
        restores=i % 7,
    )


def fill(url: str, count: int, segment: int) -> float:
    store = open_store(url)
    now = time.time() - count
    started = time.perf_counter()
    for start in range(0, count, segment):
        store.write([make(i, now) for i in range(start, min(start + segment, count))])
    store.close()
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        response.read()
        assert response.status == 200, response.status
    return time.perf_counter() - started


def writer(url: str, stop: threading.Event, base: int) -> None:
    """A failing worker's dump queue: a small flush every WRITE_EVERY seconds."""
    store = open_store(url)
    i = base
    while True:
        store.write([make(i, time.time()), make(i + 1, time.time())])
        i += 2
        if stop.wait(WRITE_EVERY):
            break
    store.close()


#: Writers flush this often and requests come this far apart, so nearly every
#: request finds new dumps (the console's incremental path, not a cached page).
WRITE_EVERY = 0.2
REQUEST_EVERY = 0.25


def timed(url: str) -> float:
    took = get(url)
    time.sleep(max(0.0, REQUEST_EVERY - took))
    return took


def measure(url: str, count: int, segment: int, writers: int) -> None:
    fill_s = fill(url, count, segment)
    port = free_port()
    env = dict(os.environ, BENCH_DLQ_URL=url, PYTHONPATH=f"{ROOT}:{ROOT / 'benchmarks'}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "console", "durable", "web", "--port", str(port)],
        env=env,
        cwd=ROOT / "benchmarks",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    threads = [
        threading.Thread(target=writer, args=(url, stop, 10_000_000 * (n + 1)), daemon=True)
        for n in range(writers)
    ]
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get(base + "/healthz")
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"console did not start for {url}") from None
                time.sleep(0.1)
        cold = get(base + "/dumps")
        for t in threads:
            t.start()
        filtered = f"/dumps?task={TASKS[1]}&exc={EXCS[2]}&q=attempt+3"
        print(f"\n{url.split(':')[0]}:// store, {count:,} dumps (filled in {fill_s:.1f} s)")
        print(f"  cold first request (summarises every dump): {cold * 1000:.0f} ms")
        pages = (("first page", "/dumps"), ("filtered page", filtered), ("overview", "/"))
        for name, path in pages:
            times = sorted(timed(base + path) for _ in range(20))
            p95 = times[round(0.95 * (len(times) - 1))]
            print(
                f"  {name:14s} median {statistics.median(times) * 1000:6.1f} ms   "
                f"p95 {p95 * 1000:6.1f} ms   max {times[-1] * 1000:6.1f} ms"
            )
    finally:
        stop.set()
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("count", nargs="?", type=int, default=100_000)
    parser.add_argument("--segment-size", type=int, default=100)
    parser.add_argument("--writers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        measure((Path(tmp) / "dlq").as_uri(), args.count, args.segment_size, args.writers)
        port = free_port()
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            measure(f"redis://127.0.0.1:{port}/0", args.count, 1000, args.writers)
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
