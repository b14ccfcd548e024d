"""Damaged dumps on disk and in Redis: the rest is read, the damage counted and reported."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from celery_durable.dlq import DumpStore, open_store
from celery_durable.dlq.stores.filestore import REC, FileStore
from celery_durable.dlq.stores.redisstore import RedisStore
from tests.helpers.redis_server import RedisServer
from tests.integration.dlq_writer import entry

pytestmark = pytest.mark.chaos


def corrupt_count() -> float:
    return (
        REGISTRY.get_sample_value("celery_durable_corrupt_records_total", {"store": "dlq"}) or 0.0
    )


@pytest.fixture(params=["file", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> DumpStore:
    if request.param == "file":
        return open_store((tmp_path / "dlq").as_uri())
    server: RedisServer = request.getfixturevalue("redis_server")
    return open_store(server.url)


def write_five(store: DumpStore) -> list[str]:
    entries = [entry(f"t{i}", 50) for i in range(5)]
    for i, e in enumerate(entries):
        e.failed_at += i
    store.write(entries)
    return [e.entry_id for e in entries]


def damage(store: DumpStore, index: int, how: str) -> None:
    """Flip a byte in record ``index``'s payload, or cut the last record short."""
    if isinstance(store, FileStore):
        [seg] = list(store.segments_dir.iterdir())
        data = bytearray(seg.read_bytes())
        if how == "torn":
            data = data[:-20]
        else:
            pos = _record_offsets(bytes(data))[index] + (REC.size + 10 if how == "flip" else 6)
            data[pos] ^= 0xFF
        seg.write_bytes(bytes(data))
    else:
        assert isinstance(store, RedisStore)
        ids = [i.decode() for i in store.client.zrange(store.index_key, 0, -1)]
        key = ids[index if how != "torn" else -1]
        value = bytearray(store.client.hget(store.data_key, key))
        if how == "torn":
            value = value[:-20]
        else:
            value[-5] ^= 0xFF
        store.client.hset(store.data_key, key, bytes(value))


def _record_offsets(data: bytes) -> list[int]:
    from celery_durable.dlq.stores.filestore import REC_MAGIC

    offsets, pos = [], data.find(REC_MAGIC)
    while pos >= 0:
        offsets.append(pos)
        pos = data.find(REC_MAGIC, pos + 1)
    return offsets


@pytest.mark.parametrize("how", ["flip", "torn"])
def test_damage_is_skipped_counted_and_reported(store: DumpStore, how: str) -> None:
    check_damage(store, how)


def test_flipped_length_field_resynchronises(tmp_path: Path) -> None:
    """A file record whose length is damaged: the reader finds the next record marker."""
    check_damage(open_store((tmp_path / "dlq").as_uri()), "length")


def check_damage(store: DumpStore, how: str) -> None:
    write_five(store)
    before = corrupt_count()
    damage(store, 2, how)
    got = [e.task_id for e in store.entries()]
    expected = ["t0", "t1", "t2", "t3"] if how == "torn" else ["t0", "t1", "t3", "t4"]
    assert got == expected
    assert corrupt_count() == before + 1
    # Reading again does not count the same damage twice.
    assert [e.task_id for e in store.entries()] == expected
    assert corrupt_count() == before + 1
    [found] = store.quarantined()
    assert found.reason
    # Deleting every readable entry never deletes the damaged bytes.
    store.delete([e.entry_id for e in store.entries()])
    assert list(store.entries()) == []
    assert len(store.quarantined()) == 1


def test_damaged_segment_header_is_quarantined_not_deleted(tmp_path: Path) -> None:
    store = open_store((tmp_path / "dlq").as_uri())
    assert isinstance(store, FileStore)
    write_five(store)
    [seg] = list(store.segments_dir.iterdir())
    data = bytearray(seg.read_bytes())
    data[12] ^= 0x01  # inside the header's meta length / meta
    seg.write_bytes(bytes(data))
    good = entry("fine", 10)
    store.write([good])
    before = corrupt_count()
    assert [e.task_id for e in store.entries()] == ["fine"]
    assert corrupt_count() == before + 1
    [found] = store.quarantined()
    assert Path(found.location).exists() and "header" in found.reason
    assert Path(found.location).read_bytes() == bytes(data)
