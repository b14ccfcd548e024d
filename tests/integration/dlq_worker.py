"""Start a real ``celery worker`` on :mod:`tests.integration.dlq_app` for the dlq tests."""

from __future__ import annotations

from pathlib import Path

from celery_durable.dlq import DumpEntry, open_store
from tests.helpers.processes import Proc, celery, wait_ready


def start_worker(
    tmp_path: Path,
    broker: str,
    dlq_url: str,
    *,
    pool: str = "prefork",
    concurrency: int = 2,
    backend: str | None = None,
    name: str = "worker",
    app: str = "tests.integration.dlq_app",
    **env: str,
) -> Proc:
    log = tmp_path / f"{name}.log"
    full_env = {"DLQ_BROKER": broker, "DLQ_URL": dlq_url, **env}
    if backend:
        full_env["DLQ_BACKEND"] = backend
    proc = celery(
        "-A",
        app,
        "worker",
        "-P",
        pool,
        "-c",
        str(concurrency),
        "-Q",
        "dlq",
        "-n",
        f"{name}@%h",
        "--loglevel=INFO",
        "--without-heartbeat",
        "--without-mingle",
        "--without-gossip",
        log=log,
        env=full_env,
    )
    return wait_ready(proc)


def dumps_by_task_id(url: str) -> dict[str, list[DumpEntry]]:
    found: dict[str, list[DumpEntry]] = {}
    store = open_store(url)
    try:
        for entry in store.entries():
            found.setdefault(entry.task_id, []).append(entry)
    finally:
        store.close()
    return found
