"""The spill store on real files under real damage: SIGKILL, flipped bytes, truncated
logs, a second process, adoption of a dead owner's store, disk space after a drain.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from celery_durable import metrics
from celery_durable.spill import (
    SpillRecord,
    SpillStore,
    StoreLocked,
    encode,
    find_orphans,
    list_stores,
)
from tests.helpers.processes import Proc, python
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.chaos

WRITER = """
import sys
from celery_durable.spill import SpillRecord, SpillStore
store = SpillStore(sys.argv[1], sync=sys.argv[2])
limit = int(sys.argv[3])
i = 0
while limit == 0 or i < limit:
    i += 1
    seq = store.append(SpillRecord(body=b"%d|" % i + b"x" * 100, exchange="", routing_key="q"))
    print(seq, flush=True)
print("done", flush=True)
import threading
threading.Event().wait()
"""

HOLDER = """
import sys, threading
from celery_durable.spill import SpillRecord, SpillStore, new_store_path
store = SpillStore(new_store_path(sys.argv[1]))
n = int(sys.argv[2])
store.extend([SpillRecord(body=b"%d" % i, exchange="", routing_key="q") for i in range(n)])
print("ready", store.path, flush=True)
threading.Event().wait()
"""

LOCKER = """
import sys
from celery_durable.spill import SpillStore, StoreLocked
try:
    SpillStore(sys.argv[1]).close()
except StoreLocked as exc:
    print("locked:", exc, flush=True)
else:
    print("opened", flush=True)
"""


def script(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return path


def output(proc: Proc) -> str:
    # Proc.output() refuses once the process was waited for: read the log file.
    return proc.log.read_text(errors="replace")


def lines(proc: Proc) -> list[str]:
    return output(proc).split("\n")[:-1]  # the last piece may be a torn line


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def drain_all(store: SpillStore) -> list[tuple[int, SpillRecord]]:
    out: list[tuple[int, SpillRecord]] = []
    while items := store.peek(1000):
        out.extend(items)
        store.ack(items[-1][0])
    return out


@pytest.mark.parametrize("sync", ["none", "interval"])
def test_sigkill_mid_stream_keeps_every_returned_append(tmp_path: Path, sync: str) -> None:
    path = tmp_path / "store"
    proc = python(script(tmp_path, "writer", WRITER), str(path), sync, "0", log=tmp_path / "w.log")
    try:
        wait_for(lambda: len(lines(proc)) >= 3000, timeout=60, message=lambda: output(proc))
    finally:
        proc.kill()
    printed = [int(x) for x in lines(proc) if x.strip().isdigit()]
    assert printed == list(range(1, len(printed) + 1))
    with SpillStore(path) as store:
        stored = store.peek(10**6)
        assert len(store) == len(stored)
        assert store.backlog_bytes == sum(len(encode(r)) for _s, r in stored)
        assert [s for s, _r in stored] == list(range(1, len(stored) + 1))
        assert len(stored) >= len(printed)
        for seq, record in stored:
            assert record.body.split(b"|")[0] == str(seq).encode()
        assert store.append(SpillRecord(body=b"next", exchange="", routing_key="q")) == (
            len(stored) + 1
        )


def test_flipped_byte_in_a_table_file_is_quarantined_and_the_rest_readable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store"
    rng = random.Random(7)
    bodies = [rng.randbytes(300) for _ in range(50)]
    with SpillStore(path) as store:
        store.extend(
            [
                SpillRecord(body=b, exchange="", routing_key="q", headers={"i": i})
                for i, b in enumerate(bodies)
            ]
        )
        store.compact()  # into .ldb table files
    victim = bodies[20]
    hits = []
    for table in path.glob("*.ldb"):
        data = table.read_bytes()
        at = data.find(victim[100:164])
        if at >= 0:
            hits.append((table, at))
    assert len(hits) == 1, hits
    table, at = hits[0]
    with open(table, "r+b") as fh:
        fh.seek(at + 10)
        byte = fh.read(1)
        fh.seek(at + 10)
        fh.write(bytes([byte[0] ^ 0x10]))
    counter = metrics.CORRUPT_RECORDS.labels(store="spill")
    before = counter._value.get()
    with SpillStore(path) as store:
        items = store.peek(100)
        assert [r.headers["i"] for _s, r in items] == [i for i in range(50) if i != 20]
        assert [r.body for _s, r in items] == bodies[:20] + bodies[21:]
        assert store.quarantined == 1 and len(store) == 49
        assert counter._value.get() == before + 1


def test_truncated_log_opens_and_the_intact_prefix_is_readable(tmp_path: Path) -> None:
    path = tmp_path / "store"
    proc = python(
        script(tmp_path, "writer", WRITER), str(path), "none", "3000", log=tmp_path / "w.log"
    )
    try:
        wait_for(lambda: "done" in output(proc), timeout=60, message=lambda: output(proc))
    finally:
        proc.kill()  # never closed: the records live only in the LevelDB log
    logs = list(path.glob("*.log"))
    assert len(logs) == 1
    size = logs[0].stat().st_size
    assert size > 300_000
    with open(logs[0], "r+b") as fh:
        fh.truncate(int(size * 0.6) + 7)  # mid-record
    with SpillStore(path) as store:
        stored = store.peek(10**6)
        assert 0 < len(stored) < 3000
        assert [s for s, _r in stored] == list(range(1, len(stored) + 1))
        for seq, record in stored:
            assert record.body.split(b"|")[0] == str(seq).encode()
        assert len(store) == len(stored)
        assert store.backlog_bytes == sum(len(encode(r)) for _s, r in stored)


def test_second_process_gets_store_locked(tmp_path: Path) -> None:
    path = tmp_path / "store"
    locker = script(tmp_path, "locker", LOCKER)
    with SpillStore(path):
        proc = python(locker, str(path), log=tmp_path / "l1.log")
        assert proc.wait(60) == 0
        assert "locked:" in output(proc) and str(path) in output(proc)
    proc = python(locker, str(path), log=tmp_path / "l2.log")
    assert proc.wait(60) == 0
    assert "opened" in output(proc)


def test_live_owner_keeps_its_store_and_a_dead_owners_store_is_adopted(
    tmp_path: Path,
) -> None:
    spill_dir = tmp_path / "spill"
    proc = python(script(tmp_path, "holder", HOLDER), str(spill_dir), "25", log=tmp_path / "h.log")
    try:
        ready = wait_for(
            lambda: [x for x in lines(proc) if x.startswith("ready ")],
            timeout=60,
            message=lambda: output(proc),
        )
        owned = Path(ready[0].split(" ", 1)[1])
        with SpillStore(tmp_path / "spill" / "mine"):
            assert find_orphans(spill_dir) == []
            infos = {i.path: i for i in list_stores(spill_dir)}
            assert infos[owned].alive and infos[owned].pid == proc.pid
            assert infos[owned].records is None
            with pytest.raises(StoreLocked, match="live process"):
                SpillStore(owned)
            assert proc.alive()  # probing did not disturb the owner
    finally:
        proc.kill()
    orphans = wait_for(lambda: find_orphans(spill_dir), timeout=30)
    assert set(orphans) == {owned, spill_dir / "mine"}
    infos = {i.path: i for i in list_stores(spill_dir)}
    assert not infos[owned].alive and infos[owned].records == 25
    with SpillStore(owned) as adopted:
        assert owned not in find_orphans(spill_dir)
        assert [r.body for _s, r in drain_all(adopted)] == [b"%d" % i for i in range(25)]
        adopted.destroy()
    assert not owned.exists()


def test_compaction_gives_disk_space_back_after_a_drain(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with SpillStore(path) as store:
        for _ in range(20):
            blob = os.urandom(1000 * 1000)  # incompressible: the size is predictable
            store.extend(
                [
                    SpillRecord(body=blob[i : i + 1000], exchange="", routing_key="q")
                    for i in range(0, len(blob), 1000)
                ]
            )
        peak = dir_size(path)
        assert peak > 15_000_000
        assert len(drain_all(store)) == 20_000
        store.compact()
        after = dir_size(path)
        assert after < peak // 20, (peak, after)
        assert store.append(SpillRecord(body=b"more", exchange="", routing_key="q")) == 20_001
        assert [r.body for _s, r in store.peek(10)] == [b"more"]
