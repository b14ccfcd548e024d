"""One store primitive (``write_encoded``), one encoding: a store added with register_store."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from kombu.serialization import register, unregister

from celery_durable.dlq import DumpEntry, DumpStore, QuarantinedDump, register_store
from celery_durable.dlq.base import EncodedDump
from celery_durable.dlq.codec import Codec
from celery_durable.dlq.dumpqueue import DumpQueue
from celery_durable.dlq.stores import store_for_app
from tests.integration.dlq_writer import entry

encoded: list[str] = []


def _encode(obj: Any) -> str:
    encoded.append(obj["task_id"])
    return "MARKED" + json.dumps(obj)


def _decode(data: str | bytes) -> Any:
    text = data.decode() if isinstance(data, bytes) else data
    assert text.startswith("MARKED"), "decoded something not encoded by this serializer"
    return json.loads(text[len("MARKED") :])


@pytest.fixture
def marked_serializer() -> Iterator[None]:
    register("marked", _encode, _decode, content_type="application/x-marked")
    encoded.clear()
    try:
        yield
    finally:
        unregister("marked")


class ListStore(DumpStore):
    """A minimal user store: keeps the encoded dumps; never keeps the codec itself."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.dumps: list[EncodedDump] = []

    def write_encoded(self, dumps: Sequence[EncodedDump]) -> list[str]:
        start = len(self.dumps)
        self.dumps.extend(dumps)
        return [str(i) for i in range(start, len(self.dumps))]

    def entries(self, *, task: str | None = None) -> Iterator[DumpEntry]:
        for i, dump in enumerate(self.dumps):
            found = self.codec.decode(dump.payload)
            found.entry_id = str(i)
            if task is None or found.task_name == task:
                yield found

    def delete(self, entry_ids: Iterable[str]) -> int:
        return 0

    def quarantined(self) -> list[QuarantinedDump]:
        return []


def test_registered_store_gets_each_dump_encoded_once_with_the_apps_serializer(
    tmp_path: Path, marked_serializer: None
) -> None:
    """Before: DumpStore.encode ignored the store's codec (JSON whatever the setting)."""
    register_store("listy", lambda url, *, codec, version: ListStore(url))
    app = Celery("iface", broker="memory://", set_as_current=False)
    app.conf.durable_dlq_url = "listy://x"
    app.conf.durable_dlq_serializer = "marked"
    app.conf.accept_content = ["json", "application/x-marked"]
    store = store_for_app(app)
    assert isinstance(store, ListStore) and store.codec.serializer == "marked"

    queue = DumpQueue(store, flush_interval=3600, wal_directory=tmp_path / "wal")
    queue.put(entry("through-the-queue", 10))
    assert queue.flush()
    store.write([direct := entry("direct", 10)])
    assert direct.entry_id == "1"

    assert encoded == ["through-the-queue", "direct"]  # once each, in one place
    assert all(d.payload.startswith(b"\x14application/x-marked") for d in store.dumps)
    assert [d.task_id for d in store.dumps] == ["through-the-queue", "direct"]
    assert [e.task_id for e in store.entries()] == ["through-the-queue", "direct"]
    assert queue.close()


def test_a_store_written_against_the_old_write_method_still_works() -> None:
    with pytest.warns(DeprecationWarning, match="implement write_encoded"):

        class OldStore(DumpStore):
            def __init__(self) -> None:
                self.url = "old://"
                self.codec = Codec()
                self.got: list[DumpEntry] = []

            def write(self, entries: Sequence[DumpEntry]) -> None:
                self.got.extend(entries)

            def entries(self, *, task: str | None = None) -> Iterator[DumpEntry]:
                return iter(self.got)

            def delete(self, entry_ids: Iterable[str]) -> int:
                return 0

            def quarantined(self) -> list[QuarantinedDump]:
                return []

    old = OldStore()
    old.write_encoded([old.encode(entry("legacy", 10))])
    assert [e.task_id for e in old.got] == ["legacy"]
