"""Publisher confirm tracking and the declaration log of durable+amqp:// (no broker)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from amqp.exceptions import MessageNacked

from celery_durable.transport.amqp_declarations import DeclarationLog
from celery_durable.transport.confirms import BrokerBlocked, Confirms, ConfirmTimeout


class FakeConnection:
    """Frames "arrive" from a script: each drain_events call runs the next one."""

    def __init__(self) -> None:
        self.script: list[Callable[[], None]] = []
        self.blocked = False

    def drain_events(self, timeout: float | None = None) -> None:
        if not self.script:
            time.sleep(timeout or 0)
            raise TimeoutError
        self.script.pop(0)()


class FakeChannel:
    def __init__(self) -> None:
        self.connection = FakeConnection()
        self.events: dict[str, set[Any]] = defaultdict(set)
        self.selected = False

    def confirm_select(self) -> None:
        self.selected = True

    def ack(self, tag: int, multiple: bool = False) -> None:
        self.connection.script.append(
            lambda: [cb(tag, multiple) for cb in self.events["basic_ack"]]
        )

    def nack(self, tag: int, multiple: bool = False) -> None:
        self.connection.script.append(
            lambda: [cb(tag, multiple) for cb in self.events["basic_nack"]]
        )


def test_a_late_confirm_is_not_taken_for_the_next_publish() -> None:
    # py-amqp's basic_publish_confirm waits for *any* ack: after one timeout,
    # every later publish would take its predecessor's confirm for its own.
    channel = FakeChannel()
    confirms = Confirms(channel, timeout=0.1)
    assert channel.selected
    first = confirms.published()
    with pytest.raises(ConfirmTimeout):
        confirms.wait(first, first, time.monotonic() + 0.05)
    second = confirms.published()
    channel.ack(first)  # the late confirm of the first publish
    with pytest.raises(ConfirmTimeout):
        confirms.wait(second, second, time.monotonic() + 0.1)
    channel.ack(second)
    confirms.wait(second, second, time.monotonic() + 1)


def test_multiple_acks_confirm_a_whole_batch() -> None:
    channel = FakeChannel()
    confirms = Confirms(channel, timeout=0.1)
    tags = [confirms.published() for _ in range(10)]
    channel.ack(4, multiple=True)
    channel.ack(7)
    channel.ack(10, multiple=True)
    confirms.wait(tags[0], tags[-1], time.monotonic() + 1)
    assert not confirms.pending


def test_a_nack_fails_only_the_publishes_it_names() -> None:
    channel = FakeChannel()
    confirms = Confirms(channel, timeout=0.1)
    a, b = confirms.published(), confirms.published()
    channel.nack(b)
    channel.ack(a)
    confirms.wait(a, a, time.monotonic() + 1)
    with pytest.raises(MessageNacked):
        confirms.wait(b, b, time.monotonic() + 1)


def test_connection_blocked_ends_the_wait_at_once() -> None:
    channel = FakeChannel()
    confirms = Confirms(channel, timeout=0.1)
    tag = confirms.published()
    channel.connection.script.append(lambda: setattr(channel.connection, "blocked", True))
    started = time.monotonic()
    with pytest.raises(BrokerBlocked):
        confirms.wait(tag, tag, time.monotonic() + 30)
    assert time.monotonic() - started < 5


def test_declarations_a_message_needs_in_order_with_queue_arguments() -> None:
    log = DeclarationLog()
    log.exchange_declare("tasks", "direct", durable=True, auto_delete=False, arguments=None)
    log.queue_declare("orders", durable=True, exclusive=False, auto_delete=False,
                      arguments={"x-queue-type": "quorum"})  # fmt: skip
    log.queue_bind("orders", "tasks", "orders", arguments=None)
    arguments = {"x-max-priority": 10, "x-dead-letter-exchange": "dlx"}
    log.queue_declare("celery", durable=True, exclusive=False, auto_delete=False,
                      arguments=arguments)  # fmt: skip
    decls = log.for_message("tasks", "orders")
    assert [d["op"] for d in decls] == ["exchange_declare", "queue_declare", "queue_bind"]
    assert decls[1]["arguments"] == {"x-queue-type": "quorum"}
    default = log.for_message("", "celery")
    assert default == [
        {"op": "queue_declare", "queue": "celery", "durable": True, "exclusive": False,
         "auto_delete": False, "arguments": arguments}
    ]  # fmt: skip
    log.exchange_declare("tasks", "direct", durable=True, auto_delete=False, arguments=None)
    assert log.for_message("tasks", "orders") == decls  # no duplicates


def test_exclusive_queues_their_bindings_and_amq_exchanges_are_not_replayed() -> None:
    # Failed before: the bind of Celery's exclusive celeryev.<uuid> queue was
    # replayed by the drainer, RabbitMQ answered NOT_FOUND, the drainer looped.
    log = DeclarationLog()
    log.exchange_declare("celeryev", "topic", durable=True, auto_delete=False, arguments=None)
    log.queue_declare("celeryev.abc", durable=False, exclusive=True, auto_delete=True,
                      arguments=None)  # fmt: skip
    log.queue_bind("celeryev.abc", "celeryev", "worker.#", arguments=None)
    log.exchange_declare("amq.direct", "direct", durable=True, auto_delete=False, arguments=None)
    assert [d["op"] for d in log.for_message("celeryev", "worker.heartbeat")] == [
        "exchange_declare"
    ]
    assert log.for_message("amq.direct", "x") == []
