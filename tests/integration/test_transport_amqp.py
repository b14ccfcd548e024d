"""durable+amqp:// end to end: a real rabbitmq-server, real workers and producers.

One RabbitMQ node per module (it takes ~10 s to start); each test gets a
virtual host of its own, so nothing one test left in a queue reaches another.
Tasks record what ran in a redis the tests never kill (durable_app.py).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.rabbitmq_server import RabbitMQServer, available
from tests.helpers.redis_server import RedisServer
from tests.helpers.wait import wait_for

from .conftest import Cluster, assert_ordered, duplicates

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not available(), reason="rabbitmq-server not installed (.ci/bootstrap)"),
]


@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[RabbitMQServer]:
    server = RabbitMQServer().start()
    try:
        yield server
    finally:
        server.close()


class AmqpCluster(Cluster):
    """The redis Cluster's helpers with RabbitMQ (a fresh vhost) as the broker."""

    def __init__(self, tmp_path: Path, durable_dir: Path, rabbitmq: RabbitMQServer) -> None:
        self.tmp_path = tmp_path
        self.durable_dir = durable_dir
        if rabbitmq.proc is None:  # a previous test failed with it stopped
            rabbitmq.start()
        self.broker = rabbitmq  # type: ignore[assignment]
        self.vhost = rabbitmq.new_vhost()
        self.results = RedisServer().start()
        self.transport_options: dict[str, Any] = {}
        self.procs = []
        self.apps = []

    @property
    def broker_url(self) -> str:
        return "durable+" + self.broker.url(self.vhost)  # type: ignore[call-arg]

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
        # Results are in reference cycles: collect them while their redis still runs.
        gc.collect()
        for app in self.apps:
            app.close()
        broker: RabbitMQServer = self.broker  # type: ignore[assignment]
        if broker.proc is not None:
            broker.thaw()
        self.results.close()


@pytest.fixture
def cluster(tmp_path: Path, durable_dir: Path, rabbitmq: RabbitMQServer) -> Iterator[AmqpCluster]:
    c = AmqpCluster(tmp_path, durable_dir, rabbitmq)
    try:
        yield c
    finally:
        c.close()


def test_healthy_path_classic_and_quorum_queues(cluster: AmqpCluster) -> None:
    worker = cluster.worker("--pool=prefork", "--concurrency=2", "-Q", "celery,quorum",
                            DURABLE_QUORUM=1)  # fmt: skip
    producer = cluster.producer("quorum", 300, DURABLE_QUORUM=1)
    app = cluster.app()
    results = [app.send_task("durable_app.add", (i, i)) for i in range(100)]  # classic queue
    assert [r.get(timeout=60) for r in results] == [2 * i for i in range(100)]
    assert producer.wait(120) == 0, producer.output()[-2000:]
    arrivals = cluster.wait_arrived({("quorum", seq) for seq in range(300)})
    assert duplicates(arrivals) == 0  # (two prefork children: execution order is theirs)
    # Remote control goes over the fanout pidbox exchange through our transport.
    replies = app.control.ping(timeout=5.0)
    assert any("worker@" in name for reply in replies for name in reply), replies
    log = worker.output()
    assert "amqp://" in log  # the worker reports the inner transport
    app.close()


def test_broker_stopped_during_two_producers(cluster: AmqpCluster) -> None:
    # Prefetching keeps one solo worker's pace up on a loaded machine; the
    # order check skips messages RabbitMQ redelivers after the connection died.
    cluster.worker("--pool=solo", "--prefetch-multiplier=50")
    producers = [cluster.producer(name, 5000) for name in ("p1", "p2")]
    wait_for(lambda: all(len(cluster.sent(p)) > 1000 for p in producers), timeout=120)
    broker: RabbitMQServer = cluster.broker  # type: ignore[assignment]
    broker.kill()
    marks = [len(cluster.sent(p)) for p in producers]
    # The outage lasts until both producers have published 1,000 more messages
    # (at least) with no broker: every one of those went to the spill store.
    wait_for(
        lambda: all(len(cluster.sent(p)) > m + 1000 or "done" in p.output()
                    for p, m in zip(producers, marks, strict=True)),
        timeout=120,
    )  # fmt: skip
    broker.start()
    for p in producers:
        assert p.wait(300) == 0, p.output()[-2000:]
    expected = {(name, seq) for name in ("p1", "p2") for seq in range(5000)}
    arrivals = cluster.wait_arrived(expected, timeout=300)
    assert_ordered(cluster.arrivals(redelivered=False))
    print(f"10,000 sent, {len(set(arrivals))} executed, {duplicates(arrivals)} duplicates")


def test_broker_frozen_publish_never_blocks(cluster: AmqpCluster) -> None:
    cluster.transport_options = {"publish_timeout": 0.5}
    cluster.worker("--pool=solo", "--prefetch-multiplier=50")
    broker: RabbitMQServer = cluster.broker  # type: ignore[assignment]
    broker.freeze()
    producer = cluster.producer("frozen", 500)
    try:
        assert producer.wait(120) == 0, producer.output()[-2000:]
    finally:
        broker.thaw()
    worst = float(producer.output().split("max-latency ")[1].split()[0])
    assert worst <= 0.5 + 0.5, f"an apply_async blocked {worst:.3f}s"
    cluster.wait_arrived({("frozen", seq) for seq in range(500)}, timeout=180)
    assert_ordered(cluster.arrivals(redelivered=False))


def test_broker_frozen_mid_stream(cluster: AmqpCluster) -> None:
    """Frozen while a producer is connected and publishing: the confirm wait gives up."""
    cluster.transport_options = {"publish_timeout": 0.5}
    cluster.worker("--pool=solo", "--prefetch-multiplier=50")
    broker: RabbitMQServer = cluster.broker  # type: ignore[assignment]
    producer = cluster.producer("midstream", 3000)
    wait_for(lambda: len(cluster.sent(producer)) > 300, timeout=120)
    broker.freeze()
    try:
        mark = len(cluster.sent(producer))
        wait_for(lambda: len(cluster.sent(producer)) > mark + 300 or not producer.alive(),
                 timeout=60)  # fmt: skip
    finally:
        broker.thaw()
    assert producer.wait(120) == 0, producer.output()[-2000:]
    worst = float(producer.output().split("max-latency ")[1].split()[0])
    assert worst <= 0.5 + 0.5, f"an apply_async blocked {worst:.3f}s"
    arrivals = cluster.wait_arrived({("midstream", seq) for seq in range(3000)}, timeout=180)
    assert_ordered(cluster.arrivals(redelivered=False))
    print(f"3,000 sent, {duplicates(arrivals)} duplicates")


def test_memory_alarm_publishes_never_hang(cluster: AmqpCluster) -> None:
    cluster.transport_options = {"publish_timeout": 0.5}
    cluster.worker("--pool=solo", "--prefetch-multiplier=50")
    broker: RabbitMQServer = cluster.broker  # type: ignore[assignment]
    broker.set_memory_watermark(0.0000001)  # memory alarm: RabbitMQ blocks publishers
    try:
        producer = cluster.producer("alarm", 500)
        assert producer.wait(120) == 0, producer.output()[-2000:]
    finally:
        broker.set_memory_watermark(0.4)
    worst = float(producer.output().split("max-latency ")[1].split()[0])
    assert worst <= 0.5 + 0.5, f"an apply_async blocked {worst:.3f}s"
    cluster.wait_arrived({("alarm", seq) for seq in range(500)}, timeout=180)
    assert_ordered(cluster.arrivals(redelivered=False))


@pytest.mark.parametrize("mode", ["direct", "wal"])
def test_producer_killed_during_outage_is_adopted(cluster: AmqpCluster, mode: str) -> None:
    broker: RabbitMQServer = cluster.broker  # type: ignore[assignment]
    broker.kill()
    producer = cluster.producer("victim", 100_000, options={"publish_mode": mode})
    wait_for(lambda: len(cluster.sent(producer)) >= 2000, timeout=120)
    producer.kill()  # SIGKILL, mid-stream
    accepted = cluster.sent(producer)
    broker.start()
    # A new process on the same spill_dir (here: a worker) adopts the dead store.
    cluster.worker("--pool=solo", "--prefetch-multiplier=50", options={"publish_mode": mode})
    cluster.wait_arrived({("victim", seq) for seq in accepted}, timeout=180)
    assert_ordered(cluster.arrivals(redelivered=False))


def test_dead_lettered_task_is_restored_by_beat(
    rabbitmq: RabbitMQServer, redis_server: RedisServer, tmp_path: Path, durable_dir: Path
) -> None:
    """A task failing for good on an amqp broker is dumped, then restored by beat."""
    from celery import Celery

    from .restore_support import RestoreHarness

    h = RestoreHarness(redis_server, tmp_path, durable_dir)
    if rabbitmq.proc is None:
        rabbitmq.start()
    h.broker_url = "durable+" + rabbitmq.url(rabbitmq.new_vhost())
    h.producer_app = Celery("restore-test", broker=h.broker_url, set_as_current=False)
    try:
        h.worker("w1@%h", "work,durable-restore", "-c", "2")
        ids = h.send("restore_app.flaky", 50)
        h.wait(lambda: len(h.dumps()) == 50, 180, "50 dumps")
        assert not h.runs()
        h.state.set("fixed", 1)
        h.beat()
        h.wait(lambda: len(h.runs()) == 50, 180, "50 restored tasks to succeed")
        h.wait(lambda: not h.dumps(), 60, "the dump store to empty")
        runs = h.runs()
        assert set(runs) == set(ids)  # the original task ids
        assert set(runs.values()) == {1}
    finally:
        h.close()
        h.producer_app.close()


def test_buffered_overflow_spills_and_graceful_stop_loses_nothing(cluster: AmqpCluster) -> None:
    broker: RabbitMQServer = cluster.broker  # type: ignore[assignment]
    broker.kill()
    options = {"publish_mode": "buffered", "buffer_max_bytes": 64 * 1024}
    producer = cluster.producer("buffered", 3000, options=options)
    assert producer.wait(120) == 0, producer.output()[-2000:]  # exits: buffer flushed to disk
    assert len(cluster.sent(producer)) == 3000
    broker.start()
    cluster.worker("--pool=solo", "--prefetch-multiplier=50", options=options)
    cluster.wait_arrived({("buffered", seq) for seq in range(3000)}, timeout=180)
    assert_ordered(cluster.arrivals(redelivered=False))


def test_buffered_healthy_path_is_confirmed_by_the_drainer(cluster: AmqpCluster) -> None:
    options = {"publish_mode": "buffered"}
    cluster.worker("--pool=solo", "--prefetch-multiplier=50", options=options)
    producer = cluster.producer("buffered-ok", 2000, options=options)
    assert producer.wait(120) == 0, producer.output()[-2000:]
    arrivals = cluster.wait_arrived({("buffered-ok", seq) for seq in range(2000)}, timeout=180)
    assert duplicates(arrivals) == 0
    assert_ordered(cluster.arrivals(redelivered=False))


def test_cli_status_ls_and_drain_adopt_a_dead_store(cluster: AmqpCluster) -> None:
    from tests.helpers.processes import celery

    broker: RabbitMQServer = cluster.broker  # type: ignore[assignment]
    broker.kill()
    producer = cluster.producer("orphan", 100_000)
    wait_for(lambda: len(cluster.sent(producer)) >= 500, timeout=120)
    producer.kill()
    accepted = len(cluster.sent(producer))

    def cli(*args: str) -> tuple[int, str]:
        proc = celery(
            "-A", "durable_app", "durable", *args,
            log=cluster.tmp_path / f"cli-{args[0]}-{args[-1]}.log",
            env=cluster.env(), cwd=Path(__file__).parent,
        )  # fmt: skip
        return proc.wait(120), proc.output()

    rc, out = cli("spill", "ls")
    assert rc == 0, out
    row = out.splitlines()[1].split()  # STORE HOST PID ALIVE RECORDS ...
    assert row[3] == "no" and int(row[4]) >= accepted, out
    rc, out = cli("status")
    assert rc == 0 and "probe unreachable" in out and "dead (adoptable)" in out, out
    broker.start()
    rc, out = cli("spill", "drain")
    assert rc == 0, out
    assert broker.queue_length("celery", cluster.vhost) >= accepted
    rc, out = cli("status")
    assert rc == 0 and "probe reachable" in out and "backlog 0" in out, out


def test_spill_full_raises_and_loses_nothing_accepted(cluster: AmqpCluster) -> None:
    broker: RabbitMQServer = cluster.broker  # type: ignore[assignment]
    broker.kill()
    options = {"spill_max_bytes": 200_000}
    producer = cluster.producer("capped", 100_000, "--stop-on-full", options=options)
    assert producer.wait(120) == 0, producer.output()[-2000:]
    assert "full " in producer.output(), "SpillFull was never raised"
    accepted = cluster.sent(producer)
    assert 100 < len(accepted) < 100_000
    broker.start()
    cluster.worker("--pool=solo", "--prefetch-multiplier=50", options=options)
    cluster.wait_arrived({("capped", seq) for seq in accepted}, timeout=180)


def test_restore_gate_reads_queue_length_on_rabbitmq(
    rabbitmq: RabbitMQServer, redis_server: RedisServer, tmp_path: Path, durable_dir: Path
) -> None:
    """A queue above the allow rate gets no restored task until a worker drains it."""
    import uuid

    from celery import Celery

    from .restore_support import RestoreHarness, flaky_dump

    h = RestoreHarness(redis_server, tmp_path, durable_dir)
    if rabbitmq.proc is None:
        rabbitmq.start()
    vhost = rabbitmq.new_vhost()
    h.broker_url = "durable+" + rabbitmq.url(vhost)
    h.producer_app = Celery("restore-test", broker=h.broker_url, set_as_current=False)
    h.conf.update(durable_restore_queue_capacity=10, durable_restore_allow_rate=0.5)  # limit 5
    try:
        slow = [str(uuid.uuid4()) for _ in range(8)]
        fast = [str(uuid.uuid4()) for _ in range(8)]
        store = h.store()
        store.write([flaky_dump(t, "slow") for t in slow] + [flaky_dump(t, "fast") for t in fast])
        store.close()
        h.send("restore_app.noop", 20, queue="slow")  # held above the allow rate
        h.state.set("fixed", 1)
        h.worker("w1@%h", "fast,durable-restore")
        h.beat()
        h.wait(lambda: set(fast) <= set(h.runs()), 120, "the other queue to be restored")
        seen = h.restore_runs()
        h.wait(lambda: h.restore_runs() >= seen + 3, 120, "three more restore runs")
        assert rabbitmq.queue_length("slow", vhost) == 20  # nothing published to the full queue
        assert {e.task_id for e in h.dumps()} == set(slow)
        h.worker("w2@%h", "slow")  # drains it
        h.wait(lambda: set(slow) <= set(h.runs()), 120, "the drained queue to be restored")
        h.wait(lambda: not h.dumps(), 60, "the dump store to empty")
    finally:
        h.close()
        h.producer_app.close()


def test_kombu_producer_across_a_clean_broker_stop(rabbitmq: RabbitMQServer) -> None:
    """A long-lived Kombu producer (no retry) never raises across a SIGTERM'd RabbitMQ."""
    from kombu import Connection, Exchange, Queue

    if rabbitmq.proc is None:
        rabbitmq.start()
    vhost = rabbitmq.new_vhost()
    queue = Queue("stopq", Exchange("stopex", "direct"), routing_key="k", durable=True)
    with Connection("durable+" + rabbitmq.url(vhost)) as conn:
        producer = conn.Producer()
        for i in range(10):
            producer.publish({"i": i}, exchange=queue.exchange, routing_key="k", declare=[queue])
        rabbitmq.stop()  # clean shutdown: RabbitMQ closes client connections (320)
        for i in range(10, 20):
            producer.publish({"i": i}, exchange=queue.exchange, routing_key="k", declare=[queue])
        other = conn.Producer()
        for i in range(20, 30):
            other.publish({"i": i}, exchange=queue.exchange, routing_key="k", declare=[queue],
                          retry=False)  # fmt: skip
        assert conn.transport.spiller.backlog() == 20
        rabbitmq.start()
        wait_for(lambda: conn.transport.spiller.backlog() == 0, timeout=120)
        got: list[int] = []

        def received_all() -> bool:
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=1)
            return len(got) >= 30

        with conn.Consumer([queue], callbacks=[lambda body, m: (got.append(body["i"]), m.ack())]):
            wait_for(received_all, timeout=60)
    assert got == list(range(30))


def _closed_by_peer(sock: Any) -> bool:
    """The peer closed ``sock``: it reads as end of file (or a reset) without blocking."""
    import select
    import socket

    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        while True:  # RabbitMQ's heartbeats may come first
            data = sock.recv(65536, socket.MSG_DONTWAIT)
            if not data:
                return True
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def test_drainer_connection_idle_past_its_heartbeat_is_replaced(rabbitmq: RabbitMQServer) -> None:
    # The drainer writes only when it has work and sends no heartbeats: RabbitMQ
    # closes its connection after two missed ones.  The next batch used to fail
    # on it (ConnectionResetError) and open the breaker for nothing.
    from celery_durable.spill import SpillRecord
    from celery_durable.transport.amqp_forwarder import AmqpForwarder

    if rabbitmq.proc is None:
        rabbitmq.start()
    vhost = rabbitmq.new_vhost()
    params = {"host": f"127.0.0.1:{rabbitmq.port}", "userid": "guest", "password": "guest",
              "virtual_host": vhost, "heartbeat": 1}  # fmt: skip
    forwarder = AmqpForwarder(params, timeout=5.0)
    declare = {"op": "queue_declare", "queue": "idle", "durable": True, "exclusive": False,
               "auto_delete": False, "arguments": {}}  # fmt: skip
    record = SpillRecord(body=b"{}", exchange="", routing_key="idle", declarations=[declare])
    try:
        forwarder.forward([record])
        conn = forwarder._conn
        assert conn is not None and conn.heartbeat == 1
        wait_for(lambda: _closed_by_peer(conn.sock), timeout=30,
                 message="RabbitMQ to close the idle connection")  # fmt: skip
        forwarder.forward([record])  # a fresh connection, no error
        assert rabbitmq.queue_length("idle", vhost) == 2
    finally:
        forwarder.close()


def test_a_record_amqp_cannot_encode_is_quarantined_not_retried_for_ever(
    rabbitmq: RabbitMQServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A header the spill format keeps but py-amqp's tables refuse (a UUID) is set aside.

    Before: the drainer's FrameSyntaxError counted as the broker being down, so
    the breaker stayed open and everything behind that record waited for ever.
    """
    import uuid

    from kombu import Connection, Queue

    from celery_durable.transport.registry import shutdown_all

    vhost = rabbitmq.new_vhost()
    queue = Queue("poison", routing_key="poison")
    try:
        with Connection(
            "durable+" + rabbitmq.url(vhost), transport_options={"publish_mode": "wal"}
        ) as conn:
            producer = conn.Producer()
            producer.publish({"n": -1}, routing_key="poison", declare=[queue],
                             headers={"bad": uuid.uuid4()})  # fmt: skip
            for n in range(20):
                producer.publish({"n": n}, routing_key="poison", declare=[queue])
            with Connection(rabbitmq.url(vhost)) as plain:
                got: list[int] = []

                def arrived() -> bool:
                    with plain.SimpleQueue(queue) as sq:
                        while True:
                            try:
                                message = sq.get(timeout=0.2)
                            except sq.Empty:
                                return len(got) >= 20
                            got.append(message.payload["n"])
                            message.ack()

                wait_for(arrived, timeout=60)
            assert got == list(range(20)), "everything behind it arrives, in order"
            store = conn.transport.spiller.router.store
            assert store is not None and store.quarantined == 1
        assert "quarantined" in caplog.text and "UUID" in caplog.text
    finally:
        shutdown_all(0.0)
