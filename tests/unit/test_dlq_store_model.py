"""Model-based test: random writes, deletes (from two store handles) and reads of the
file:// store, compared with a plain dict."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from celery_durable.dlq import open_store
from tests.integration.dlq_writer import entry


class FileStoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        url = (Path(self.dir.name) / "dlq").as_uri()
        self.stores = [open_store(url), open_store(url)]  # two "processes"
        self.model: dict[str, str] = {}  # entry_id -> task_id
        self.deleted: list[str] = []
        self.counter = 0

    @rule(n=st.integers(1, 4), which=st.integers(0, 1))
    def write(self, n: int, which: int) -> None:
        batch = []
        for _ in range(n):
            self.counter += 1
            batch.append(entry(f"t{self.counter}", 5))
        self.stores[which].write(batch)
        for e in batch:
            self.model[e.entry_id] = e.task_id

    @rule(data=st.data(), which=st.integers(0, 1))
    def delete(self, data: st.DataObject, which: int) -> None:
        if not self.model:
            return
        ids = data.draw(st.lists(st.sampled_from(sorted(self.model)), max_size=4, unique=True))
        assert self.stores[which].delete(ids) == len(ids)
        for i in ids:
            del self.model[i]
        self.deleted.extend(ids)

    @rule(data=st.data(), which=st.integers(0, 1))
    def delete_again_is_a_no_op(self, data: st.DataObject, which: int) -> None:
        if self.deleted:
            gone = data.draw(st.lists(st.sampled_from(self.deleted), max_size=3))
            assert self.stores[which].delete(gone) == 0

    @invariant()
    def same_as_model(self) -> None:
        for store in self.stores:
            got = {e.entry_id: e.task_id for e in store.entries()}
            assert got == self.model
            assert [e.entry_id for e in store.entries()] == sorted(self.model)

    def teardown(self) -> None:
        self.dir.cleanup()


FileStoreMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=15, deadline=None
)
test_file_store_model = FileStoreMachine.TestCase
