"""A full disk under the spill store: a clear SpillError, nothing accepted lost.

Mounts a small tmpfs (needs root, as CI runs): a real ENOSPC from the kernel.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection

import celery_durable  # noqa: F401 - registers the alias
from celery_durable.exceptions import SpillError, SpillFull
from celery_durable.spill import SpillRecord, SpillStore
from celery_durable.transport.spiller import shutdown_all
from tests.helpers.redis_server import RedisServer
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.chaos


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        shutdown_all(0.0)
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path, nbytes: int) -> Path:
    ballast = path / "ballast"
    ballast.write_bytes(b"\0" * nbytes)
    return ballast


def test_store_on_a_full_disk_raises_spill_error_and_keeps_every_record(small_disk: Path) -> None:
    # Half the disk is ballast: freeing it leaves LevelDB room to recover its log.
    ballast = fill(small_disk, 2 << 20)
    store = SpillStore(small_disk / "store")
    bodies = []
    with pytest.raises(SpillError, match="No space left on device") as raised:
        while True:
            body = os.urandom(1000)
            store.append(SpillRecord(body=body, exchange="", routing_key="q"))
            bodies.append(body)
    assert not isinstance(raised.value, SpillFull)  # the disk, not spill_max_bytes
    assert [r.body for _, r in store.peek(len(bodies) + 10)] == bodies
    store.close()
    ballast.unlink()  # the operator frees space
    with SpillStore(small_disk / "store") as again:
        assert [r.body for _, r in again.peek(len(bodies) + 10)] == bodies


def test_producer_on_a_full_disk_gets_spill_error_then_everything_drains(
    small_disk: Path,
) -> None:
    ballast = fill(small_disk, 2 << 20)
    server = RedisServer()  # not started: the broker is down
    url = f"durable+redis://127.0.0.1:{server.port}/0"
    options = {"spill_dir": str(small_disk / "spill")}
    producer = Connection(url, transport_options=options)
    accepted = 0
    try:
        with pytest.raises(SpillError, match="No space left on device"):
            while True:
                producer.Producer().publish({"n": accepted, "pad": "x" * 900}, routing_key="q")
                accepted += 1
        assert accepted > 100
        ballast.unlink()  # the operator frees space...
        shutdown_all(0.0)  # ...and the producer exits with its backlog on disk
        server.start()
        # The next process on this spill_dir adopts the store and drains all of it.
        with Connection(url, transport_options=options) as successor:
            successor.transport.spiller.start()  # adoption happens here
            wait_for(lambda: server.client().llen("q") == accepted, timeout=60)
    finally:
        producer.release()
        server.close()


def test_drainer_survives_a_full_disk_and_duplicates_at_most_one_batch(small_disk: Path) -> None:
    ballast = fill(small_disk, 2 << 20)
    server = RedisServer()  # down while the disk fills
    url = f"durable+redis://127.0.0.1:{server.port}/0"
    options = {"spill_dir": str(small_disk / "spill"), "drain_batch": 100}
    conn = Connection(url, transport_options=options)
    accepted = 0
    try:
        with pytest.raises(SpillError):
            while True:
                conn.Producer().publish({"n": accepted, "pad": "x" * 900}, routing_key="q")
                accepted += 1
        # The broker returns while the disk is still full: the drainer forwards a
        # batch, cannot delete it (LevelDB refuses writes), reopens and retries.
        server.start()
        client = server.client()
        wait_for(lambda: client.llen("q") >= 1, timeout=30)
        ballast.unlink()

        def delivered() -> list[int]:
            return [
                json.loads(base64.b64decode(json.loads(raw)["body"]))["n"]
                for raw in client.lrange("q", 0, -1)
            ]

        wait_for(lambda: set(delivered()) == set(range(accepted)), timeout=60)
        total = len(delivered())
        print(f"{accepted} accepted, {total} delivered, {total - accepted} duplicates")
        assert total <= accepted + 100  # at most the one batch forwarded before the reopen
    finally:
        conn.release()
        server.close()
