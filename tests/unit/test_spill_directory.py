"""Per-process store directories: naming, orphans and listing (same-process cases).

Other processes (dead and alive owners) are covered in tests/chaos/test_spill_chaos.py.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from celery_durable.spill import (
    QUARANTINE,
    SpillRecord,
    SpillStore,
    StoreDamaged,
    find_orphans,
    list_stores,
    new_store_path,
)
from celery_durable.spill.directory import parse_name


def test_new_store_path_names_host_pid_and_a_random_suffix(tmp_path: Path) -> None:
    a, b = new_store_path(tmp_path), new_store_path(tmp_path)
    assert a != b and a.parent == tmp_path
    host, pid = parse_name(a)
    assert host == socket.gethostname() and pid == os.getpid()
    assert len(a.name.rsplit("-", 1)[1]) == 8
    assert not a.exists()


def test_parse_name_handles_hyphenated_hosts_and_foreign_names() -> None:
    assert parse_name(Path("web-01.example-123-abcdef12")) == ("web-01.example", 123)
    assert parse_name(Path("whatever")) == ("whatever", None)


def test_find_orphans_skips_our_open_stores_and_non_stores(tmp_path: Path) -> None:
    assert find_orphans(tmp_path / "missing") == []
    closed = new_store_path(tmp_path)
    SpillStore(closed).close()
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "a-file").write_text("x")
    with SpillStore(new_store_path(tmp_path)) as mine:
        assert find_orphans(tmp_path) == [closed]
        assert mine.path not in find_orphans(tmp_path)
    assert len(find_orphans(tmp_path)) == 2


def test_find_orphans_is_oldest_first(tmp_path: Path) -> None:
    paths = [new_store_path(tmp_path) for _ in range(3)]
    for i, path in enumerate(paths):
        SpillStore(path).close()
        os.utime(path / "LOCK", (1000 + i, 1000 + i))
    os.utime(paths[0] / "LOCK", (2000, 2000))
    assert find_orphans(tmp_path) == [paths[1], paths[2], paths[0]]


def test_list_stores_shows_owner_liveness_and_backlog(tmp_path: Path) -> None:
    closed = new_store_path(tmp_path)
    with SpillStore(closed) as store:
        store.extend([SpillRecord(body=b"x" * 10, exchange="", routing_key="q")] * 3)
        closed_bytes = store.backlog_bytes
    with SpillStore(new_store_path(tmp_path)) as mine:
        mine.append(SpillRecord(body=b"y", exchange="", routing_key="q"))
        infos = {info.path: info for info in list_stores(tmp_path)}
        assert set(infos) == {closed, mine.path}
        own = infos[mine.path]
        assert own.alive and own.records == 1 and own.pid == os.getpid()
        assert own.bytes == mine.backlog_bytes
        other = infos[closed]
        assert not other.alive and other.records == 3 and other.bytes == closed_bytes
        assert other.hostname == socket.gethostname() and other.error is None


def _without_current(spill_dir: Path, n: int = 5) -> Path:
    path = new_store_path(spill_dir)
    with SpillStore(path) as store:
        store.extend([SpillRecord(body=b"%d" % i, exchange="", routing_key="q") for i in range(n)])
        store.compact()
    (path / "CURRENT").unlink()
    return path


def test_a_store_without_current_is_listed_and_quarantined_by_adoption(tmp_path: Path) -> None:
    """Issue 10.3: such a store was invisible to ls, check, drain and adoption."""
    path = _without_current(tmp_path)
    tables = sorted(p.name for p in path.glob("*.ldb"))
    (info,) = list_stores(tmp_path)
    assert info.path == path and info.damaged and "CURRENT file is missing" in (info.error or "")
    assert path.exists()  # listing moves nothing
    assert find_orphans(tmp_path) == []
    moved = tmp_path / QUARANTINE / path.name
    assert not path.exists() and sorted(p.name for p in moved.glob("*.ldb")) == tables
    assert "CURRENT file is missing" in (moved / "QUARANTINED").read_text()
    (info,) = list_stores(tmp_path)
    assert info.path == moved and info.quarantine and info.damaged


def test_opening_a_store_without_current_never_replaces_its_data(tmp_path: Path) -> None:
    path = _without_current(tmp_path)
    tables = sorted(p.name for p in path.glob("*.ldb"))
    with pytest.raises(StoreDamaged, match="CURRENT file is missing"):
        SpillStore(path)
    assert sorted(p.name for p in path.glob("*.ldb")) == tables  # LevelDB would delete them
    assert not (path / "CURRENT").exists()


def test_an_empty_directory_is_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "being-created").mkdir()  # its creator may be about to take the lock
    assert list_stores(tmp_path) == [] and find_orphans(tmp_path) == []
