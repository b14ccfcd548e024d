"""Model-based test: the spill store against a plain list, under random actions.

Hypothesis drives append / extend / peek / ack / close-and-reopen / corrupt on a
real store and on a list of ``(seq, record)``; after every step contents,
counters and the sequence numbers must agree.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import plyvel
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from celery_durable.exceptions import SpillFull
from celery_durable.spill import SpillRecord, SpillStore, encode
from celery_durable.spill.layout import find_key

bodies = st.binary(max_size=400)
headers = st.dictionaries(
    st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=8), st.none()), max_size=3
)
records = st.builds(
    SpillRecord,
    body=bodies,
    exchange=st.sampled_from(["", "celery", "x"]),
    routing_key=st.text(max_size=10),
    headers=headers,
    created=st.floats(min_value=0, max_value=2e9, allow_nan=False),
)


class SpillStoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="spill-model-"))
        self.store = SpillStore(self.dir / "s", max_bytes=4000)
        self.model: list[tuple[int, SpillRecord]] = []
        self.next_seq = 1
        self.quarantined = 0

    def _size(self) -> int:
        return sum(len(encode(r)) for _s, r in self.model)

    @rule(record=records)
    def append(self, record: SpillRecord) -> None:
        if self._size() + len(encode(record)) > 4000:
            with pytest.raises(SpillFull):
                self.store.append(record)
            return
        seq = self.store.append(record)
        assert seq == self.next_seq
        self.model.append((seq, record))
        self.next_seq += 1

    @rule(batch=st.lists(records, max_size=6))
    def extend(self, batch: list[SpillRecord]) -> None:
        if self._size() + sum(len(encode(r)) for r in batch) > 4000:
            with pytest.raises(SpillFull):
                self.store.extend(batch)
            return
        last = self.store.extend(batch)
        for record in batch:
            self.model.append((self.next_seq, record))
            self.next_seq += 1
        assert last == self.next_seq - 1

    @rule(limit=st.integers(min_value=0, max_value=12))
    def peek(self, limit: int) -> None:
        assert self.store.peek(limit) == self.model[:limit]

    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        upto = data.draw(st.integers(min_value=0, max_value=self.next_seq + 2))
        self.store.ack(upto)
        self.model = [(s, r) for s, r in self.model if s > upto]

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = SpillStore(self.dir / "s", max_bytes=4000)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def corrupt_one(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(min_value=0, max_value=len(self.model) - 1))
        seq, _record = self.model.pop(index)
        self.store.close()
        db = plyvel.DB(str(self.dir / "s"))
        key = find_key(db, seq)
        assert key is not None
        value = bytearray(db.get(key))
        value[-1] ^= 0x5A
        db.put(key, bytes(value))
        db.close()
        self.store = SpillStore(self.dir / "s", max_bytes=4000)
        self.store.peek(len(self.model) + 1)  # the reader quarantines it
        self.quarantined += 1

    @invariant()
    def counters_match(self) -> None:
        assert len(self.store) == len(self.model)
        assert self.store.backlog_bytes == self._size()
        assert self.store.last_seq == self.next_seq - 1
        assert self.store.quarantined == self.quarantined
        oldest = self.model[0][1].created if self.model else None
        assert self.store.oldest_created == oldest

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)


SpillStoreMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSpillStoreModel = SpillStoreMachine.TestCase
