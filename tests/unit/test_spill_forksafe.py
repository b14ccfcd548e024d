"""A fork-tainted process's spill stores never let LevelDB flush (spill/forksafe.py).

The fork itself is exercised in tests/chaos/test_spill_fork.py; here the
tainted state is set directly to check what it changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_durable.exceptions import SpillFull
from celery_durable.spill import SpillRecord, SpillStore, forksafe
from celery_durable.transport.breaker import Breaker
from celery_durable.transport.options import split_options
from celery_durable.transport.router import PublishRouter


@pytest.fixture
def tainted(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(forksafe, "_tainted", "a test (pid 1)")
    monkeypatch.setattr(forksafe, "_warned", False)
    yield


def record(size: int = 1000) -> SpillRecord:
    return SpillRecord(body=b"x" * size, exchange="", routing_key="q")


def test_a_tainted_store_refuses_past_its_write_budget(tmp_path: Path, tainted: None) -> None:
    with SpillStore(tmp_path / "s", max_bytes=1 << 20) as store:
        assert store.write_budget == forksafe.write_buffer_for(1 << 20) // forksafe.HEADROOM
        # The budget counts every byte written since open: fill, drain, again.
        for _ in range(100_000):
            try:
                store.append(record())
            except SpillFull as exc:
                if "fork-tainted child" in str(exc):
                    break
                items = store.peek(10_000)
                store.ack(items[-1][0])
        else:
            pytest.fail("the write budget was never reached")
        assert store.last_seq * 1000 < store.write_budget  # well before LevelDB's switch


def test_an_untainted_store_has_no_budget_and_marks_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forksafe, "_started", None)
    with SpillStore(tmp_path / "s") as store:
        assert store.write_budget is None
        store.extend([record(100_000)] * 15)  # 1.5 MB, drained: nothing flushed
        items = store.peek(100)
        store.ack(items[-1][0])
        assert forksafe._started is None
        store.extend([record(100_000)] * 10)  # 2.5 MB since open: it may switch soon
        assert forksafe._started is not None and "bytes written to" in forksafe._started
    monkeypatch.setattr(forksafe, "_started", None)
    with SpillStore(tmp_path / "s") as store:  # existing data: LevelDB recovers its log
        assert forksafe._started is not None and "existing data" in forksafe._started


def test_router_replaces_a_tainted_store_once_it_is_drained(
    tmp_path: Path, tainted: None, caplog: pytest.LogCaptureFixture
) -> None:
    options, _ = split_options({"spill_dir": str(tmp_path), "publish_mode": "direct"})
    router = PublishRouter(options, tmp_path, Breaker("t"), ())
    router.spill(record(), "test")
    store = router.store
    assert store is not None and store.write_budget is not None
    items = store.peek(10)
    store.ack(items[-1][0])
    router.leave_disk_mode()
    assert router.store is None and not store.path.exists() and not router.disk_mode
    router.spill(record(), "test")
    assert router.store is not None and router.store.path != store.path
    router.close()
    assert caplog.text.count("was forked from a process whose LevelDB") == 1
