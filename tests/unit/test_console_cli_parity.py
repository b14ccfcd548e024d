"""Every console action is in the CLI too: unpark, and export/purge/restore by filter."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from celery import Celery
from click.testing import CliRunner, Result

from celery_durable.cli import durable
from celery_durable.dlq import DumpStore, is_parked, open_store
from tests.integration.dlq_writer import entry


@pytest.fixture
def app(tmp_path: Path) -> Celery:
    app = Celery("cli", broker="memory://")
    app.conf.durable_dlq_url = (tmp_path / "dlq").as_uri()
    app.conf.durable_restore_max_attempts = 2
    return app


@pytest.fixture
def store(app: Celery) -> DumpStore:
    store = open_store(app.conf.durable_dlq_url)
    entries = [entry(f"t{i}", 10) for i in range(4)]
    entries[0].exc_type, entries[0].exc_message = "KeyError", "no such customer 42"
    entries[1].delivery_info = {"exchange": "", "routing_key": "mail", "queue": "mail"}
    entries[2].restores = 2  # parked
    entries[3].restores = 5  # parked
    entries[3].task_name = "other.task"
    store.write(entries)
    return store


def cli(app: Celery, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(durable, ["dlq", *args], obj=SimpleNamespace(app=app), input=input)


def ids(store: DumpStore) -> list[str]:
    return sorted(e.task_id for e in store.entries())


def test_unpark_by_id_resets_the_restore_count(app: Celery, store: DumpStore) -> None:
    result = cli(app, "unpark", "t2")
    assert result.exit_code == 0, result.output
    assert "unparked 1 dump(s)" in result.output
    by_id = {e.task_id: e for e in store.entries()}
    assert ids(store) == ["t0", "t1", "t2", "t3"]  # rewritten, not duplicated
    assert by_id["t2"].restores == 0 and not is_parked(by_id["t2"], 2)
    assert by_id["t3"].restores == 5


def test_unpark_all_and_by_task(app: Celery, store: DumpStore) -> None:
    assert "unparked 1" in cli(app, "unpark", "--task", "other.task").output
    assert "unparked 1" in cli(app, "unpark", "--all").output
    assert all(e.restores == 0 for e in store.entries())


def test_unpark_of_a_task_that_is_not_parked_fails(app: Celery, store: DumpStore) -> None:
    result = cli(app, "unpark", "t0")
    assert result.exit_code != 0 and "no parked dump for task id(s) t0" in result.output
    assert cli(app, "unpark").exit_code != 0


def test_export_by_filter(app: Celery, store: DumpStore) -> None:
    result = cli(app, "export", "--exc", "KeyError")
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.output.splitlines() if x.startswith("{")]
    assert [d["task_id"] for d in lines] == ["t0"]
    out = cli(app, "export", "--queue", "mail").output
    assert [json.loads(x)["task_id"] for x in out.splitlines() if x.startswith("{")] == ["t1"]
    out = cli(app, "export", "--search", "CUSTOMER 42").output
    assert [json.loads(x)["task_id"] for x in out.splitlines() if x.startswith("{")] == ["t0"]
    out = cli(app, "export", "--age", ">1h").output
    assert [x for x in out.splitlines() if x.startswith("{")] == []


def test_purge_and_ls_by_filter(app: Celery, store: DumpStore) -> None:
    assert "1 dumps" in cli(app, "ls", "--exc", "KeyError").output
    result = cli(app, "purge", "--search", "t1", "--force")
    assert result.exit_code == 0 and "Purged 1 dumps." in result.output
    assert ids(store) == ["t0", "t2", "t3"]
