"""``dlq restore`` with the in-memory store double and Kombu's memory:// broker."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from celery import Celery
from click.testing import CliRunner, Result
from kombu import Connection, Queue

from celery_durable.cli import dlq_restore, durable
from celery_durable.restore.gate import clear_postponements

from .restore_memstore import MemoryDumpStore, make_entry


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Celery, MemoryDumpStore]]:
    clear_postponements()
    app = Celery("cli", broker="memory://", set_as_current=False)
    app.conf.durable_restore_allow_rate = 0.5
    app.conf.durable_restore_queue_capacity = 4
    app.conf.durable_restore_max_attempts = 2
    store = MemoryDumpStore(url="memory://cli")
    monkeypatch.setattr(dlq_restore, "open_cli_store", lambda _ctx, _url: store)
    with Connection("memory://") as conn:
        for name in ("celery", "busy"):
            Queue(name, channel=conn.default_channel).purge()
    yield app, store
    clear_postponements()


def run(app: Celery, *args: str) -> Result:
    return CliRunner().invoke(durable, ["dlq", "restore", *args], obj=SimpleNamespace(app=app))


def test_needs_exactly_one_selection(env: tuple[Celery, MemoryDumpStore]) -> None:
    app, _ = env
    for args in ((), ("--all", "--task", "x"), ("id1", "--all")):
        result = run(app, *args)
        assert result.exit_code != 0
        assert "exactly one" in result.output


def test_by_id_ignores_backoff_and_parking(env: tuple[Celery, MemoryDumpStore]) -> None:
    app, store = env
    store.write([make_entry("a", failed_at=9e12), make_entry("b", restores=7), make_entry("c")])
    result = run(app, "a", "b")
    assert result.exit_code == 0, result.output
    assert "restored 2 dump(s) (celery: 2)" in result.output
    assert [e.task_id for e in store.entries()] == ["c"]


def test_missing_id_fails(env: tuple[Celery, MemoryDumpStore]) -> None:
    app, store = env
    store.write([make_entry("a")])
    result = run(app, "a", "nope")
    assert result.exit_code == 1
    assert (
        result.output.strip().splitlines()[-1] == "Error: dlq restore: no dump for task id(s) nope"
    )


def test_dry_run_by_task_name(env: tuple[Celery, MemoryDumpStore]) -> None:
    app, store = env
    store.write([make_entry("a", task_name="t.x", restores=2), make_entry("b", task_name="t.y")])
    result = run(app, "--task", "t.x", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "a  t.x  -> celery  (restore #3, parked)" in result.output
    assert "would restore 1 dump(s)" in result.output
    assert len(store.data) == 2


def test_rate_control_unless_forced(env: tuple[Celery, MemoryDumpStore]) -> None:
    app, store = env
    store.write([make_entry(f"q{i}", queue="busy") for i in range(3)])
    result = run(app, "--all")  # limit 0.5 * 4 = 2 messages
    assert result.exit_code == 1
    assert "restored 2 dump(s) (busy: 2)" in result.output
    assert "held back" in result.output and "busy: 1" in result.output
    result = run(app, "--all", "--force")
    assert result.exit_code == 0, result.output
    assert not store.data


def test_an_unreachable_broker_is_one_error_line(
    env: tuple[Celery, MemoryDumpStore],
) -> None:
    from tests.helpers.redis_server import free_port

    _, store = env
    app = Celery("down", broker=f"redis://127.0.0.1:{free_port()}/0", set_as_current=False)
    app.conf.broker_transport_options = {"max_retries": 0}
    store.write([make_entry("a")])
    result = run(app, "--all")
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith("Error: dlq restore: restore run failed: "), line
    assert "Connection refused" in line
    assert [e.task_id for e in store.entries()] == ["a"]
