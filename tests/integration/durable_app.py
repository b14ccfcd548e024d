"""Celery app for the transport's integration tests (imported by worker subprocesses).

Configured from the environment so each test picks its own servers:
DURABLE_BROKER_URL (``durable+redis://...``), DURABLE_RESULTS_URL (a redis the
tests never kill, where tasks record what ran), DURABLE_TRANSPORT_OPTIONS (JSON).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import Celery

import celery_durable  # noqa: F401 - registers the durable transport

app = Celery("durable_app", broker=os.environ.get("DURABLE_BROKER_URL", "durable+redis://"))
app.conf.update(
    result_backend=os.environ.get("DURABLE_RESULTS_URL"),
    broker_transport_options=json.loads(os.environ.get("DURABLE_TRANSPORT_OPTIONS", "{}")),
    worker_prefetch_multiplier=1,
    task_acks_late=False,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

if os.environ.get("DURABLE_QUORUM"):
    # RabbitMQ tests: ``record`` goes to a quorum queue, everything else to the
    # default classic queue.
    from kombu import Queue

    app.conf.task_queues = [
        Queue("celery"),
        Queue("quorum", durable=True, queue_arguments={"x-queue-type": "quorum"}),
    ]
    app.conf.task_routes = {"durable_app.record": {"queue": "quorum"}}

_results: redis.Redis | None = None


def results() -> redis.Redis:
    global _results
    if _results is None:
        _results = redis.Redis.from_url(os.environ["DURABLE_RESULTS_URL"])
    return _results


@app.task(name="durable_app.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="durable_app.record", ignore_result=True, bind=True)
def record(self: Any, producer: str, seq: int) -> None:
    """Note that (producer, seq) ran, in execution order.

    A message Kombu redelivered (visibility timeout after the worker lost its
    connection holding it) is marked ``:r``: its position says nothing about
    the order in which the producer's messages reached the broker.
    """
    redelivered = (self.request.delivery_info or {}).get("redelivered")
    results().rpush("arrivals", f"{producer}:{seq}" + (":r" if redelivered else ""))


@app.task(name="durable_app.spawn", ignore_result=True)
def spawn(name: str, count: int) -> None:
    """Wait for the test's go signal (the broker is down by then), then publish subtasks."""
    deadline = time.monotonic() + 60
    while not results().exists("go") and time.monotonic() < deadline:
        time.sleep(0.02)
    for seq in range(count):
        record.delay(f"{name}-{os.getpid()}", seq)
    results().rpush("spawned", f"{name}:{os.getpid()}")


@app.task(name="durable_app.sink", ignore_result=True)
def sink(producer: str, seq: int, pad: str) -> None:
    """A padded subtask: only its arrival in the broker counts (nobody consumes it)."""


@app.task(name="durable_app.spawn_big", ignore_result=True)
def spawn_big(name: str, count: int, size: int) -> None:
    """Say it started, wait for "go" (the broker is down by then), publish padded subtasks.

    ``count`` x ``size`` bytes go to the ``burst`` queue: more than LevelDB's
    4 MB write buffer spills in this (pool child) process.
    """
    results().rpush("started", f"{name}:{os.getpid()}")
    deadline = time.monotonic() + 60
    while not results().exists("go") and time.monotonic() < deadline:
        time.sleep(0.02)
    pad = "x" * size
    for seq in range(count):
        sink.apply_async((f"{name}-{os.getpid()}", seq, pad), queue="burst")
    results().rpush("spawned", f"{name}:{os.getpid()}")
