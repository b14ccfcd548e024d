"""A small harness for the restore tests: one redis-server, workers, beat, dump stores."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from celery_durable.dlq.base import DumpEntry, DumpStore
from celery_durable.dlq.stores import open_store
from tests.helpers.processes import Proc, celery, wait_ready
from tests.helpers.redis_server import RedisServer
from tests.helpers.wait import wait_for

HERE = Path(__file__).resolve().parent


class RestoreHarness:
    """Broker on db 0, task state on db 2, a ``redis://`` dump store on db 3."""

    def __init__(self, server: RedisServer, tmp_path: Path, durable_dir: Path) -> None:
        self.server = server
        self.tmp_path = tmp_path
        self.durable_dir = durable_dir
        self.broker_url = server.url
        self.state_url = f"redis://127.0.0.1:{server.port}/2"
        self.redis_dlq_url = f"redis://127.0.0.1:{server.port}/3"
        self.conf: dict[str, Any] = {
            "durable_restore_backoff": 0.5,
            "durable_restore_postpone_interval": 0.5,
        }
        self.every = 0.5
        self.dlq_url = self.redis_dlq_url
        self.procs: list[Proc] = []
        self.broker = server.client(0)
        self.state = server.client(2)
        self.producer_app = Celery("restore-test", broker=self.broker_url, set_as_current=False)

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "RESTORE_BROKER": self.broker_url,
            "RESTORE_STATE": self.state_url,
            "RESTORE_DLQ_URL": self.dlq_url,
            "RESTORE_EVERY": str(self.every),
            "RESTORE_CONF": json.dumps(self.conf),
            "CELERY_DURABLE_DIR": str(self.durable_dir),
        }
        env.update(extra)
        return env

    def worker(self, name: str, queues: str, *args: str, **env: str) -> Proc:
        proc = celery(
            "-A", "restore_app", "worker", "--loglevel=INFO", f"--hostname={name}",
            "-Q", queues, "--without-mingle", "--without-gossip", *args,
            log=self.tmp_path / f"{name.split('@')[0]}.log", env=self.env(**env), cwd=HERE,
        )  # fmt: skip
        self.procs.append(proc)
        return wait_ready(proc)

    def beat(self, **env: str) -> Proc:
        proc = celery(
            "-A", "restore_app", "beat", "--loglevel=INFO",
            "-s", str(self.tmp_path / "beat-schedule"),
            log=self.tmp_path / "beat.log", env=self.env(**env), cwd=HERE,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def cli(self, *args: str, **env: str) -> tuple[int, str]:
        """Run ``celery -A restore_app durable ARGS``: (exit code, output)."""
        log = self.tmp_path / f"cli-{uuid.uuid4().hex[:8]}.log"
        proc = celery(
            "-A", "restore_app", "durable", *args, log=log, env=self.env(**env), cwd=HERE
        )  # fmt: skip
        rc = proc.wait(120)
        return rc, log.read_text(errors="replace")

    def send(self, task: str, count: int, queue: str = "work") -> list[str]:
        ids = []
        with self.producer_app.producer_or_acquire() as producer:
            for n in range(count):
                result = self.producer_app.send_task(
                    task, args=[n] if task.endswith("flaky") else [], queue=queue,
                    producer=producer,
                )  # fmt: skip
                ids.append(result.id)
        return ids

    def store(self, url: str | None = None) -> DumpStore:
        return open_store(url or self.dlq_url)

    def dumps(self, url: str | None = None) -> list[DumpEntry]:
        store = self.store(url)
        try:
            return list(store.entries())
        finally:
            store.close()

    def runs(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.state.hgetall("runs").items()}

    def restore_runs(self) -> int:
        return int(self.state.get("restore_runs") or 0)

    def logs(self) -> str:
        return "\n".join(f"--- {p.log.name}\n{p.output()[-2500:]}" for p in self.procs)

    def wait(self, cond: Any, timeout: float, what: str) -> Any:
        return wait_for(
            cond, timeout=timeout, interval=0.1, message=lambda: f"{what}\n{self.logs()}"
        )

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()


def state_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=10)


def flaky_dump(task_id: str, queue: str, n: int = 0) -> DumpEntry:
    """A dump of ``restore_app.flaky`` as capture writes it, bound for ``queue``."""
    import socket
    import time

    return DumpEntry(
        task_id=task_id,
        task_name="restore_app.flaky",
        args=[n],
        kwargs={},
        headers={
            "lang": "py",
            "task": "restore_app.flaky",
            "id": task_id,
            "root_id": task_id,
            "parent_id": None,
            "group": None,
            "retries": 0,
            "eta": None,
            "expires": None,
            "timelimit": [None, None],
            "argsrepr": f"({n},)",
            "kwargsrepr": "{}",
            "origin": "restore-test",
            "ignore_result": False,
        },
        properties={"correlation_id": task_id, "priority": 0, "delivery_mode": 2},
        delivery_info={"exchange": "", "routing_key": queue, "queue": queue},
        embed={"callbacks": None, "errbacks": None, "chain": None, "chord": None},
        exc_type="RuntimeError",
        exc_message="cause not fixed yet",
        traceback="",
        hostname="celery@test",
        failed_at=time.time() - 60,
        host=socket.gethostname(),
    )
