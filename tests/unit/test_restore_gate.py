from __future__ import annotations

import pytest

from celery_durable import metrics
from celery_durable.restore.gate import QueueGate, clear_postponements, postponed_until


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _fresh() -> None:
    clear_postponements()


def _gate(lengths: dict[str, int], clock: Clock, **kw: object) -> QueueGate:
    probes: list[str] = []

    def length_of(q: str) -> int:
        probes.append(q)
        return lengths.get(q, 0)

    gate = QueueGate(
        length_of, allow_rate=0.5, capacity=10, postpone_interval=30.0, clock=clock, **kw
    )
    gate.probes = probes  # type: ignore[attr-defined]
    return gate


def test_counts_what_it_adds_and_postpones_at_the_limit() -> None:
    clock = Clock()
    gate = _gate({"a": 3}, clock)
    before = metrics.POSTPONED.labels(queue="a")._value.get()
    assert gate.admit("a")
    gate.added("a")
    assert gate.admit("a")
    gate.added("a")  # 5 == 0.5 * 10: full
    assert not gate.admit("a")
    assert gate.probes == ["a"]  # type: ignore[attr-defined]
    assert metrics.POSTPONED.labels(queue="a")._value.get() == before + 1
    assert postponed_until("a", clock) == pytest.approx(1030.0)


def test_postponement_outlives_the_run_then_expires() -> None:
    clock = Clock()
    assert not _gate({"a": 9}, clock).admit("a")
    clock.now += 10
    again = _gate({"a": 0}, clock)
    assert not again.admit("a")
    assert again.probes == []  # type: ignore[attr-defined]
    assert again.admit("b")  # other queues keep going
    clock.now += 25
    later = _gate({"a": 0}, clock)
    assert later.admit("a")


def test_force_and_dry_run() -> None:
    clock = Clock()
    assert _gate({"a": 99}, clock, enforce=False).admit("a")
    assert not _gate({"a": 99}, clock, remember=False).admit("a")
    assert postponed_until("a") is None
