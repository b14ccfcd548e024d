"""At exit the memory buffer goes to disk even past ``spill_max_bytes``: accepted is kept.

Real router, drainer and LevelDB store; the broker is the model test's fake.
Before, a buffer that did not fit the store's free room was dropped with an
error logged (the one loss buffered mode had).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from celery_durable.spill import SpillRecord
from celery_durable.transport.options import split_options
from celery_durable.transport.registry import Spiller
from tests.unit.test_router_stateful import BrokerDown, FakeBroker, FakeForwarder


def _spiller(tmp_path: Path, broker: FakeBroker) -> Spiller:
    options, _ = split_options(
        {
            "publish_mode": "buffered",
            "spill_max_bytes": 2000,  # smaller than what the buffer may hold
            "buffer_max_bytes": 8000,
            "drain_batch": 4,
            "spill_dir": str(tmp_path),
        }
    )
    spiller = Spiller.create(
        "fake", tmp_path / "broker", options, FakeForwarder(broker), (BrokerDown,)
    )
    spiller.router.on_work = lambda: None  # no thread: the test drains
    return spiller


def test_a_buffer_bigger_than_the_store_reaches_disk_at_exit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = FakeBroker()
    spiller = _spiller(tmp_path, broker)
    for i in range(6):
        body = json.dumps({"i": i, "pad": "x" * 500}).encode()
        spiller.router.accept(SpillRecord(body=body, exchange="", routing_key="q"))
    assert spiller.router.buffered == 6
    broker.state = "down"
    with caplog.at_level(logging.WARNING):
        spiller.close(0.0)
    assert "writing 6 buffered messages past spill_max_bytes" in caplog.text
    assert "could not be spilled" not in caplog.text

    broker.state = "up"
    successor = _spiller(tmp_path, broker)  # the next process adopts the store
    try:
        successor.drainer.adopt_orphans()
        for _ in range(10):
            successor.drainer.cycle()
        assert broker.delivered == list(range(6))
    finally:
        successor.close(0.0)
