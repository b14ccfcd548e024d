"""Capture decisions through Celery's own tracer (the code a pool process runs), memory://."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.app.trace import build_tracer
from celery.exceptions import Ignore, Reject

from celery_durable import dead_letter
from celery_durable.dlq import DumpEntry, open_store
from celery_durable.dlq import capture as capture_mod
from celery_durable.dlq.capture import queue_for_app


def make_app(tmp_path: Path, **conf: Any) -> Celery:
    app = Celery("unit", broker="memory://", backend="cache+memory://")
    app.conf.update({"durable_dlq_url": (tmp_path / "dlq").as_uri(), **conf})
    return app


def run(app: Celery, name: str, *args: Any, **request: Any) -> str:
    """Run ``name`` the way a worker's pool process does (not eagerly)."""
    task = app.tasks[name]
    task_id = str(uuid.uuid4())
    req = {
        "id": task_id,
        "task": name,
        "retries": 0,
        "root_id": task_id,
        "delivery_info": {"exchange": "", "routing_key": "celery"},
        "properties": {"correlation_id": task_id, "delivery_tag": "x", "priority": 0},
        "hostname": "unit@test",
        "callbacks": None,
        "errbacks": None,
        "chain": None,
        "chord": None,
        **request,
    }
    tracer = build_tracer(name, task, eager=False, app=app, propagate=False)
    tracer(task_id, list(args), {}, req)
    return task_id


def dumps(app: Celery) -> dict[str, DumpEntry]:
    assert queue_for_app(app).flush()
    return {e.task_id: e for e in open_store(app.conf.durable_dlq_url).entries()}


def test_decorator_either_order_and_exclusions(tmp_path: Path) -> None:
    app = make_app(tmp_path)

    @dead_letter
    @app.task(name="over")
    def over() -> None:
        raise RuntimeError("over")

    @app.task(name="under", bind=True)
    @dead_letter(exclude=(ValueError,))
    def under(self: Any, kind: str) -> None:
        raise ValueError() if kind == "v" else KeyError(kind)

    @app.task(name="plain")
    def plain() -> None:
        raise RuntimeError("plain")

    ids = {
        "over": run(app, "over"),
        "excluded": run(app, "under", "v"),
        "caught": run(app, "under", "k"),
        "plain": run(app, "plain"),
    }
    got = dumps(app)
    assert set(got) == {ids["over"], ids["caught"]}
    entry = got[ids["over"]]
    assert entry.task_name == "over" and entry.exc_type == "RuntimeError"
    assert entry.headers["root_id"] == ids["over"] and entry.headers["retries"] == 0
    assert entry.properties == {"correlation_id": ids["over"], "priority": 0}
    assert entry.delivery_info["routing_key"] == "celery"
    assert entry.delivery_info["queue"] == "celery"
    assert entry.hostname == "unit@test"
    assert got[ids["caught"]].args == ["k"]


def test_decorator_on_a_finalized_app(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    app.finalize()

    @dead_letter(exclude=(KeyError,))
    @app.task(name="late")
    def late() -> None:
        raise RuntimeError("late")

    task_id = run(app, "late")
    assert set(dumps(app)) == {task_id}


def test_all_tasks_setting(tmp_path: Path) -> None:
    app = make_app(tmp_path, durable_dlq_all_tasks=True)

    @app.task(name="all.plain")
    def plain() -> None:
        raise RuntimeError("plain")

    task_id = run(app, "all.plain", **{"x-durable-restores": 3, "x-custom": "c"})
    [entry] = dumps(app).values()
    assert entry.task_id == task_id and entry.restores == 3
    assert entry.headers["x-custom"] == "c"


def test_all_tasks_never_dumps_our_own_tasks(tmp_path: Path) -> None:
    app = make_app(tmp_path, durable_dlq_all_tasks=True)

    @app.task(name="celery_durable.restore_like")
    def ours() -> None:
        raise RuntimeError("a failing restore run")

    run(app, "celery_durable.restore_like")
    assert dumps(app) == {}


def test_retry_reject_ignore_and_eager_are_not_final(tmp_path: Path) -> None:
    app = make_app(tmp_path, durable_dlq_all_tasks=True)

    @app.task(name="retrying", bind=True, max_retries=3)
    def retrying(self: Any) -> None:
        raise self.retry(countdown=60)

    @app.task(name="rejecting")
    def rejecting() -> None:
        raise Reject("no", requeue=False)

    @app.task(name="ignoring")
    def ignoring() -> None:
        raise Ignore()

    @app.task(name="eager.failing")
    def failing() -> None:
        raise RuntimeError("eager")

    with app.connection_for_write() as conn, app.producer_or_acquire(conn):
        run(app, "retrying")
    run(app, "rejecting")
    run(app, "ignoring")
    failing.apply()  # eager: no message to restore
    assert dumps(app) == {}


def test_capture_errors_are_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(tmp_path, durable_dlq_url="nosuch://x")

    @dead_letter
    @app.task(name="err.f")
    def f() -> None:
        raise RuntimeError("f")

    with caplog.at_level(logging.ERROR, logger="celery_durable.dlq"):
        task_id = run(app, "err.f")
    assert f"could not capture the failure of task {task_id}" in caplog.text
    assert "DROPPED DUMP (cannot queue the dump: " in caplog.text
    assert f'"task_id": "{task_id}"' in caplog.text


def test_forked_child_starts_with_no_queue(tmp_path: Path) -> None:
    app = make_app(tmp_path, durable_dlq_flush_interval=3600.0)

    @dead_letter
    @app.task(name="fork.f")
    def f() -> None:
        raise RuntimeError("f")

    parent_id = run(app, "fork.f")
    assert len(queue_for_app(app)) == 1
    pid = os.fork()
    if pid == 0:  # the child must neither see nor write the parent's buffer
        ok = not capture_mod._queues and len(queue_for_app(app)) == 0
        queue_for_app(app).flush()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert open_store(app.conf.durable_dlq_url).count() == 0
    assert set(dumps(app)) == {parent_id}


def test_unknown_serializer_is_a_config_error_naming_the_registered_ones(tmp_path: Path) -> None:
    from celery_durable.dlq.codec import codec_for_app
    from celery_durable.exceptions import ConfigError

    app = make_app(tmp_path, durable_dlq_serializer="jsonn")
    with pytest.raises(ConfigError, match=r"durable_dlq_serializer='jsonn'.*registered: .*json"):
        codec_for_app(app)
