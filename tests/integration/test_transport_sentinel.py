"""durable+sentinel:// end to end: a real master, replica and three Sentinels, real workers.

The Sentinel cluster (``tests/helpers/sentinel_cluster.py``) fails over in a few
seconds (``down-after-milliseconds`` 1000).  Producers and workers are the
same processes as the durable+redis:// tests (``durable_app``), pointed at
``durable+sentinel://...`` with ``master_name`` in the transport options.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from celery_durable.dlq import open_store
from tests.helpers.processes import Proc, celery, python, wait_ready
from tests.helpers.redis_server import RedisServer
from tests.helpers.sentinel_cluster import SentinelCluster
from tests.helpers.wait import wait_for

from .conftest import HERE, Cluster, assert_ordered, duplicates

pytestmark = pytest.mark.integration

#: A breaker opening logs this (celery_durable.transport.breaker).
TRIPPED = "unreachable ("


class SentinelSetup(Cluster):
    """The integration Cluster with a Sentinel-managed broker instead of one redis."""

    def __init__(self, tmp_path: Path, durable_dir: Path, **cluster: Any) -> None:
        # Not Cluster.__init__: no single redis broker here.
        self.tmp_path = tmp_path
        self.durable_dir = durable_dir
        self.procs: list[Proc] = []
        self.results = RedisServer().start()
        self.sentinel = SentinelCluster(**cluster)
        try:
            self.sentinel.start()
        except BaseException:
            self.close()
            raise
        self.transport_options: dict[str, Any] = dict(self.sentinel.transport_options)

    @property
    def broker_url(self) -> str:
        return self.sentinel.sentinel_urls()

    def measured_producer(self, name: str, count: int) -> Proc:
        """A producer that reports its spill count and when its backlog was drained."""
        proc = python(
            HERE / "sentinel_producer.py", name, str(count),
            log=self.tmp_path / f"producer-{name}.log", env=self.env(), cwd=HERE,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
        self.sentinel.close()
        self.results.close()


@pytest.fixture
def ha(tmp_path: Path, durable_dir: Path) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(tmp_path, durable_dir)
    try:
        yield setup
    finally:
        setup.close()


def test_master_killed_under_two_producers(ha: SentinelSetup) -> None:
    """Issue 12, test 1: every task published after the kill runs, in order, on a worker
    that stays up; what only the dead master had (never replicated) is counted apart."""
    worker = ha.worker("--pool=solo", options={"visibility_timeout": 10})
    producers = {name: ha.measured_producer(name, 5000) for name in ("p1", "p2")}
    wait_for(lambda: all(len(ha.sent(p)) > 1000 for p in producers.values()), timeout=120)
    old = ha.sentinel.kill_master()
    killed_at, killed_wall = time.monotonic(), time.time()
    # A publish whose apply_async started after this point started after the kill.
    marks = {name: len(ha.sent(p)) for name, p in producers.items()}
    new = ha.sentinel.wait_failover(old.port)
    failover_s = time.monotonic() - killed_at
    for p in producers.values():
        assert p.wait(240) == 0, p.output()[-2000:]
    after_kill = {(n, seq) for n, mark in marks.items() for seq in range(mark + 1, 5000)}
    arrivals = ha.wait_arrived(after_kill, timeout=240)
    drained_s = time.monotonic() - killed_at
    assert worker.alive(), worker.output()[-3000:]  # the same worker, never restarted
    assert_ordered(ha.arrivals(redelivered=False))

    executed = set(arrivals)
    before_kill = {(n, seq) for n, mark in marks.items() for seq in range(mark + 1)}
    # The dead master acknowledged these, but they never reached the replica
    # (redis replicates asynchronously): lost by redis, not by the transport.
    never_replicated = before_kill - executed
    tripped = sum(p.output().count(TRIPPED) for p in producers.values())
    cost = {name: _report(p) for name, p in producers.items()}
    print(
        f"\nfailover {failover_s:.1f}s (master {old.port} -> {new.port}); "
        f"10,000 sent, marks at kill {marks}; {len(after_kill)} published after the kill, "
        f"all executed {drained_s:.1f}s after it; {duplicates(arrivals)} duplicates; "
        f"{len(never_replicated)} published before the kill were only on the dead master; "
        f"breakers opened in {tripped} producer(s); "
        + "; ".join(
            f"{n}: {c['spilled']:.0f} spilled, slowest apply_async {c['max-latency']:.3f}s, "
            "backlog drained "
            f"{c['drained-at'] - killed_wall:.1f}s after the kill"
            for n, c in cost.items()
        )
    )
    assert tripped == 2, "both producers should have spilled through the failover"
    for name, c in cost.items():
        assert c["spilled"] > 0 and c["backlog-left"] == 0, (name, c)
        # Never hangs through a failover: publish_timeout (1 s) bounds every attempt.
        assert c["max-latency"] <= 1.0 + 1.0, (name, c)
    # Asynchronous replication loses at most what was in flight: a few hundred ms of writes.
    assert len(never_replicated) < 2000, sorted(never_replicated)[:20]


def _report(proc: Proc) -> dict[str, float]:
    out = {}
    for line in proc.output().splitlines():
        key, _, value = line.partition(" ")
        if key in ("spilled", "drained", "backlog-left", "drained-at", "max-latency"):
            out[key] = float(value)
    return out


def test_first_sentinel_down_and_then_only_the_first_alive(ha: SentinelSetup) -> None:
    """Issue 12, test 2 (celery#6348, and Kombu dropping the durable+sentinel:// URL)."""
    ha.sentinel.stop_sentinel(0)
    worker = ha.worker("--pool=solo", name="w1")
    p = ha.producer("first-down", 300)
    assert p.wait(120) == 0, p.output()[-2000:]
    ha.wait_arrived({("first-down", seq) for seq in range(300)})
    assert TRIPPED not in p.output(), p.output()[-2000:]  # published directly, nothing spilled
    worker.terminate()

    ha.sentinel.start_sentinel(0)
    ha.sentinel.stop_sentinel(1)
    ha.sentinel.stop_sentinel(2)
    worker = ha.worker("--pool=solo", name="w2")
    p = ha.producer("only-first", 300)
    assert p.wait(120) == 0, p.output()[-2000:]
    ha.wait_arrived({("only-first", seq) for seq in range(300)})
    assert TRIPPED not in p.output(), p.output()[-2000:]
    assert TRIPPED not in worker.output(), worker.output()[-3000:]


@pytest.mark.parametrize("mode", ["direct", "buffered", "wal"])
def test_all_sentinels_down_is_an_outage(ha: SentinelSetup, mode: str) -> None:
    ha.transport_options["publish_mode"] = mode
    worker = ha.worker("--pool=solo")
    for i in range(3):
        ha.sentinel.stop_sentinel(i)
    p = ha.producer("no-sentinel", 500, options={"publish_timeout": 0.5})
    assert p.wait(120) == 0, p.output()[-2000:]  # never hangs, never raises
    if mode == "direct":  # buffered/wal never try the network from the publisher
        assert TRIPPED in p.output()
    # The producer exited with its backlog on disk; the worker adopts and drains it.
    assert not ha.arrivals()
    for i in range(3):
        ha.sentinel.start_sentinel(i)
    ha.wait_arrived({("no-sentinel", seq) for seq in range(500)}, timeout=180)
    assert_ordered(ha.arrivals(redelivered=False))
    assert worker.alive()


def test_store_written_before_failover_is_drained_after_it(ha: SentinelSetup) -> None:
    """The spill directory is named by master name and Sentinel set, not by the master's
    address: a producer SIGKILLed mid-failover leaves a store that a process started
    after the promotion (a worker) finds, adopts and drains to the new master."""
    old = ha.sentinel.kill_master()
    victim = ha.producer("victim", 100_000)
    wait_for(lambda: len(ha.sent(victim)) >= 2000, timeout=60)
    victim.kill()
    accepted = ha.sent(victim)
    assert not ha.arrivals()
    ha.sentinel.wait_failover(old.port)
    ha.worker("--pool=solo")
    ha.wait_arrived({("victim", seq) for seq in accepted}, timeout=180)
    assert_ordered(ha.arrivals(redelivered=False))


def test_worker_resumes_consuming_after_failover(ha: SentinelSetup) -> None:
    """Issue 12, test 3 (celery#10096): an idle worker consumes again after a failover."""
    worker = ha.worker("--pool=prefork", "--concurrency=2")
    p = ha.producer("before", 50)
    assert p.wait(120) == 0
    ha.wait_arrived({("before", seq) for seq in range(50)})
    old = ha.sentinel.kill_master()
    ha.sentinel.wait_failover(old.port)
    p = ha.producer("after", 200)
    assert p.wait(120) == 0, p.output()[-2000:]
    ha.wait_arrived({("after", seq) for seq in range(200)}, timeout=180)
    assert worker.alive(), worker.output()[-3000:]
    assert worker.output().count(" ready.") == 1  # never restarted


def _dlq_env(ha: SentinelSetup, **extra: str) -> dict[str, str]:
    return {
        "HA_BROKER": ha.broker_url,
        "HA_TRANSPORT_OPTIONS": json.dumps(ha.transport_options),
        "HA_DLQ_URL": ha.sentinel.dump_store_url(),
        "HA_RESULTS": ha.results.url,
        "CELERY_DURABLE_DIR": str(ha.durable_dir),
        **extra,
    }


def _dlq_worker(ha: SentinelSetup, env: dict[str, str]) -> Proc:
    worker = celery(
        "-A", "sentinel_dlq_app", "worker", "-P", "solo", "-Q", "ha", "--loglevel=INFO",
        "--without-mingle", "--without-gossip", "--without-heartbeat",
        log=ha.tmp_path / "dlq-worker.log", env=env, cwd=HERE,
    )  # fmt: skip
    ha.procs.append(worker)
    return wait_ready(worker)


def _dump_failures(ha: SentinelSetup, worker: Proc, count: int) -> None:
    """Send ``count`` ha.flaky tasks and wait until each one is dumped."""
    dlq_url = ha.sentinel.dump_store_url()
    client = Celery("ha-client", broker=ha.broker_url, set_as_current=False)
    client.conf.broker_transport_options = dict(ha.transport_options)
    ids = {client.send_task("ha.flaky", (n,), queue="ha").id for n in range(count)}
    wait_for(
        lambda: ids <= {e.task_id for e in open_store(dlq_url).entries()},
        timeout=90,
        message=lambda: f"{count} dumps; worker log:\n{worker.output()[-3000:]}",
    )
    client.close()


def _succeeded(ha: SentinelSetup) -> list[int]:
    return sorted(int(n) for n in ha.results.client().lrange("succeeded", 0, -1))


def test_dead_letters_captured_and_restored_across_a_failover(ha: SentinelSetup) -> None:
    """Capture to a redis+sentinel:// dump store, fail over, then list and restore with the
    CLI through Sentinel (restore lock, gate and publish): every dump runs again, once."""
    dlq_url = ha.sentinel.dump_store_url()
    env = _dlq_env(ha)

    def cli(*args: str) -> tuple[int, str]:
        proc = celery("-A", "sentinel_dlq_app", "durable", *args,
                      log=ha.tmp_path / "cli.log", env=env, cwd=HERE)  # fmt: skip
        rc = proc.wait(timeout=120)
        return rc, proc.output()

    worker = _dlq_worker(ha, env)
    _dump_failures(ha, worker, 20)
    ha.sentinel.wait_replicated()
    old = ha.sentinel.kill_master()
    ha.sentinel.wait_failover(old.port)

    rc, out = cli("dlq", "ls")
    assert rc == 0 and "20 dumps" in out, out
    ha.results.client().set("fixed", 1)
    rc, out = cli("dlq", "restore", "--all")
    assert rc == 0, out
    wait_for(
        lambda: _succeeded(ha) == list(range(20)),
        timeout=120,
        message=lambda: f"20 restored runs; worker log:\n{worker.output()[-3000:]}",
    )
    assert not list(open_store(dlq_url).entries())
    rc, out = cli("status")
    assert rc == 0 and "reachable" in out and "unreachable" not in out, out
    assert worker.alive()


def test_master_without_replicas_refusing_writes_is_an_outage(
    tmp_path: Path, durable_dir: Path
) -> None:
    """With min-replicas-to-write (the replication guard in the docs) a master that lost
    its replica answers NOREPLICAS: publishes spill instead of raising, and drain once the
    replica is back."""
    ha = SentinelSetup(
        tmp_path, durable_dir, server_args=("--min-replicas-to-write", "1",
                                             "--min-replicas-max-lag", "10"),
    )  # fmt: skip
    try:
        replica = ha.sentinel.replica()
        replica.kill()
        wait_for(
            lambda: int(ha.sentinel.master().client().info("replication")["connected_slaves"]) == 0,
            timeout=30,
        )
        p = ha.producer("noreplicas", 300)
        assert p.wait(120) == 0, p.output()[-2000:]  # no ResponseError raised to apply_async
        assert TRIPPED in p.output() and "NOREPLICAS" in p.output(), p.output()[-2000:]
        replica.start()
        ha.sentinel.wait_replicated()
        ha.worker("--pool=solo")
        ha.wait_arrived({("noreplicas", seq) for seq in range(300)}, timeout=180)
        assert_ordered(ha.arrivals(redelivered=False))
    finally:
        ha.close()


def test_beat_restores_dead_letters_after_a_failover(ha: SentinelSetup) -> None:
    """The beat restore task (celery_durable.restore on a worker) through Sentinel."""
    env = _dlq_env(ha, HA_RESTORE_EVERY="1.0")
    worker = _dlq_worker(ha, env)
    _dump_failures(ha, worker, 10)
    ha.sentinel.wait_replicated()
    old = ha.sentinel.kill_master()
    ha.sentinel.wait_failover(old.port)
    ha.results.client().set("fixed", 1)
    beat = celery(
        "-A", "sentinel_dlq_app", "beat", "--loglevel=INFO",
        "--schedule", str(ha.tmp_path / "beat-schedule"),
        log=ha.tmp_path / "beat.log", env=env, cwd=HERE,
    )  # fmt: skip
    ha.procs.append(beat)
    wait_for(
        lambda: _succeeded(ha) == list(range(10)),
        timeout=120,
        message=lambda: (
            f"10 restored runs; beat:\n{beat.output()[-2000:]}\nworker:\n{worker.output()[-3000:]}"
        ),
    )
    assert not list(open_store(ha.sentinel.dump_store_url()).entries())
    assert worker.alive()
