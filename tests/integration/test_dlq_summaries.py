"""Store summaries (the console's fast listing) stay exact as dumps come and go."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_durable.dlq import DumpStore, open_store
from celery_durable.dlq.summary import fetch, summaries, summarize
from tests.integration.dlq_writer import entry

pytestmark = pytest.mark.integration


@pytest.fixture(params=["file", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DumpStore]:
    if request.param == "file":
        url = (tmp_path / "dlq").as_uri()
    else:
        url = f"{request.getfixturevalue('redis_server').url}?prefix=sum:dlq"
    opened = open_store(url)
    yield opened
    opened.close()


def listed(store: DumpStore) -> list[str]:
    return [s.task_id for s in summaries(store)[0]]


def test_summaries_follow_writes_and_deletes(store: DumpStore) -> None:
    first = [entry(f"a{i}", 10) for i in range(3)]
    for i, e in enumerate(first):
        e.failed_at += i
    store.write(first)
    assert listed(store) == ["a0", "a1", "a2"]
    later = entry("b0", 10)
    later.failed_at = first[-1].failed_at + 1
    store.write([later])
    assert listed(store) == ["a0", "a1", "a2", "b0"]  # new dumps appear at once
    store.delete([first[1].entry_id])
    assert listed(store) == ["a0", "a2", "b0"]  # and deleted ones go
    got = summaries(store)[0]
    assert got == [summarize(e) for e in store.entries()]
    # A second, fresh reader agrees (nothing depends on one process's cache).
    other = open_store(store.url)
    assert listed(other) == ["a0", "a2", "b0"]
    other.close()


def test_fetch_returns_just_the_asked_live_dumps(store: DumpStore) -> None:
    entries = [entry(f"f{i}", 10) for i in range(4)]
    store.write(entries)
    store.delete([entries[0].entry_id])
    got = fetch(store, [entries[0].entry_id, entries[2].entry_id, "nonsense", "../x:000001"])
    assert [e.task_id for e in got] == ["f2"]
    assert got[0].to_dict() == next(e for e in store.entries() if e.task_id == "f2").to_dict()


def test_summaries_stay_exact_through_mixed_changes(store: DumpStore) -> None:
    base = entry("x", 10).failed_at
    expected: list[str] = []

    def add(name: str, offset: float) -> None:
        e = entry(name, 10)
        e.failed_at = base + offset
        store.write([e])

    for step, name in enumerate(["m0", "m1", "m2"]):
        add(name, step)
        expected.append(name)
        assert listed(store) == expected
    doomed = next(e for e in store.entries() if e.task_id == "m1")
    store.delete([doomed.entry_id])
    expected.remove("m1")
    assert listed(store) == expected
    add("m3", 10)  # appended after a delete
    expected.append("m3")
    assert listed(store) == expected
    add("early", -5)  # a dump that sorts first in redis (imported, older failure)
    assert sorted(listed(store)) == sorted([*expected, "early"])
    assert listed(store) == [e.task_id for e in store.entries()]


def test_a_malformed_dump_is_listed_not_trusted(store: DumpStore) -> None:
    bad = entry("bad", 10)
    bad.exc_message = ["not", "a", "string"]  # type: ignore[assignment]
    bad.restores = "3"  # type: ignore[assignment]
    bad.delivery_info = "nowhere"  # type: ignore[assignment]
    store.write([bad])
    (row,) = summaries(store)[0]
    assert row.exc_message == "['not', 'a', 'string']"
    assert row.restores == 0 and row.queue == ""
