"""The real ``celery -A app durable ...`` command line: one-line errors, malformed dumps.

Issue 10.6: ``dlq import`` of a binary file and ``status`` with port 99999 in the
broker URL printed tracebacks; the contract is exit status 1 and one ``Error:`` line.
Issue 10.5: a malformed dump (imported or written straight into the store) made
``dlq ls`` and ``status`` crash and ``dlq restore --all`` restore none of the others.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kombu.utils.json import dumps

from celery_durable.dlq import open_store
from tests.helpers.processes import celery
from tests.helpers.redis_server import RedisServer
from tests.integration.dlq_writer import entry

pytestmark = pytest.mark.integration


def run(tmp_path: Path, *args: str, **env: str) -> tuple[int, str]:
    proc = celery(
        "-A", "tests.integration.dlq_app", "durable", *args,
        log=tmp_path / f"cli-{args[0]}.log", env=env,
    )  # fmt: skip
    rc = proc.wait(timeout=120)
    out = proc.log.read_text()
    proc.log.unlink()
    return rc, out


def one_error_line(out: str) -> str:
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), out
    return lines[0]


def test_import_of_a_binary_file_is_one_line(tmp_path: Path) -> None:
    binary = tmp_path / "dump.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    rc, out = run(tmp_path, "dlq", "import", str(binary), DLQ_URL=(tmp_path / "dlq").as_uri())
    assert rc == 1
    assert "not UTF-8 text" in one_error_line(out)


def test_status_with_an_impossible_port_is_one_line(tmp_path: Path) -> None:
    rc, out = run(tmp_path, "status", DLQ_BROKER="durable+redis://127.0.0.1:99999/0",
                  DLQ_URL=(tmp_path / "dlq").as_uri())  # fmt: skip
    assert rc == 1
    assert "99999" in one_error_line(out) or "port" in one_error_line(out).lower()


def test_import_with_one_bad_line_imports_nothing_and_names_it(tmp_path: Path) -> None:
    url = (tmp_path / "dlq").as_uri()
    lines = [entry(f"good-{i}", 10).to_dict() for i in range(3)]
    lines.insert(1, {**entry("bad", 10).to_dict(), "restores": "many"})
    source = tmp_path / "dumps.jsonl"
    source.write_text("\n".join(dumps(d) for d in lines) + "\n")
    rc, out = run(tmp_path, "dlq", "import", str(source), DLQ_URL=url)
    assert rc == 1
    assert one_error_line(out) == (
        "Error: line 2: restores: expected an integer >= 0, got str 'many'; nothing imported"
    )
    assert open_store(url).count() == 0


@pytest.mark.parametrize("scheme", ["file", "redis"])
def test_restore_all_restores_the_good_dumps_around_a_malformed_one(
    tmp_path: Path, redis_server: RedisServer, scheme: str
) -> None:
    url = (
        (tmp_path / "dlq").as_uri()
        if scheme == "file"
        else f"redis://127.0.0.1:{redis_server.port}/0?prefix=bad-dump-test"
    )
    env = {"DLQ_URL": url, "DLQ_BROKER": f"redis://127.0.0.1:{redis_server.port}/1"}
    store = open_store(url)
    good = [entry(f"good-{i}", 10) for i in range(5)]
    bad = entry("bad", 10)
    bad.restores = "many"  # type: ignore[assignment]
    store.write([*good[:2], bad, *good[2:]])  # straight into the store: no import checks

    rc, out = run(tmp_path, "dlq", "ls", **env)
    assert rc == 0, out
    assert "5 dumps, 0 parked, 1 quarantined" in out and "restores: expected an integer" in out
    rc, out = run(tmp_path, "status", "--json", **env)
    assert rc == 0, out
    assert '"quarantined": 1' in out and '"dumps": 5' in out

    rc, out = run(tmp_path, "dlq", "restore", "--all", **env)
    assert rc == 0, out
    assert "restored 5 dump(s) (dlq: 5)" in out
    assert "quarantined, not restored: task 'bad'" in out
    assert redis_server.client(1).llen("dlq") == 5
    assert [e.task_id for e in store.entries()] == ["bad"]  # kept, for a human
