"""A record the broker's encoding refuses is quarantined; everything behind it goes on.

Real router, drainer and LevelDB store; the broker is the model test's fake, and
its forwarder refuses records marked ``poison`` the way the amqp forwarder
refuses a header py-amqp cannot encode (:class:`UnsendableRecord`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from celery_durable.spill import SpillRecord
from celery_durable.transport.forwarder import UnsendableRecord
from celery_durable.transport.options import split_options
from celery_durable.transport.registry import Spiller
from tests.unit.test_router_stateful import BrokerDown, FakeBroker, FakeForwarder


class RefusingForwarder(FakeForwarder):
    def forward(self, records: Sequence[SpillRecord]) -> None:
        for index, record in enumerate(records):
            if record.headers.get("poison"):
                raise UnsendableRecord(index, TypeError("cannot encode it"))
        super().forward(records)


@pytest.mark.parametrize("mode", ["direct", "buffered", "wal"])
def test_the_poison_record_is_set_aside(tmp_path: Path, mode: str) -> None:
    broker = FakeBroker()
    options, _ = split_options({"publish_mode": mode, "spill_dir": str(tmp_path)})
    spiller = Spiller.create(
        "fake", tmp_path / "broker", options, RefusingForwarder(broker), (BrokerDown,)
    )
    spiller.router.on_work = lambda: None  # no thread: the test drains
    try:
        for i in range(10):
            headers = {"poison": True} if i == 3 else {}
            body = json.dumps({"i": i}).encode()
            record = SpillRecord(body=body, exchange="", routing_key="q", headers=headers)
            spiller.router.accept(record, "broker down" if mode == "direct" else None)
        for _ in range(10):
            spiller.drainer.cycle()
        assert [i for i in broker.delivered if i != 3] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
        assert 3 not in broker.delivered
        store = spiller.router.store
        assert store is not None and store.quarantined == 1
        assert spiller.backlog() == 0
        assert not spiller.drainer.breaker.is_open
    finally:
        spiller.close(0.0)
