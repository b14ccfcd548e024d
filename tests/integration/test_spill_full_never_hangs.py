"""A publish the spill store cannot take never hangs and is never refused for a stale breaker.

Issue 10.2, with a real redis-server: a message bigger than ``spill_max_bytes``
fails at once with SpillFull naming its size and the limit during an outage,
goes to the broker when it is healthy (also while the breaker is still open
right after it came back), and with ``spill_when_full="raise"`` a full store
does not refuse a message in the seconds the breaker needs to notice the broker
is back.  Every publish runs in a thread joined with a deadline: a hang fails the
test instead of stalling the suite.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kombu import Connection

import celery_durable  # noqa: F401 - registers the alias
from celery_durable.exceptions import SpillFull
from celery_durable.transport.registry import Spiller, shutdown_all, spillers
from celery_durable.transport.router import RETRY_FLOOR
from tests.helpers.redis_server import RedisServer
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration

LIMIT = 20_000
BIG = {"pad": "x" * (3 * LIMIT)}  # can never fit the store


@pytest.fixture
def broker() -> Iterator[RedisServer]:
    server = RedisServer(persistent=True)  # not started: each test decides
    try:
        yield server
    finally:
        shutdown_all(0.0)
        server.close()


def connect(server: RedisServer, **options: Any) -> Connection:
    return Connection(
        f"durable+redis://127.0.0.1:{server.port}/0",
        transport_options={"spill_max_bytes": LIMIT, **options},
    )


def within(seconds: float, fn: Callable[[], None]) -> BaseException | None:
    """Run ``fn`` in a thread; fail if it is still running after ``seconds``; return its error."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"publish still blocked after {seconds} s"
    return errors[0] if errors else None


def back(server: RedisServer, spiller: Spiller) -> None:
    """Start the broker while the breaker is open and will stay open for a while.

    After 5 failed attempts the drainer backs off at least 1.6 s.  The wait for
    RETRY_FLOOR: a publisher within it of a failure is told the broker is down
    (``raise``), which is true, but not what these tests are about.
    """
    wait_for(lambda: spiller.breaker._failures >= 5, timeout=30)
    server.start()
    wait_for(lambda: time.monotonic() - spiller.router._failed_at > RETRY_FLOOR, timeout=5)
    assert spiller.breaker.is_open


def queued(server: RedisServer, queue: str = "q") -> list[Any]:
    out = []
    for raw in reversed(server.client().lrange(queue, 0, -1)):
        message = json.loads(raw)
        body = message["body"]
        if message["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        out.append(json.loads(body).get("n", "big"))
    return out


def test_block_a_message_that_can_never_fit_fails_at_once_in_an_outage(
    broker: RedisServer,
) -> None:
    # Before: blocked for ever, logging "spill store full" with an empty store.
    with connect(broker, spill_when_full="block") as conn:
        producer = conn.Producer()
        error = within(10, lambda: producer.publish(BIG, routing_key="q"))
        assert isinstance(error, SpillFull), error
        assert f"spill_max_bytes={LIMIT}" in str(error) and "can never fit" in str(error)
        size = int(str(error).split(" bytes")[0].split()[-1])
        assert size > 3 * LIMIT
        producer.publish({"n": 1}, routing_key="q")  # what fits is still accepted
        assert conn.transport.spiller.backlog() == 1  # this connection's, not a leftover


@pytest.mark.parametrize("mode", ["direct", "wal", "buffered"])
def test_block_a_message_that_can_never_fit_goes_to_a_healthy_broker(
    broker: RedisServer, mode: str
) -> None:
    broker.start()
    with connect(broker, spill_when_full="block", publish_mode=mode) as conn:
        producer = conn.Producer()
        assert within(10, lambda: producer.publish(BIG, routing_key="q")) is None
        wait_for(lambda: queued(broker) == ["big"], timeout=30)


@pytest.mark.parametrize("when_full", ["block", "raise"])
def test_a_message_that_can_never_fit_goes_to_the_broker_while_the_breaker_is_still_open(
    broker: RedisServer, when_full: str
) -> None:
    with connect(broker, spill_when_full=when_full) as conn:
        producer = conn.Producer()
        producer.publish({"n": 0}, routing_key="q")  # spilled: the breaker opens
        (spiller,) = spillers()
        back(broker, spiller)
        # Behind the spilled message: waits for the drainer (hurried), then direct.
        assert within(10, lambda: producer.publish(BIG, routing_key="q")) is None
        wait_for(lambda: len(queued(broker)) >= 2, timeout=30)
        assert queued(broker) == [0, "big"]


def test_raise_a_full_store_does_not_refuse_once_the_broker_is_back(broker: RedisServer) -> None:
    # Before: SpillFull until the drainer's backoff ran out (up to 5 s).
    with connect(broker) as conn:
        producer = conn.Producer()
        accepted = []
        with pytest.raises(SpillFull):
            for n in range(10_000):
                producer.publish({"n": n, "pad": "x" * 100}, routing_key="q")
                accepted.append(n)
        (spiller,) = spillers()
        back(broker, spiller)
        n = len(accepted)
        assert (
            within(10, lambda: producer.publish({"n": n, "pad": "x" * 100}, routing_key="q"))
            is None
        )
        accepted.append(n)
        wait_for(lambda: len(queued(broker)) >= len(accepted), timeout=60)
        assert queued(broker) == accepted


def test_raise_a_full_store_still_refuses_at_once_while_the_broker_is_down(
    broker: RedisServer,
) -> None:
    with connect(broker) as conn:
        producer = conn.Producer()
        with pytest.raises(SpillFull):
            for n in range(10_000):
                producer.publish({"n": n, "pad": "x" * 100}, routing_key="q")
        for _ in range(20):
            error = within(
                5, lambda: producer.publish({"n": -1, "pad": "x" * 200}, routing_key="q")
            )
            assert isinstance(error, SpillFull) and "unreachable" in str(error), error
