"""Fixtures for integration tests: real redis-servers and celery worker subprocesses."""

from __future__ import annotations

import gc
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import celery_durable  # noqa: F401 - registers the durable transport alias
from tests.helpers.processes import Proc, celery, python, wait_ready
from tests.helpers.redis_server import RedisServer
from tests.helpers.wait import wait_for

HERE = Path(__file__).resolve().parent


class Cluster:
    """A broker redis (killable), a results redis (never killed) and our subprocesses."""

    def __init__(self, tmp_path: Path, durable_dir: Path, persistent: bool) -> None:
        self.tmp_path = tmp_path
        self.durable_dir = durable_dir
        self.broker = RedisServer(persistent=persistent).start()
        self.results = RedisServer().start()
        self.transport_options: dict[str, Any] = {}
        self.procs: list[Proc] = []
        self.apps: list[Any] = []

    @property
    def broker_url(self) -> str:
        return f"durable+redis://127.0.0.1:{self.broker.port}/0"

    def env(self, **extra: Any) -> dict[str, str]:
        options = {**self.transport_options, **extra.pop("options", {})}
        env = {
            "DURABLE_BROKER_URL": self.broker_url,
            "DURABLE_RESULTS_URL": self.results.url,
            "DURABLE_TRANSPORT_OPTIONS": json.dumps(options),
            "CELERY_DURABLE_DIR": str(self.durable_dir),
        }
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def worker(self, *args: str, name: str = "worker", **env: Any) -> Proc:
        proc = celery(
            "-A", "durable_app", "worker", "--loglevel=INFO", f"--hostname={name}@%h", *args,
            log=self.tmp_path / f"{name}.log", env=self.env(**env), cwd=HERE,
        )  # fmt: skip
        self.procs.append(proc)
        return wait_ready(proc)

    def producer(self, name: str, count: int, *args: str, **env: Any) -> Proc:
        proc = python(
            HERE / "durable_producer.py", name, str(count), *args,
            log=self.tmp_path / f"producer-{name}.log", env=self.env(**env), cwd=HERE,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    @staticmethod
    def sent(proc: Proc) -> list[int]:
        return [
            int(line.split()[1]) for line in proc.output().splitlines() if line.startswith("sent ")
        ]

    def arrivals(self, redelivered: bool = True) -> list[tuple[str, int]]:
        """(producer, seq) in execution order; ``redelivered=False`` drops Kombu redeliveries."""
        out = []
        for raw in self.results.client().lrange("arrivals", 0, -1):
            producer, seq, *flag = raw.decode().split(":")
            if redelivered or not flag:
                out.append((producer, int(seq)))
        return out

    def app(self) -> Any:
        """A fresh Celery app on this cluster's broker, for sending from the test process.

        Not durable_app.app: its producer pool would still point at the broker
        of whichever test used it first.
        """
        from celery import Celery

        app = Celery("test-client", broker=self.broker_url, backend=self.results.url,
                     set_as_current=False)  # fmt: skip
        app.conf.broker_transport_options = dict(self.transport_options)
        # An AsyncResult's __del__ unsubscribes from the results redis.  On Celery
        # 5.4 that retries a dead server 20 times (~20 s per result, and pytest's
        # timeout is swallowed inside __del__), so a result collected after close()
        # stopped the server would stall a later test for an hour: never retry.
        app.conf.result_backend_transport_options = {"retry_policy": {"max_retries": 0}}
        self.apps.append(app)
        return app

    def wait_arrived(self, expected: set[tuple[str, int]], timeout: float = 120) -> list[Any]:
        def done() -> bool:
            return expected <= set(self.arrivals())

        wait_for(
            done,
            timeout=timeout,
            interval=0.2,
            message=lambda: (
                f"{len(expected - set(self.arrivals()))} of {len(expected)} messages to arrive "
                f"(missing: {sorted(expected - set(self.arrivals()))[:10]}); "
                + "; ".join(f"{p.log.name}: {p.output()[-1500:]}" for p in self.procs)
            ),
        )
        return self.arrivals()

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
        # Results are in reference cycles: collect them while their redis still runs.
        gc.collect()
        for app in self.apps:
            app.close()
        self.broker.close()
        self.results.close()


def duplicates(arrivals: list[tuple[str, int]]) -> int:
    return sum(n - 1 for n in Counter(arrivals).values())


def assert_ordered(arrivals: list[tuple[str, int]]) -> None:
    """Per producer, first arrivals come in publish order (duplicates may repeat later).

    Pass ``cluster.arrivals(redelivered=False)``: a message Kombu redelivers
    after a visibility timeout arrives late by design of the redis transport.
    """
    seen: set[tuple[str, int]] = set()
    last: dict[str, int] = {}
    for producer, seq in arrivals:
        if (producer, seq) in seen:
            continue
        seen.add((producer, seq))
        assert seq > last.get(producer, -1), f"{producer}: {seq} arrived after {last[producer]}"
        last[producer] = seq


@pytest.fixture
def cluster(tmp_path: Path, durable_dir: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, durable_dir, persistent=True)
    try:
        yield c
    finally:
        c.close()
