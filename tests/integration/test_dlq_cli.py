"""The real ``celery -A app durable dlq ...`` command line (our ``celery.commands`` plugin)."""

from __future__ import annotations

from pathlib import Path

import pytest

from celery_durable.dlq import open_store
from tests.helpers.processes import celery
from tests.integration.dlq_writer import entry

pytestmark = pytest.mark.integration


def run_cli(tmp_path: Path, url: str, *args: str) -> tuple[int, str]:
    proc = celery(
        "-A",
        "tests.integration.dlq_app",
        "durable",
        "dlq",
        *args,
        log=tmp_path / "cli.log",
        env={"DLQ_URL": url},
    )
    rc = proc.wait(timeout=60)
    return rc, proc.log.read_text()


def test_ls_shows_quarantined_version_and_purge_keeps_it(tmp_path: Path) -> None:
    url = (tmp_path / "dlq").as_uri()
    open_store(url).write([entry("current", 10)])
    open_store(url, version=2).write([entry("from-the-future", 10)])
    rc, out = run_cli(tmp_path, url, "ls")
    assert rc == 0, out
    assert "current" in out and "from-the-future" not in out
    assert "1 dumps, 0 parked, 1 quarantined" in out
    assert "QUARANTINED" in out and "format version 2" in out

    rc, out = run_cli(tmp_path, url, "purge", "--force")
    assert rc == 0 and "Purged 1 dumps." in out
    assert [e.task_id for e in open_store(url, version=2).entries()] == ["from-the-future"]

    rc, out = run_cli(tmp_path, url, "show", "nothing-here")
    assert rc != 0 and "Error: no dump of task nothing-here" in out
