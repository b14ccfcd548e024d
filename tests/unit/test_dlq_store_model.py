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


def test_codec_json_bytes_are_kombus_own() -> None:
    """The codec calls Kombu's JSON encoder directly (faster); the bytes must not change."""
    import datetime
    import decimal
    import uuid

    from kombu.serialization import dumps

    from celery_durable.dlq.codec import Codec
    from tests.integration.dlq_writer import entry

    sample = entry("t-ü", 20)
    sample.args = [datetime.datetime(2026, 1, 2, 3, 4, 5), uuid.uuid4(), decimal.Decimal("1.5")]
    sample.kwargs = {"text": "naïve ☃", "nan": float("nan"), "nested": {"t": (1, 2)}}
    payload = Codec().encode(sample)
    _, content_encoding, data = dumps(sample.to_dict(), serializer="json")
    assert payload.endswith(data.encode(content_encoding))
    decoded = Codec().decode(payload)
    assert decoded.args == sample.args and decoded.task_id == "t-ü"


def test_codec_encodes_the_fields_only() -> None:
    """An attribute set on an entry beside its fields is not encoded (the fast copy's guard)."""
    from celery_durable.dlq.codec import Codec
    from tests.integration.dlq_writer import entry

    sample = entry("side", 5)
    plain = Codec().encode(sample)
    sample.__dict__["scratch"] = object()  # not a field, not JSON-serialisable
    assert Codec().encode(sample) == plain
