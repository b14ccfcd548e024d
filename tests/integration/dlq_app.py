"""The Celery app the dead-letter worker tests run (``celery -A tests.integration.dlq_app``).

Configured from the environment so every test can start a worker with its own
broker, dump store and flush settings: ``DLQ_BROKER``, ``DLQ_BACKEND``, ``DLQ_URL``,
``DLQ_ALL_TASKS``, ``DLQ_FLUSH_INTERVAL``, ``DLQ_CAPACITY``, ``DLQ_METRICS_PORT``.

``DLQ_WITNESS=path``: a ``task_failure`` handler connected *after* capture's
appends each failed ``dlq.fail`` task id to ``path``, so a test knows which
failures had their capture handler return before a SIGKILL.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from celery import Celery, signals
from celery.exceptions import Ignore, Reject

from celery_durable import dead_letter


def make_app(broker: str, backend: str | None = None) -> Celery:
    app = Celery("dlq_app", broker=broker, backend=backend)
    app.conf.update(
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=True,
        task_default_queue="dlq",
        result_expires=600,
        durable_dlq_url=os.environ.get("DLQ_URL", ""),
        durable_dlq_all_tasks=os.environ.get("DLQ_ALL_TASKS") == "1",
        durable_dlq_flush_interval=float(os.environ.get("DLQ_FLUSH_INTERVAL", "0.2")),
        durable_dlq_capacity_bytes=int(os.environ.get("DLQ_CAPACITY", str(1 << 20))),
    )
    if os.environ.get("DLQ_METRICS_PORT"):
        app.conf.durable_metrics_port = int(os.environ["DLQ_METRICS_PORT"])
    return app


app = make_app(
    os.environ.get("DLQ_BROKER", "redis://127.0.0.1:6379/0"), os.environ.get("DLQ_BACKEND")
)


def _witness(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
    if getattr(sender, "name", None) == "dlq.fail":
        fd = os.open(os.environ["DLQ_WITNESS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{task_id}\n".encode())
        finally:
            os.close(fd)


if os.environ.get("DLQ_WITNESS"):
    import celery_durable.dlq.capture  # noqa: F401 - capture's handler first

    signals.task_failure.connect(_witness, weak=False)


@dead_letter
@app.task(
    name="dlq.autoretry",
    bind=True,
    autoretry_for=(RuntimeError,),
    max_retries=2,
    default_retry_delay=0,
)
def autoretry(self: Any, order: int) -> None:
    raise RuntimeError(f"order {order} failed on try {self.request.retries}")


@app.task(name="dlq.excluded")
@dead_letter(exclude=(ValueError,))
def excluded(kind: str) -> None:
    if kind == "value":
        raise ValueError("excluded on purpose")
    raise KeyError(kind)


@app.task(name="dlq.plain")
def plain(n: int) -> None:
    raise RuntimeError(f"plain {n}")


@dead_letter
@app.task(name="dlq.fail")
def fail(n: int, **kwargs: Any) -> None:
    raise RuntimeError(f"fail {n}")


@app.task(name="dlq.ok")
def ok(*args: Any) -> int:
    return len(args)


@dead_letter
@app.task(name="dlq.reject")
def reject() -> None:
    raise Reject("no thanks", requeue=False)


@dead_letter
@app.task(name="dlq.ignore")
def ignore() -> None:
    raise Ignore()


@dead_letter
@app.task(name="dlq.sleepy", time_limit=2)
def sleepy(seconds: float) -> None:
    time.sleep(seconds)


@dead_letter
@app.task(name="dlq.die")
def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
