"""Model-based test: the publish router and drainer against a broker going up, down, slow.

Hypothesis drives single publishes, batches, broker state changes, drain
cycles and process restarts (close, then a new router that adopts the old
store) on the real router, drainer and LevelDB stores; only the broker is
fake.  A *slow* broker executes what it is sent and then times out, as a
frozen redis that comes back does: the producer must treat it as down, and the
broker gets those messages twice (at least once).  After every step:

* **order**: per process, the messages the broker got (first copies) are the
  accepted ones, in publish order, up to some point;
* **no loss**: every accepted message the broker has not got yet is waiting in
  the buffer or a store, in order, right behind them.

At the end the broker comes up and the drainer must deliver everything.  The
drainer's thread is not started: the test runs its cycle itself, and a
publisher that waits for room runs one cycle (``on_hurry``), so every run is
deterministic.  ``spill_when_full="raise"`` throughout (``block`` would wait for
a drainer the test does not run; it has integration tests).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from celery_durable.exceptions import SpillFull
from celery_durable.spill import SpillRecord
from celery_durable.transport.options import split_options
from celery_durable.transport.registry import Spiller

SIZES = st.sampled_from([10, 300, 1500, 5000])  # 5000 never fits spill_max_bytes


class BrokerDown(Exception):
    """What the fake broker raises: refused (down) or timed out (slow)."""


class FakeBroker:
    def __init__(self) -> None:
        self.state = "up"
        self.delivered: list[int] = []

    def take(self, records: Sequence[SpillRecord]) -> None:
        if self.state == "down":
            raise BrokerDown("connection refused")
        self.delivered.extend(json.loads(r.body)["i"] for r in records)
        if self.state == "slow":
            raise BrokerDown("timed out (the broker executed it anyway)")


class FakeForwarder:
    """The drainer's side of the fake broker (connect, forward a batch, ping)."""

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker

    def forward(self, records: Sequence[SpillRecord]) -> None:
        self.broker.take(records)

    def ping(self) -> None:
        if self.broker.state != "up":
            raise BrokerDown(self.broker.state)

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


class RouterMachine(RuleBasedStateMachine):
    mode = "direct"

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="router-model-"))
        self.broker = FakeBroker()
        self.next_id = 0
        self.generation = 0
        self.gen_of: dict[int, int] = {}
        self.accepted: list[int] = []
        self.spiller = self._new_process()

    def _new_process(self) -> Spiller:
        options, _ = split_options(
            {
                "publish_mode": self.mode,
                "spill_max_bytes": 4000,
                "buffer_max_bytes": 3000,
                "drain_batch": 3,
                "publish_timeout": 0.05,
                "spill_dir": str(self.dir),
            }
        )
        spiller = Spiller.create(
            "fake", self.dir / "broker", options, FakeForwarder(self.broker), (BrokerDown,)
        )
        spiller.router.on_work = lambda: None  # no thread: the test drains
        spiller.router.on_hurry = self._cycle
        spiller.drainer.adopt_orphans()
        return spiller

    def _cycle(self) -> None:
        self.spiller.drainer.cycle()

    def _record(self, size: int) -> SpillRecord:
        i = self.next_id
        self.next_id += 1
        self.gen_of[i] = self.generation
        body = json.dumps({"i": i, "pad": "x" * size}).encode()
        return SpillRecord(body=body, exchange="", routing_key="q")

    def _send(self, records: Sequence[SpillRecord]) -> None:
        self.broker.take(records)

    def _publish(self, records: list[SpillRecord]) -> None:
        """What the transport's channel does for a publish (one record) or a batch flush."""
        router = self.spiller.router
        ids = [json.loads(r.body)["i"] for r in records]
        reason = None
        try:
            if router.sends_direct:
                try:
                    self.broker.take(records)
                    self.accepted.extend(ids)
                    return
                except BrokerDown as exc:
                    router.trip(exc)
                    reason = "broker down"
            if len(records) == 1:
                router.accept(records[0], reason, self._send)
            else:
                router.accept_batch(records, reason, self._send)
        except SpillFull:
            return  # refused, the caller knows: no promise (a slow broker may have it)
        self.accepted.extend(ids)

    @rule(n=st.integers(min_value=1, max_value=4), size=SIZES)
    def publish(self, n: int, size: int) -> None:
        for _ in range(n):
            self._publish([self._record(size)])

    @rule(k=st.integers(min_value=2, max_value=6), size=SIZES)
    def publish_batch(self, k: int, size: int) -> None:
        self._publish([self._record(size) for _ in range(k)])

    @rule(state=st.sampled_from(["up", "down", "slow"]))
    def broker_goes(self, state: str) -> None:
        self.broker.state = state

    @rule(cycles=st.integers(min_value=1, max_value=4))
    def drain(self, cycles: int) -> None:
        for _ in range(cycles):
            self._cycle()

    @rule()
    def restart(self) -> None:
        """The process exits (buffer to disk, stores closed); a new one adopts its store."""
        router = self.spiller.router
        self.spiller.close(0.0)
        # Even a buffer that does not fit a full store goes to disk (past
        # spill_max_bytes): accepted messages are never dropped at exit.
        assert not router._buffer, "the buffer is on disk after close"
        self.generation += 1
        self.spiller = self._new_process()

    # -- the checks -------------------------------------------------------------------
    def _waiting(self) -> list[int]:
        router, drainer = self.spiller.router, self.spiller.drainer
        records = list(router._buffer)
        for store in [*drainer._adopted, *([router.store] if router.store else [])]:
            records += [r for _, r in store.peek(len(store) + 1)]
        return [json.loads(r.body)["i"] for r in records]

    @invariant()
    def order_and_no_loss(self) -> None:
        accepted = set(self.accepted)
        first: list[int] = []
        seen: set[int] = set()
        for i in self.broker.delivered:
            if i in accepted and i not in seen:
                seen.add(i)
                first.append(i)
        waiting = [i for i in dict.fromkeys(self._waiting()) if i not in seen]
        for gen in range(self.generation + 1):
            mine = [i for i in self.accepted if self.gen_of[i] == gen]
            got = [i for i in first if self.gen_of[i] == gen]
            assert got == mine[: len(got)], f"order, process {gen}: {got} vs {mine}"
            rest = [i for i in waiting if self.gen_of[i] == gen]
            assert rest == mine[len(got) :], f"lost, process {gen}: {rest} vs {mine[len(got) :]}"

    def teardown(self) -> None:
        try:
            self.broker.state = "up"
            for _ in range(500):
                if not self.spiller.backlog():
                    break
                self._cycle()
            assert self.spiller.backlog() == 0
            assert set(self.accepted) <= set(self.broker.delivered)
        finally:
            self.spiller.close(0.0)
            shutil.rmtree(self.dir, ignore_errors=True)


class DirectMachine(RouterMachine):
    mode = "direct"


class BufferedMachine(RouterMachine):
    mode = "buffered"


class WalMachine(RouterMachine):
    mode = "wal"


_settings = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDirectRouter = DirectMachine.TestCase
TestDirectRouter.settings = _settings
TestBufferedRouter = BufferedMachine.TestCase
TestBufferedRouter.settings = _settings
TestWalRouter = WalMachine.TestCase
TestWalRouter.settings = _settings
