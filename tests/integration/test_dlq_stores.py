"""The DumpStore contract, against the real file:// and redis:// stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_durable.dlq import DumpEntry, DumpStore, open_store
from celery_durable.dlq.codec import Codec
from tests.helpers.processes import ROOT, python
from tests.integration.dlq_writer import entry

pytestmark = pytest.mark.integration


@pytest.fixture(params=["file", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return (tmp_path / "dlq").as_uri()
    server = request.getfixturevalue("redis_server")
    return f"{server.url}?prefix=test:dlq"


@pytest.fixture
def store(store_url: str) -> Iterator[DumpStore]:
    opened = open_store(store_url)
    yield opened
    opened.close()


def make(task_id: str, name: str = "t.one", restores: int = 0) -> DumpEntry:
    e = entry(task_id, 10)
    e.task_name = name
    e.restores = restores
    return e


def test_round_trip_oldest_first(store: DumpStore) -> None:
    first = [make("a"), make("b", "t.two")]
    store.write(first)
    later = make("c")
    later.failed_at = first[0].failed_at + 1
    store.write([later])
    got = list(store.entries())
    assert [e.task_id for e in got] == ["a", "b", "c"]
    assert all(e.entry_id for e in got)
    assert got[0].to_dict() | {"entry_id": ""} == first[0].to_dict() | {"entry_id": ""}
    assert got[0].host  # the machine that wrote it
    assert [e.task_id for e in store.entries(task="t.two")] == ["b"]
    assert store.count() == 3
    found = store.get("c")
    assert found is not None and found.entry_id == later.entry_id
    assert store.get("zzz") is None
    assert store.quarantined() == []


def test_delete_is_exact_and_idempotent(store: DumpStore) -> None:
    entries = [make(f"id{i}") for i in range(5)]
    store.write(entries)
    ids = [e.entry_id for e in store.entries()]
    assert store.delete(ids[:2]) == 2
    assert store.delete(ids[:2]) == 0
    assert [e.task_id for e in store.entries()] == ["id2", "id3", "id4"]
    assert store.delete(ids[2:]) == 3
    assert list(store.entries()) == []
    assert store.delete(["nonsense", "x:1"]) == 0


def test_pickle_refused_unless_accepted(store_url: str) -> None:
    writer = open_store(store_url, codec=Codec("pickle", accept=["pickle"]))
    writer.write([make("p")])
    json_only = open_store(store_url, codec=Codec("json", accept=["json"]))
    assert list(json_only.entries()) == []
    [found] = json_only.quarantined()
    assert "not accepted" in found.reason
    assert [e.task_id for e in writer.entries()] == ["p"]


def test_other_version_quarantined_never_deleted(store_url: str) -> None:
    newer = open_store(store_url, version=2)
    newer.write([make("v2")])
    store = open_store(store_url, version=1)
    store.write([make("v1")])
    assert [e.task_id for e in store.entries()] == ["v1"]
    [found] = store.quarantined()
    assert found.version == 2 and "version 2" in found.reason
    store.delete([e.entry_id for e in store.entries()])
    assert [e.task_id for e in newer.entries()] == ["v2"]  # still there, readable by v2


def test_many_processes_write_at_once(store_url: str, tmp_path: Path) -> None:
    procs = [
        python(
            ROOT / "tests/integration/dlq_writer.py",
            store_url,
            "250",
            f"w{n}",
            log=tmp_path / f"w{n}.log",
        )
        for n in range(4)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.output()
    store = open_store(store_url)
    ids = [e.task_id for e in store.entries()]
    assert len(ids) == 1000
    assert set(ids) == {f"w{n}-{i}" for n in range(4) for i in range(250)}
