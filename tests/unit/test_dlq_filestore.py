"""file:// store specifics: permissions, atomic segments, tombstones and compaction."""

from __future__ import annotations

import stat
from pathlib import Path

from celery_durable.dlq import open_store, register_store
from celery_durable.dlq.codec import Codec
from celery_durable.dlq.stores import default_url
from celery_durable.dlq.stores.filestore import FileStore
from tests.integration.dlq_writer import entry


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_default_url_is_under_celery_durable_dir(durable_dir: Path) -> None:
    assert default_url() == (durable_dir / "dlq").resolve().as_uri()
    store = open_store("")
    assert isinstance(store, FileStore) and store.root == (durable_dir / "dlq").resolve()


def test_files_are_private_and_segments_unique(tmp_path: Path) -> None:
    store = open_store((tmp_path / "dlq").as_uri())
    assert isinstance(store, FileStore)
    for i in range(3):
        store.write([entry(f"e{i}", 10)])
    segments = sorted(store.segments_dir.iterdir())
    assert len(segments) == 3
    assert all(mode(p) == 0o600 for p in segments)
    assert mode(store.root) == 0o700
    store.delete([next(store.entries()).entry_id])
    assert all(mode(p) == 0o600 for p in store.deleted_dir.iterdir())


def test_fully_deleted_segment_is_compacted(tmp_path: Path) -> None:
    store = open_store((tmp_path / "dlq").as_uri())
    assert isinstance(store, FileStore)
    store.write([entry("a", 10), entry("b", 10)])
    store.write([entry("c", 10)])
    ids = [e.entry_id for e in store.entries()]
    assert store.delete([ids[0]]) == 1
    assert len(list(store.deleted_dir.iterdir())) == 1  # a tombstone, segment kept
    assert len(list(store.segments_dir.iterdir())) == 2
    # A second process deleting the other half: the union of tombstones compacts.
    other = open_store(store.url)
    assert other.delete([ids[1]]) == 1
    assert len(list(store.segments_dir.iterdir())) == 1
    assert list(store.deleted_dir.iterdir()) == []
    assert [e.task_id for e in store.entries()] == ["c"]


def test_temp_files_are_never_read(tmp_path: Path) -> None:
    store = open_store((tmp_path / "dlq").as_uri())
    assert isinstance(store, FileStore)
    store.write([entry("real", 10)])
    [seg] = store.segments_dir.iterdir()
    (store.tmp_dir / "half.tmp").write_bytes(seg.read_bytes()[:-5])
    assert [e.task_id for e in store.entries()] == ["real"]
    assert store.quarantined() == []
    assert store.cleanup_temp(older_than=-1) == 1


def test_register_store_scheme(tmp_path: Path) -> None:
    calls: list[tuple[str, int]] = []

    def factory(url: str, *, codec: Codec, version: int) -> FileStore:
        calls.append((url, version))
        return FileStore((tmp_path / "mine").as_uri(), codec=codec, version=version)

    register_store("mine", factory)
    store = open_store("mine://anything", version=3)
    assert calls == [("mine://anything", 3)]
    store.write([entry("m", 10)])
    assert [e.task_id for e in store.entries()] == ["m"]
