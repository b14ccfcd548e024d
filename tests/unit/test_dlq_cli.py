"""``celery durable dlq ls|show|purge|export|import`` through click's CliRunner."""

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
    entries = [entry("a", 10), entry("b", 10), entry("c", 10)]
    entries[1].task_name = "other.task"
    entries[2].restores = 2  # parked with max attempts 2
    for i, e in enumerate(entries):
        e.failed_at += i
    store.write(entries)
    return store


def cli(app: Celery, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(durable, ["dlq", *args], obj=SimpleNamespace(app=app), input=input)


def test_is_parked() -> None:
    e = entry("x", 1)
    e.restores = 5
    assert is_parked(e, 5) and not is_parked(e, 6)


def test_ls(app: Celery, store: DumpStore) -> None:
    result = cli(app, "ls")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[2] for line in lines[:3]] == ["a", "b", "c"]
    assert "PARKED" in lines[2] and "PARKED" not in lines[0]
    assert lines[3] == "3 dumps, 1 parked, 0 quarantined"

    result = cli(app, "ls", "--json", "--task", "other.task")
    [line] = result.output.splitlines()
    assert json.loads(line)["task_id"] == "b" and json.loads(line)["parked"] is False

    result = cli(app, "ls", "--parked", "--json")
    assert [json.loads(x)["task_id"] for x in result.output.splitlines()] == ["c"]


def test_ls_reports_quarantined(app: Celery, store: DumpStore) -> None:
    open_store(app.conf.durable_dlq_url, version=7).write([entry("future", 10)])
    result = cli(app, "ls")
    assert "3 dumps, 1 parked, 1 quarantined" in result.output
    assert "QUARANTINED" in result.output and "format version 7" in result.output


def test_show(app: Celery, store: DumpStore) -> None:
    result = cli(app, "show", "b")
    assert result.exit_code == 0
    assert json.loads(result.output)["task_name"] == "other.task"
    result = cli(app, "show", "nope")
    assert result.exit_code != 0 and "no dump of task nope" in result.output


def test_purge(app: Celery, store: DumpStore) -> None:
    result = cli(app, "purge", input="n\n")
    assert result.exit_code != 0 and "aborted" in result.output
    assert store.count() == 3
    result = cli(app, "purge", "--parked", "--force")
    assert result.exit_code == 0 and "Purged 1 dumps." in result.output
    assert [e.task_id for e in store.entries()] == ["a", "b"]
    result = cli(app, "purge", input="y\n")
    assert result.exit_code == 0 and store.count() == 0


def test_export_import_round_trip(app: Celery, store: DumpStore, tmp_path: Path) -> None:
    out = tmp_path / "dumps.jsonl"
    assert cli(app, "export", "-o", str(out)).exit_code == 0
    assert len(out.read_text().splitlines()) == 3
    cli(app, "purge", "--force")
    result = cli(app, "import", str(out))
    assert result.exit_code == 0 and "Imported 3 dumps." in result.output
    assert sorted(e.task_id for e in store.entries()) == ["a", "b", "c"]


def test_import_recovers_dropped_dumps_from_a_log(app: Celery, tmp_path: Path) -> None:
    from kombu.utils.json import dumps

    log = tmp_path / "worker.log"
    log.write_text(
        "[2026-01-01 00:00:00,000: INFO/MainProcess] something else\n"
        "[2026-01-01 00:00:01,000: ERROR/MainProcess] dlq: DROPPED DUMP (the final flush"
        f" failed) {dumps(entry('lost', 10).to_dict())}\n"
    )
    result = cli(app, "import", str(log))
    assert result.exit_code == 0, result.output
    assert [e.task_id for e in open_store(app.conf.durable_dlq_url).entries()] == ["lost"]


def test_bad_input_fails_with_one_line(app: Celery, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    result = cli(app, "import", str(bad))
    assert result.exit_code != 0 and "line 1: not JSON" in result.output
    result = cli(app, "ls", "--url", "nosuch://x")
    assert result.exit_code != 0 and "unknown scheme" in result.output


def _lines_with_one_bad(bad: dict[str, object]) -> str:
    from kombu.utils.json import dumps

    good = [entry(f"good-{i}", 10).to_dict() for i in range(3)]
    broken = {**entry("broken", 10).to_dict(), **bad}
    return "\n".join(dumps(d) for d in [good[0], good[1], broken, good[2]]) + "\n"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"restores": "many"}, "line 3: restores: expected an integer >= 0, got str 'many'"),
        ({"args": "abc"}, "line 3: args: expected a list, got str 'abc'"),
        ({"failed_at": "yesterday"}, "line 3: failed_at: expected a Unix time"),
        ({"kwargs": [1]}, "line 3: kwargs: expected an object, got list [1]"),
    ],
)
def test_import_rejects_a_mistyped_field_naming_line_and_field(
    app: Celery, tmp_path: Path, bad: dict[str, object], reason: str
) -> None:
    """Issue 10.5: `restores: "many"` was imported and then crashed ls/status/restore."""
    source = tmp_path / "dumps.jsonl"
    source.write_text(_lines_with_one_bad(bad))
    result = cli(app, "import", str(source))
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith(f"Error: {reason}") and line.endswith("; nothing imported"), line
    assert open_store(app.conf.durable_dlq_url).count() == 0


def test_import_of_a_binary_file_is_one_line(app: Celery, tmp_path: Path) -> None:
    source = tmp_path / "dumps.bin"
    source.write_bytes(bytes(range(256)) * 4)
    result = cli(app, "import", str(source))
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith("Error: line ") and "not UTF-8 text" in line


def test_a_malformed_entry_in_a_file_store_is_quarantined_not_fatal(
    app: Celery, store: DumpStore
) -> None:
    """Issue 10.5: a bad dump written straight into the store (not through import)."""
    bad = entry("bad", 10)
    bad.restores = "many"  # type: ignore[assignment]
    store.write([bad])
    result = cli(app, "ls")
    assert result.exit_code == 0, result.output
    assert "3 dumps, 1 parked, 1 quarantined" in result.output
    assert "(task 'bad'): restores: expected an integer >= 0" in result.output
    result = cli(app, "ls", "--json")
    assert json.loads(result.output.splitlines()[-1])["reason"].startswith("restores:")
    shown = json.loads(cli(app, "show", "bad").output)
    assert shown["quarantined"].startswith("restores:") and "parked" not in shown
    result = cli(app, "purge", "--force")
    assert "Purged 3 dumps." in result.output
    assert [e.task_id for e in store.entries()] == ["bad"]  # never purged


def test_restore_all_restores_the_good_ones_around_a_malformed_file_dump(
    app: Celery, store: DumpStore
) -> None:
    bad = entry("bad", 10)
    bad.args = "abc"  # type: ignore[assignment]
    store.write([bad])
    result = CliRunner().invoke(
        durable, ["dlq", "restore", "--all", "--force"], obj=SimpleNamespace(app=app)
    )
    assert result.exit_code == 0, result.output
    assert "restored 3 dump(s)" in result.output
    assert "quarantined, not restored: task 'bad': args: expected a list" in result.output
    assert [e.task_id for e in store.entries()] == ["bad"]
