"""A producer and a worker surviving a broker restart, counted end to end.

Starts a redis-server on a free loopback port (AOF, fsync always, so redis
itself keeps what it acknowledged), a Celery worker, and a producer sending
3,000 tasks through ``durable+redis://``.  A third of the way in, redis is
killed (SIGKILL) and started again a few seconds later.  Prints sent /
executed / lost / duplicates and the slowest ``apply_async``; exits 1 if
anything was lost.  Everything runs in a temporary directory, on the
embedded defaults (publish_mode=direct).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOTAL = int(os.environ.get("DEMO_TASKS", "3000"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port),
         "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
         "--appendfsync", "always", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc
        except OSError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def executed(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().split()]


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="durable-demo-"))
    port = free_port()
    env = dict(os.environ)
    env.update(
        DEMO_BROKER_URL=f"durable+redis://127.0.0.1:{port}/0",
        DEMO_EXECUTED_FILE=str(workdir / "executed.txt"),
        CELERY_DURABLE_DIR=str(workdir / "durable"),
        PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
    )
    os.environ.update(env)
    redis_proc = start_redis(port, workdir)
    worker_log = open(workdir / "worker.log", "wb")  # noqa: SIM115 - the worker's stdout
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--pool=solo",
         "--loglevel=WARNING", "--without-mingle", "--without-gossip"],
        cwd=HERE, env=env, stdout=worker_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    sys.path.insert(0, str(HERE))
    from tasks import work

    print(f"broker: redis-server on 127.0.0.1:{port}; worker pid {worker.pid}; {TOTAL} tasks")
    slowest = 0.0
    restart_at, killed_at = TOTAL // 3, None
    try:
        for seq in range(TOTAL):
            if seq == restart_at:
                redis_proc.send_signal(signal.SIGKILL)
                redis_proc.wait()
                killed_at = time.monotonic()
                print(f"sent {seq}: redis KILLED; the producer keeps going (spilling to disk)")
            if killed_at and time.monotonic() - killed_at > 3 and redis_proc.poll() is not None:
                redis_proc = start_redis(port, workdir)
                killed_at = None
                print(f"sent {seq}: redis restarted; the drainer forwards the backlog in order")
            started = time.monotonic()
            work.delay(seq)
            if seq:  # the first call also connects and imports: not a publish cost
                slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.002)
        if redis_proc.poll() is not None:
            redis_proc = start_redis(port, workdir)
            print("redis restarted")
        deadline = time.monotonic() + 120
        while len(set(executed(workdir / "executed.txt"))) < TOTAL:
            if time.monotonic() > deadline or worker.poll() is not None:
                break
            time.sleep(0.2)
        done = executed(workdir / "executed.txt")
        unique = set(done)
        lost = TOTAL - len(unique & set(range(TOTAL)))
        print(
            f"sent {TOTAL} / executed {len(unique)} / lost {lost} / "
            f"duplicates {len(done) - len(unique)}; "
            f"slowest apply_async after the first {slowest * 1000:.0f} ms"
        )
        return 1 if lost else 0
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
        redis_proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
