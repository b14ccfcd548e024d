"""Damaged spill stores as an operator meets them (issue 10.3): real LevelDB files
damaged on disk, the real ``celery durable spill ls|drain|check`` commands, a real
redis-server, every message counted.

Before the fix: a truncated table showed "0 records" in ``ls``, ``check --repair``
said "ok: 0 records" (it had 1,000), ``drain`` deleted the store with LevelDB's
``lost/`` files, and a store without ``CURRENT`` was invisible to all of them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_durable.transport.spiller import broker_dir_name
from tests.helpers.processes import celery, python
from tests.helpers.redis_server import RedisServer

pytestmark = pytest.mark.chaos

N = 1000
BATCH = 100

WRITER = f"""
import sys
from celery_durable.spill import SpillRecord, SpillStore
path, compact = sys.argv[1], sys.argv[2] == "compact"
with SpillStore(path) as store:
    for b in range({N // BATCH}):
        store.extend([
            SpillRecord(body=str(b * {BATCH} + i).encode() + b"|" + b"payload" * 40,
                        exchange="", routing_key="damaged")
            for i in range({BATCH})
        ])
    if compact:
        store.compact()  # the records now live in an .ldb table
"""

APP = """
import json, os
from celery import Celery
import celery_durable  # noqa: F401
app = Celery("damage_app", broker=os.environ["DURABLE_BROKER_URL"])
app.conf.broker_transport_options = json.loads(os.environ.get("DURABLE_TRANSPORT_OPTIONS", "{}"))
"""


class Env:
    def __init__(self, tmp_path: Path, durable_dir: Path, broker: RedisServer) -> None:
        self.tmp_path = tmp_path
        self.broker = broker
        self.url = f"durable+redis://127.0.0.1:{broker.port}/0"
        self.store_dir = durable_dir / "spill" / broker_dir_name(broker.url)
        self.store = self.store_dir / "deadhost-4242-0badf00d"
        (tmp_path / "damage_app.py").write_text(APP)
        self.runs = 0

    def write(self, compact: bool) -> None:
        script = self.tmp_path / "writer.py"
        script.write_text(WRITER)
        proc = python(
            script, str(self.store), "compact" if compact else "log", log=self.tmp_path / "w.log"
        )
        assert proc.wait(60) == 0, proc.output()

    def cli(self, *args: str) -> tuple[int, str]:
        self.runs += 1
        proc = celery(
            "-A", "damage_app", "durable", *args,
            log=self.tmp_path / f"cli-{self.runs}.log",
            env={
                "DURABLE_BROKER_URL": self.url,
                "PYTHONPATH": os.pathsep.join(
                    [str(self.tmp_path), os.environ.get("PYTHONPATH", "")]
                ),
            },
            cwd=self.tmp_path,
        )  # fmt: skip
        return proc.wait(120), proc.output()

    @property
    def quarantined(self) -> Path:
        return self.store_dir / "quarantine" / self.store.name


@pytest.fixture
def env(tmp_path: Path, durable_dir: Path, redis_server: RedisServer) -> Iterator[Env]:
    yield Env(tmp_path, durable_dir, redis_server)


def flip_log_bytes(store: Path) -> None:
    """Flip one byte in the middle of the log: LevelDB drops the batch holding it."""
    (log,) = store.glob("*.log")
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0xFF
    log.write_bytes(bytes(data))


def truncate_table(store: Path) -> None:
    (table,) = store.glob("*.ldb")
    with open(table, "r+b") as fh:
        fh.truncate(table.stat().st_size // 2)


def body_numbers(env: Env) -> list[int]:
    # The forwarder publishes the spilled body as is: b"<n>|payload..."
    return sorted(int(raw.split(b"|")[0]) for raw in _bodies(env))


def _bodies(env: Env) -> list[bytes]:
    import base64

    out = []
    for raw in env.broker.client().lrange("damaged", 0, -1):
        msg = json.loads(raw)
        body = msg["body"]
        encoded = msg["properties"].get("body_encoding") == "base64"
        out.append(base64.b64decode(body) if encoded else body.encode())
    return out


def test_truncated_table_is_reported_lost_and_quarantined_never_deleted(env: Env) -> None:
    env.write(compact=True)
    truncate_table(env.store)

    rc, out = env.cli("spill", "ls")
    assert rc == 0, out
    assert f"DAMAGED {env.store}" in out and f"{N} records counted but unreadable" in out, out

    rc, out = env.cli("spill", "drain", "--timeout", "20")
    assert rc != 0, out
    assert "drained 0 spilled message(s); 1000 counted but unreadable (lost)" in out, out
    assert "unreadable data kept aside" in out, out
    assert not env.store.exists()
    assert env.quarantined.is_dir(), out  # moved aside, with the damaged table
    assert list(env.quarantined.glob("*.ldb")) and (env.quarantined / "QUARANTINED").exists()
    assert f"{N} spilled records lost" in (env.quarantined / "QUARANTINED").read_text()

    rc, out = env.cli("spill", "check", "--repair", str(env.quarantined))
    assert rc != 0, out
    assert f"{N} records lost earlier" in out, out
    assert (env.quarantined / "lost").is_dir()  # repair's set-aside table is kept

    rc, out = env.cli("spill", "ls")
    assert rc == 0 and f"DAMAGED {env.quarantined}" in out and "quarantined (" in out, out
    rc, out = env.cli("status")
    assert rc == 0 and "QUARANTINED (unreadable data, never deleted)" in out, out
    assert f"{N} lost" in out, out
    assert body_numbers(env) == []


def test_check_repair_of_a_truncated_table_says_how_many_records_are_gone(env: Env) -> None:
    env.write(compact=True)
    truncate_table(env.store)
    rc, out = env.cli("spill", "check", "--repair", str(env.store))
    assert rc != 0, out
    assert f"{N} records LOST (the repair recovered 0 of {N})" in out, out
    assert "ok:" not in out
    rc, out = env.cli("spill", "drain", "--timeout", "20")
    assert rc != 0 and env.quarantined.is_dir() and not env.store.exists(), out
    assert list((env.quarantined / "lost").glob("*.ldb")), "lost/ must survive"


@pytest.mark.parametrize("damage", ["no CURRENT", "truncated MANIFEST"])
def test_store_without_current_is_listed_quarantined_and_repair_recovers_it(
    env: Env, damage: str
) -> None:
    env.write(compact=True)
    if damage == "no CURRENT":
        (env.store / "CURRENT").unlink()
        reason = "CURRENT file is missing"
    else:
        (manifest,) = env.store.glob("MANIFEST-*")
        os.truncate(manifest, 10)
        reason = "is damaged: Corruption"

    rc, out = env.cli("spill", "ls")
    assert rc == 0 and env.store.name in out, out
    assert reason in out, out

    rc, out = env.cli("spill", "drain", "--timeout", "20")
    assert rc != 0 and "unreadable data kept aside" in out, out
    assert env.quarantined.is_dir() and not env.store.exists()

    # The runbook's way back: repair it, move it back, drain it.
    rc, out = env.cli("spill", "check", "--repair", str(env.quarantined))
    assert rc == 0, out
    assert f": ok: {N} records" in out, out
    shutil.move(str(env.quarantined), str(env.store))
    rc, out = env.cli("spill", "drain", "--timeout", "60")
    assert rc == 0 and f"drained {N} spilled message(s)" in out, out
    assert body_numbers(env) == list(range(N))
    assert not env.store.exists()  # intact once repaired: deleted after the drain


def test_flipped_log_byte_loses_one_batch_counted_and_the_rest_drains(env: Env) -> None:
    env.write(compact=False)
    flip_log_bytes(env.store)

    rc, out = env.cli("spill", "drain", "--timeout", "60")
    assert rc != 0 and "unreadable data kept aside" in out, out
    assert f"drained {N - BATCH} spilled message(s); {BATCH} counted but unreadable" in out, out
    got = body_numbers(env)
    lost = N - len(got)
    assert lost == BATCH, (lost, out)  # one write batch, the one holding the byte
    assert len(set(got)) == len(got) and set(got) <= set(range(N))
    note = (env.quarantined / "QUARANTINED").read_text()
    assert f"{BATCH} spilled records lost" in note, note
    assert "DAMAGED" in [p.name for p in env.quarantined.iterdir()]
    rc, out = env.cli("spill", "ls")
    assert rc == 0 and f"DAMAGED {env.quarantined}" in out, out


def test_unreadable_first_table_quarantines_and_repair_salvages_the_second(env: Env) -> None:
    """The damaged table is in the middle of the backlog: reads fail (not end) there."""
    from celery_durable.spill import SpillRecord, SpillStore

    def records(lo: int, hi: int) -> list[SpillRecord]:
        return [
            SpillRecord(body=b"%d|" % i + os.urandom(300), exchange="", routing_key="damaged")
            for i in range(lo, hi)
        ]

    with SpillStore(env.store) as store:
        store.extend(records(0, N // 2))
        store.compact()  # table A: the first half
        store.extend(records(N // 2, N))
        store.compact()  # table B: the second half (A is already at the bottom level)
    tables = sorted(env.store.glob("*.ldb"), key=lambda p: int(p.stem))
    assert len(tables) == 2, tables
    with open(tables[0], "r+b") as fh:
        fh.truncate(tables[0].stat().st_size // 2)

    rc, out = env.cli("spill", "ls")
    assert rc == 0 and f"DAMAGED {env.store}" in out and "read failed" in out, out
    rc, out = env.cli("spill", "drain", "--timeout", "20")
    assert rc != 0 and env.quarantined.is_dir() and not env.store.exists(), out
    assert body_numbers(env) == []

    rc, out = env.cli("spill", "check", "--repair", str(env.quarantined))
    assert rc != 0, out
    assert f"{N // 2} records LOST (the repair recovered {N // 2} of {N})" in out, out
    shutil.move(str(env.quarantined), str(env.store))
    rc, out = env.cli("spill", "drain", "--timeout", "60")
    assert rc != 0 and f"drained {N // 2} spilled message(s)" in out, out
    assert body_numbers(env) == list(range(N // 2, N))
    assert env.quarantined.is_dir() and list((env.quarantined / "lost").glob("*.ldb"))
