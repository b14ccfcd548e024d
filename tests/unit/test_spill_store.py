"""SpillStore behaviour on real LevelDB files: order, counters, limits, sync, threads."""

from __future__ import annotations

import threading
from pathlib import Path

import plyvel
import pytest

from celery_durable import metrics
from celery_durable.exceptions import ConfigError, SpillError, SpillFull, StoreDamaged
from celery_durable.spill import SpillRecord, SpillStore, StoreLocked, check, encode
from celery_durable.spill.layout import (
    KEY,
    META,
    META_KEY,
    META_V1,
    REC,
    REC_END,
    find_key,
    rkey,
)
from tests.helpers.wait import wait_for


def rec(i: int, size: int = 20) -> SpillRecord:
    return SpillRecord(
        body=f"{i:08d}".encode().ljust(size, b"."),
        exchange="ex",
        routing_key="rk",
        headers={"i": i},
        created=1000.0 + i,
    )


def ids(items: list[tuple[int, SpillRecord]]) -> list[int]:
    return [r.headers["i"] for _seq, r in items]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store"


def test_append_returns_increasing_seqs_and_counts_encoded_bytes(path: Path) -> None:
    with SpillStore(path) as store:
        assert len(store) == 0 and store.backlog_bytes == 0
        seqs = [store.append(rec(i)) for i in range(5)]
        assert seqs == [1, 2, 3, 4, 5]
        assert len(store) == 5
        assert store.backlog_bytes == sum(len(encode(rec(i))) for i in range(5))
        assert store.last_seq == 5


def test_creates_missing_directories(tmp_path: Path) -> None:
    with SpillStore(tmp_path / "a" / "b" / "c") as store:
        store.append(rec(1))
    assert (tmp_path / "a" / "b" / "c" / "CURRENT").exists()


def test_extend_is_one_batch_and_returns_last_seq(path: Path) -> None:
    with SpillStore(path) as store:
        assert store.extend([]) == 0
        assert store.extend([rec(i) for i in range(3)]) == 3
        assert store.append(rec(3)) == 4
        assert store.extend([rec(4), rec(5)]) == 6
        assert ids(store.peek(10)) == [0, 1, 2, 3, 4, 5]
        assert len(store) == 6


def test_peek_is_oldest_first_limited_and_removes_nothing(path: Path) -> None:
    with SpillStore(path) as store:
        store.extend([rec(i) for i in range(10)])
        assert ids(store.peek(3)) == [0, 1, 2]
        assert ids(store.peek(3)) == [0, 1, 2]
        assert store.peek(0) == []
        assert [s for s, _r in store.peek(100)] == list(range(1, 11))
        assert len(store) == 10


def test_ack_deletes_up_to_seq_and_updates_counters(path: Path) -> None:
    with SpillStore(path) as store:
        store.extend([rec(i) for i in range(10)])
        store.ack(4)
        assert len(store) == 6
        assert store.backlog_bytes == sum(len(encode(rec(i))) for i in range(4, 10))
        assert ids(store.peek(2)) == [4, 5]
        store.ack(2)  # already acked: no-op
        assert len(store) == 6
        store.ack(10_000)  # beyond the newest: everything
        assert len(store) == 0 and store.backlog_bytes == 0
        assert store.peek(10) == []
        assert store.append(rec(99)) == 11


def test_order_counters_and_sequence_survive_reopen(path: Path) -> None:
    with SpillStore(path) as store:
        store.extend([rec(i) for i in range(6)])
        store.ack(2)
        expected_bytes = store.backlog_bytes
    with SpillStore(path) as store:
        assert len(store) == 4 and store.backlog_bytes == expected_bytes
        assert store.append(rec(6)) == 7
        assert ids(store.peek(10)) == [2, 3, 4, 5, 6]
        store.ack(7)
    with SpillStore(path) as store:  # drained empty: seqs still never reused
        assert len(store) == 0 and store.backlog_bytes == 0
        assert store.append(rec(7)) == 8


def test_counters_survive_a_process_that_never_closed(tmp_path: Path) -> None:
    """Appends write no meta: the running byte total in each key restores counters."""
    path = tmp_path / "s"
    db = plyvel.DB(str(path), create_if_missing=True)
    total = 0
    for seq in (1, 2, 3):
        value = encode(rec(seq))
        total += len(value)
        db.put(KEY.pack(REC, seq, total), value)
    db.close()
    with SpillStore(path) as store:
        assert len(store) == 3 and store.backlog_bytes == total
        assert store.append(rec(4)) == 4


def test_full_store_raises_spill_full_and_keeps_what_it_has(path: Path) -> None:
    size = len(encode(rec(0)))
    with SpillStore(path, max_bytes=size * 3) as store:
        store.extend([rec(0), rec(1)])
        with pytest.raises(SpillFull, match="spill_max_bytes") as info:
            store.extend([rec(2), rec(3)])  # all or nothing
        assert str(path) in str(info.value)
        assert store.append(rec(2)) == 3
        with pytest.raises(SpillFull):
            store.append(rec(3))
        assert ids(store.peek(10)) == [0, 1, 2]
        assert isinstance(info.value, SpillError)
        store.ack(1)
        assert store.append(rec(3)) == 4  # room again after an ack


def test_second_open_in_the_same_process_is_store_locked(path: Path) -> None:
    with SpillStore(path):
        with pytest.raises(StoreLocked, match="already open"):
            SpillStore(path)
        with pytest.raises(StoreLocked):
            SpillStore(path.parent / "." / path.name)
    SpillStore(path).close()  # free again once closed


def test_a_path_under_a_regular_file_is_a_config_error_naming_spill_dir(tmp_path: Path) -> None:
    """Issue 10.6: was a raw NotADirectoryError (wrapped only as SpillError)."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for where in (blocker, blocker / "store", blocker / "deeper" / "store"):
        with pytest.raises(ConfigError, match=f"spill_dir=.*{blocker} is not a directory"):
            SpillStore(where)
    assert blocker.read_text() == "not a directory"


def test_closed_store_refuses_and_close_is_idempotent(path: Path) -> None:
    store = SpillStore(path)
    store.close()
    store.close()
    assert store.closed
    with pytest.raises(SpillError, match="closed"):
        store.append(rec(1))
    with pytest.raises(SpillError, match="closed"):
        store.peek(1)


def test_destroy_removes_an_empty_store(path: Path) -> None:
    store = SpillStore(path)
    store.ack(store.append(rec(1)))
    assert store.destroy() is True
    assert not path.exists() and store.closed


def test_destroy_keeps_a_store_that_still_holds_records(path: Path) -> None:
    store = SpillStore(path)
    store.append(rec(1))
    assert store.destroy() is False
    assert store.closed
    with SpillStore(path) as again:
        assert ids(again.peek(10)) == [1]
        assert again.destroy(force=True) is True
    assert not path.exists()


def test_oldest_created_follows_the_head(path: Path) -> None:
    with SpillStore(path) as store:
        assert store.oldest_created is None
        store.append(rec(1))
        store.append(rec(2))
        assert store.oldest_created == 1001.0
        store.ack(1)
        assert store.oldest_created == 1002.0
        store.ack(2)
        assert store.oldest_created is None
    with SpillStore(path) as store:
        store.append(rec(5))
        assert store.oldest_created == 1005.0


def _corrupt_value(path: Path, seq: int) -> None:
    db = plyvel.DB(str(path))
    key = find_key(db, seq)
    assert key is not None
    value = bytearray(db.get(key))
    value[-3] ^= 0xFF  # inside the body
    db.put(key, bytes(value))
    db.close()


def test_corrupt_record_is_quarantined_counted_and_skipped(path: Path) -> None:
    with SpillStore(path) as store:
        store.extend([rec(i) for i in range(5)])
        good_bytes = store.backlog_bytes - len(encode(rec(2)))
    _corrupt_value(path, 3)
    counter = metrics.CORRUPT_RECORDS.labels(store="spill")
    before = counter._value.get()
    with SpillStore(path) as store:
        assert ids(store.peek(10)) == [0, 1, 3, 4]
        assert store.quarantined == 1
        assert len(store) == 4 and store.backlog_bytes == good_bytes
        assert counter._value.get() == before + 1
        assert [s for s, _v in store.quarantine_items()] == [3]
        store.ack(5)
        assert len(store) == 0 and store.backlog_bytes == 0
    with SpillStore(path) as store:
        assert store.quarantined == 1 and len(store) == 0


def test_version_mismatch_is_quarantined_not_deleted(path: Path) -> None:
    with SpillStore(path) as store:
        store.extend([rec(0), rec(1)])
    db = plyvel.DB(str(path))
    key = find_key(db, 1)
    assert key is not None
    value = bytearray(db.get(key))
    value[0] = 99  # the record's version byte
    db.put(key, bytes(value))
    db.close()
    with SpillStore(path) as store:
        assert ids(store.peek(10)) == [1]
        assert store.quarantined == 1
        assert store.quarantine_items()[0][1][0] == 99


def test_counters_that_claim_missing_records_count_them_lost_and_quarantine(
    path: Path,
) -> None:
    """Issue 10.3: such records were "healed" away silently and the store deleted."""
    with SpillStore(path) as store:
        store.extend([rec(0), rec(1)])
    db = plyvel.DB(str(path))
    next_seq, acked, appended, removed, removed_bytes, quar, lost = META.unpack(db.get(META_KEY))
    db.put(
        META_KEY,
        META.pack(next_seq + 5, acked, appended + 500, removed, removed_bytes, quar, lost),
    )
    db.close()
    before = metrics.RECORDS_LOST._value.get()
    with SpillStore(path) as store:
        assert len(store) == 7 and store.is_intact
        assert ids(store.peek(10)) == [0, 1]
        store.ack(2)
        assert store.peek(10) == []
        assert len(store) == 0 and store.backlog_bytes == 0
        assert store.lost == 5 and not store.is_intact
        assert "5 spilled records lost" in (store.damage or "")
    assert metrics.RECORDS_LOST._value.get() == before + 5
    with SpillStore(path) as store:
        assert store.lost == 5 and not store.is_intact  # persistent
        assert store.destroy() is False
    assert not path.exists()
    moved = path.parent / "quarantine" / path.name
    assert moved.is_dir() and (moved / "CURRENT").exists()
    assert "5 spilled records lost" in (moved / "QUARANTINED").read_text()


def test_old_48_byte_meta_still_reads(path: Path) -> None:
    with SpillStore(path) as store:
        store.extend([rec(0), rec(1), rec(2)])
        store.ack(1)
    db = plyvel.DB(str(path))
    db.put(META_KEY, db.get(META_KEY)[: META_V1.size])
    db.close()
    with SpillStore(path) as store:
        assert len(store) == 2 and store.lost == 0 and ids(store.peek(10)) == [1, 2]


def test_ack_cursor_persists_so_reads_seek_past_acked_keys(path: Path) -> None:
    with SpillStore(path) as store:
        store.extend([rec(i) for i in range(2000)])
        store.ack(1990)
    with SpillStore(path) as store:
        assert store._state.acked == 1990
        assert ids(store.peek(100)) == list(range(1990, 2000))


@pytest.mark.parametrize("sync", ["none", "always", "interval"])
def test_sync_modes_store_and_reopen(path: Path, sync: str) -> None:
    with SpillStore(path, sync=sync, sync_interval=0.05) as store:
        store.extend([rec(0), rec(1)])
        store.append(rec(2))
    with SpillStore(path) as store:
        assert ids(store.peek(10)) == [0, 1, 2]


def test_interval_sync_writes_a_synced_meta_while_writes_happen(path: Path) -> None:
    with SpillStore(path, sync="interval", sync_interval=0.05) as store:
        assert store._syncer is not None and store._syncer.is_alive()
        store.append(rec(0))
        store.append(rec(1))

        def synced_next_seq() -> bool:
            raw = store._db.get(META_KEY)
            return raw is not None and META.unpack(raw)[0] == 3

        wait_for(synced_next_seq, timeout=10, message="interval sync of the meta")
        syncer = store._syncer
    assert not syncer.is_alive()


def test_bad_sync_mode_is_rejected(path: Path) -> None:
    with pytest.raises(ValueError, match="spill_sync"):
        SpillStore(path, sync="sometimes")
    assert not (path / "CURRENT").exists()


def test_many_producers_one_drainer(path: Path) -> None:
    producers, per = 4, 1500
    drained: list[tuple[int, SpillRecord]] = []
    done = threading.Event()
    with SpillStore(path) as store:

        def produce(p: int) -> None:
            for i in range(per):
                store.append(
                    SpillRecord(
                        body=b"x" * 30, exchange="", routing_key="q", headers={"p": p, "i": i}
                    )
                )

        def drain() -> None:
            while True:
                finished = done.is_set()
                items = store.peek(200)
                if items:
                    drained.extend(items)
                    store.ack(items[-1][0])
                elif finished:
                    return

        drainer = threading.Thread(target=drain)
        drainer.start()
        threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()
        drainer.join(60)
        assert len(store) == 0 and store.backlog_bytes == 0
        assert store.last_seq == producers * per
    seqs = [s for s, _r in drained]
    assert seqs == list(range(1, producers * per + 1))
    for p in range(producers):
        mine = [r.headers["i"] for _s, r in drained if r.headers["p"] == p]
        assert mine == list(range(per))
    with SpillStore(path) as store:
        assert len(store) == 0 and store.append(rec(0)) == producers * per + 1


def test_check_reports_a_clean_store(path: Path) -> None:
    with SpillStore(path) as store:
        store.extend([rec(i) for i in range(4)])
        store.ack(1)
        expected = (len(store), store.backlog_bytes)
    report = check(path)
    assert report.ok, report
    assert (report.records, report.bytes) == expected
    assert (report.meta_records, report.meta_bytes) == expected
    assert report.corrupt == 0 and not report.repaired


def test_check_refuses_an_open_store(path: Path) -> None:
    with SpillStore(path), pytest.raises(StoreLocked):
        check(path)


def test_check_finds_and_repair_quarantines_corrupt_records(path: Path) -> None:
    with SpillStore(path) as store:
        store.extend([rec(i) for i in range(4)])
    _corrupt_value(path, 2)
    report = check(path)
    assert not report.ok and report.corrupt == 1 and report.records == 3
    repaired = check(path, repair=True)
    assert repaired.ok and repaired.repaired and repaired.quarantined == 1
    again = check(path)
    assert again.ok and again.corrupt == 0 and again.quarantined == 1
    with SpillStore(path) as store:
        assert len(store) == 3 and store.quarantined == 1
        assert ids(store.peek(10)) == [0, 2, 3]


def test_check_of_a_missing_store_reports_an_error(tmp_path: Path) -> None:
    report = check(tmp_path / "nothing")
    assert not report.ok and "no such" in report.errors[0]


def test_reads_after_a_big_drain_do_not_walk_the_tombstones(path: Path) -> None:
    """DESIGN.md §7: seeking to the first key after ~100k deletes took 33-47 ms."""
    import time

    with SpillStore(path) as store:
        for _ in range(40):
            store.extend([rec(i, size=100) for i in range(1000)])
        while items := store.peek(1000):
            store.ack(items[-1][0])
        # What a naive reader does: start at the first record key.
        with store._db.iterator(prefix=REC, include_value=False) as it:
            start = time.perf_counter()
            next(it, None)
            naive = time.perf_counter() - start
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            assert store.peek(10) == []
            assert store.oldest_created is None
            best = min(best, time.perf_counter() - start)
        assert best < naive / 10, (best, naive)


def test_damaged_meta_is_rebuilt_from_the_keys(path: Path) -> None:
    with SpillStore(path) as store:
        store.extend([rec(i) for i in range(3)])
        expected = store.backlog_bytes
    db = plyvel.DB(str(path))
    db.put(META_KEY, b"garbage")
    db.close()
    with SpillStore(path) as store:
        assert len(store) == 3 and store.backlog_bytes == expected
        assert ids(store.peek(10)) == [0, 1, 2]
        assert store.append(rec(3)) == 4


def test_unreadable_table_mid_backlog_hands_out_what_precedes_then_store_damaged(
    path: Path,
) -> None:
    """The drainer gets every readable record before the damage, then a clear error;
    the store is then not intact, so destroy() quarantines instead of deleting."""
    with SpillStore(path) as store:
        for lo in (0, 300, 600):
            store.extend([rec(i, size=300) for i in range(lo, lo + 300)])
            store._db.compact_range(start=rkey(lo + 1), stop=REC_END)  # one table each
    tables = sorted(path.glob("*.ldb"), key=lambda p: int(p.stem))
    assert len(tables) == 3, tables
    with open(tables[1], "r+b") as fh:
        fh.truncate(tables[1].stat().st_size // 2)
    with SpillStore(path) as store:
        assert store.is_intact and len(store) == 900
        got = []
        with pytest.raises(StoreDamaged, match=f"{tables[1].name}.*check --repair"):
            while items := store.peek(128):
                got.extend(items)
                store.ack(items[-1][0])
        assert ids(got) == list(range(300))
        assert not store.is_intact and "read failed" in (store.damage or "")
        assert store.destroy() is False
    moved = path.parent / "quarantine" / path.name
    assert not path.exists()
    assert {p.name for p in tables} <= {p.name for p in moved.glob("*.ldb")}


def test_ack_after_peek_deletes_the_keys_peek_saw_without_walking_them_again(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SpillStore(path) as store:
        store.extend([rec(i) for i in range(6)])
    _corrupt_value(path, 2)  # quarantined by the peek, between handed-out records
    with SpillStore(path) as store:
        walks: list[int] = []
        walk = store._keys_upto
        monkeypatch.setattr(
            store, "_keys_upto", lambda upto, keys: walks.append(upto) or walk(upto, keys)
        )
        assert ids(store.peek(4)) == [0, 2, 3, 4]  # seqs 1, 3, 4, 5
        store.append(rec(6))  # lands after the peek: not acked
        store.ack(5)
        assert walks == [] and len(store) == 2
        assert store.backlog_bytes == len(encode(rec(5))) + len(encode(rec(6)))
        assert ids(store.peek(10)) == [5, 6]
        store.append(rec(7))
        store.ack(8)  # beyond what was peeked: walks the keys
        assert walks == [8] and len(store) == 0 and store.backlog_bytes == 0
    with SpillStore(path) as store:
        assert len(store) == 0 and store.quarantined == 1 and store.peek(10) == []


class _CountingDB:
    """Delegates to a plyvel DB, counting the iterators made."""

    def __init__(self, db: plyvel.DB) -> None:
        self.db, self.iterators = db, 0

    def iterator(self, *args: object, **kwargs: object) -> object:
        self.iterators += 1
        return self.db.iterator(*args, **kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)


def test_peek_reads_the_newest_records_from_memory_while_it_keeps_up(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("celery_durable.spill.store.TAIL_RECORDS", 4)
    with SpillStore(path) as store:
        counting = _CountingDB(store._db)
        monkeypatch.setattr(store, "_db", counting)
        store.extend([rec(i) for i in range(6)])  # nobody reads yet: not kept in memory
        assert ids(store.peek(3)) == [0, 1, 2] and counting.iterators == 1
        store.ack(3)
        assert ids(store.peek(10)) == [3, 4, 5] and counting.iterators == 2  # caught up
        store.append(rec(6))
        store.append(rec(7))
        store.ack(6)
        assert ids(store.peek(10)) == [6, 7] and counting.iterators == 2  # from memory
        store.ack(8)
        for i in range(8, 13):  # more than memory keeps: the reader fell behind
            store.append(rec(i))
        assert ids(store.peek(10)) == [8, 9, 10, 11, 12] and counting.iterators == 3
        store.ack(13)
        assert len(store) == 0 and store.backlog_bytes == 0
        store.append(rec(13))
        assert ids(store.peek(10)) == [13] and counting.iterators == 3
    with SpillStore(path) as store:  # what memory handed out was on disk all along
        assert ids(store.peek(10)) == [13]
