"""LevelDB is not fork-safe: a child of a process whose LevelDB flushed must not hang.

LevelDB starts one background thread per process (first flush or compaction)
and remembers it in a process-global flag that ``fork()`` copies without the
thread.  The repro: a parent writes 15 MB to a store and forks; the child opens
a *new* store and writes 7,000 x 3 KB.  Before the fix the child waited for
ever at its first memtable switch (~4 MB); with the parent writing 1 MB it did
not.  Now the child is *tainted* (``celery_durable.spill.forksafe``): its
stores never switch memtables, and it does not adopt stores with data.

Each scenario runs in its own python subprocess (the fork happens there, not
in pytest), with a deadline: a hang is a failure, not a stuck suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.processes import python

pytestmark = pytest.mark.chaos

SCRIPT = r"""
import logging, os, sys, time
from pathlib import Path
from celery_durable.spill import SpillRecord, SpillStore, forksafe

logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
root, parent_mb, scenario = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

def records(n, size=3000):
    return [SpillRecord(body=os.urandom(size), exchange="", routing_key="q") for _ in range(n)]

if scenario == "adopt":  # a store a dead process left behind
    with SpillStore(root / "deadhost-1-00000000") as dead:
        dead.extend(records(10, 100))

# The parent: a producer that spilled parent_mb MB and drained some of it.
parent = SpillStore(root / "parent")
for _ in range(parent_mb * 1024 * 1024 // (3000 * 100)):
    parent.extend(records(100))
if parent_mb > 1:
    parent.ack(10)  # the drainer: deletes, compactions
print("parent tainting:", forksafe._started, flush=True)

pid = os.fork()
if pid == 0:
    try:
        print("child tainted:", forksafe.tainted(), forksafe.cause(), flush=True)
        if scenario == "spill":
            store = SpillStore(root / "child")
            for i in range(7000):
                store.append(records(1)[0])
            n = 0
            while len(store):
                items = store.peek(500)
                store.ack(items[-1][0])
                n += len(items)
            print("child drained", n, flush=True)
            assert store.destroy()
        elif scenario == "adopt":
            from celery_durable.transport.breaker import Breaker
            from celery_durable.transport.drainer import Drainer
            from celery_durable.transport.options import split_options
            from celery_durable.transport.router import PublishRouter

            options, _ = split_options({"spill_dir": str(root)})
            router = PublishRouter(options, root, Breaker("fork"), ())
            drainer = Drainer(router, None, ())
            drainer.adopt_orphans()
            print("child adopted", len(drainer._adopted), flush=True)
        print("child ok", flush=True)
    except BaseException as exc:
        print("child failed", repr(exc), flush=True)
        os._exit(1)
    os._exit(0)

deadline = time.monotonic() + float(os.environ.get("CHILD_DEADLINE", "60"))
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print("child exit", os.waitstatus_to_exitcode(status), flush=True)
        sys.exit(0)
    time.sleep(0.05)
os.kill(pid, 9)
print("child HUNG", flush=True)
sys.exit(3)
"""


def run(tmp_path: Path, parent_mb: int, scenario: str) -> str:
    script = tmp_path / "fork_script.py"
    script.write_text(SCRIPT)
    proc = python(script, str(tmp_path / "spill"), str(parent_mb), scenario,
                  log=tmp_path / f"{scenario}-{parent_mb}.log")  # fmt: skip
    rc = proc.wait(180)
    out = proc.output()
    assert rc == 0 and "child HUNG" not in out, out
    assert "child exit 0" in out and "child ok" in out, out
    return out


def test_child_of_a_flushed_parent_spills_21mb_and_drains_without_hanging(
    tmp_path: Path,
) -> None:
    out = run(tmp_path, 15, "spill")
    assert "child tainted: True" in out, out
    assert "child drained 7000" in out, out
    # One warning naming the cause (the parent's store, and its pid).
    assert out.count("was forked from a process whose LevelDB") == 1, out
    assert "spill stores get a" in out and "parent" in out, out


def test_child_of_a_parent_that_wrote_1mb_is_not_tainted(tmp_path: Path) -> None:
    out = run(tmp_path, 1, "spill")
    assert "child tainted: False" in out and "child drained 7000" in out, out
    assert "was forked from" not in out, out


def test_tainted_child_leaves_dead_stores_to_untainted_processes(tmp_path: Path) -> None:
    # The parent's store is open (locked) in the parent; a dead one waits beside it.
    out = run(tmp_path, 15, "adopt")
    assert "child tainted: True" in out and "child adopted 0" in out, out
    assert "stores of dead processes are not adopted" in out, out
    assert (tmp_path / "spill" / "deadhost-1-00000000").is_dir()
