"""The dump write-ahead log: on disk before put() returns, adopted after its writer dies."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

from prometheus_client import REGISTRY

from celery_durable.dlq import open_store
from celery_durable.dlq.dumpqueue import DumpQueue
from celery_durable.dlq.wal import HEAD, DumpWAL, read_segment, wal_dir
from tests.helpers.wait import wait_for
from tests.integration.dlq_writer import entry


def corrupt() -> float:
    return (
        REGISTRY.get_sample_value("celery_durable_corrupt_records_total", {"store": "dlq-wal"})
        or 0.0
    )


def in_child(body: object) -> int:
    """Run ``body()`` in a forked child; return the child's pid (not waited for)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            body()  # type: ignore[operator]
        finally:
            os._exit(0)
    return pid


def test_dumps_of_a_sigkilled_writer_are_adopted_and_flushed(tmp_path: Path) -> None:
    """The writer dies before its flush is due: every dump it put() is written by an adopter.

    Before the log, these 50 dumps were in the dead process's memory: all lost.
    """
    store = open_store((tmp_path / "dlq").as_uri())
    wal = tmp_path / "wal"

    def writer() -> None:
        queue = DumpQueue(store, flush_interval=3600, wal_directory=wal)
        for i in range(50):
            queue.put(entry(f"k{i}", 200))
        os.kill(os.getpid(), signal.SIGKILL)

    _, status = os.waitpid(in_child(writer), 0)
    assert os.WIFSIGNALED(status)
    assert store.count() == 0
    adopter = DumpQueue(store, wal_directory=wal)
    assert adopter.adopt() == 1
    assert adopter.flush()
    assert sorted(e.task_id for e in store.entries()) == sorted(f"k{i}" for i in range(50))
    assert os.listdir(wal) == ["store"]
    assert adopter.close()


def test_a_live_writer_is_never_adopted(tmp_path: Path) -> None:
    store = open_store((tmp_path / "dlq").as_uri())
    wal = tmp_path / "wal"
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()

    def writer() -> None:
        queue = DumpQueue(store, flush_interval=3600, wal_directory=wal)
        queue.put(entry("live", 10))
        os.write(ready_w, b"x")
        os.read(hold_r, 1)  # wait for the parent, then die without flushing
        os.kill(os.getpid(), signal.SIGKILL)

    pid = in_child(writer)
    assert os.read(ready_r, 1) == b"x"
    adopter = DumpQueue(store, wal_directory=wal)
    assert adopter.adopt() == 0  # its lock is held by a live process
    os.write(hold_w, b"x")
    os.waitpid(pid, 0)
    assert adopter.adopt() == 1
    assert adopter.flush()
    assert [e.task_id for e in store.entries()] == ["live"]
    adopter.close()


def test_our_own_log_is_never_adopted_by_ourselves(tmp_path: Path) -> None:
    """A POSIX lock never conflicts with its own process: own logs must be skipped."""
    store = open_store((tmp_path / "dlq").as_uri())
    wal = tmp_path / "wal"
    first = DumpQueue(store, flush_interval=3600, wal_directory=wal)
    first.put(entry("mine", 10))
    second = DumpQueue(store, flush_interval=3600, wal_directory=wal)
    assert second.adopt() == 0
    assert first.close() and second.close()
    assert [e.task_id for e in store.entries()] == ["mine"]


def test_damaged_records_are_skipped_counted_and_the_segment_quarantined(
    tmp_path: Path,
) -> None:
    store = open_store((tmp_path / "dlq").as_uri())
    wal = tmp_path / "wal"
    log = DumpWAL(wal)
    for i in range(3):
        log.append(store.encode(entry(f"d{i}", 100)))
    [path] = log.segments()
    log.seal()
    data = bytearray(path.read_bytes())
    record = (len(data) - HEAD.size) // 3
    data[HEAD.size + record + record // 2] ^= 0xFF  # a byte inside the second record
    path.write_bytes(bytes(data))
    log.owner.close()  # the writer "dies", its files stay

    before = corrupt()
    assert [d.task_id for d in read_segment(path).dumps] == ["d0", "d2"]
    adopter = DumpQueue(store, wal_directory=wal)
    assert adopter.adopt() == 1 and adopter.flush()
    assert sorted(e.task_id for e in store.entries()) == ["d0", "d2"]
    quarantined = wal / "quarantine" / path.name
    assert quarantined.exists(), "a damaged segment is kept, never deleted"
    assert "damaged records" in (wal / "quarantine" / f"{path.name}.why").read_text()
    assert corrupt() > before
    adopter.close()


def test_another_format_version_is_quarantined_not_deleted(tmp_path: Path) -> None:
    store = open_store((tmp_path / "dlq").as_uri())
    wal = tmp_path / "wal"
    log = DumpWAL(wal)
    log.append(store.encode(entry("v2", 10)))
    [path] = log.segments()
    log.seal()
    log.owner.close()
    data = path.read_bytes()
    path.write_bytes(HEAD.pack(b"CDLQWAL\0", 2) + data[HEAD.size :])
    adopter = DumpQueue(store, wal_directory=wal)
    assert adopter.adopt() == 1 and adopter.flush()
    assert store.count() == 0
    assert (wal / "quarantine" / path.name).read_bytes()[HEAD.size :] == data[HEAD.size :]
    adopter.close()


def test_owner_only_modes_and_one_directory_per_store(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = open_store((tmp_path / "dlq").as_uri())
        queue = DumpQueue(store, flush_interval=3600)
        queue.put(entry("m", 10))
        directory = wal_dir(store.url)
        assert directory.parent.name == "dlq-wal"
        assert directory != wal_dir("redis://127.0.0.1:6379/0")
        for path in [directory, directory.parent, *directory.iterdir()]:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
        assert (directory / "store").read_text().strip() == store.url
        assert queue.close()
    finally:
        os.umask(old)


def test_a_writer_dying_later_is_adopted_by_a_running_flusher(tmp_path: Path) -> None:
    """A process that dies after the others started is found by their periodic scan."""
    store = open_store((tmp_path / "dlq").as_uri())
    wal = tmp_path / "wal"
    adopter = DumpQueue(store, wal_directory=wal, adopt_interval=0.1)
    assert adopter.adopt() == 0

    def writer() -> None:
        queue = DumpQueue(store, flush_interval=3600, wal_directory=wal)
        queue.put(entry("late", 10))
        os.kill(os.getpid(), signal.SIGKILL)

    os.waitpid(in_child(writer), 0)
    wait_for(lambda: store.count() == 1, timeout=20)
    assert adopter.close()
