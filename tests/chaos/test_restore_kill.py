"""SIGKILL the worker that is restoring, in the middle of a run."""

from __future__ import annotations

import uuid

import pytest

from celery_durable.restore.runner import CHUNK
from tests.integration.restore_support import RestoreHarness, flaky_dump

pytestmark = pytest.mark.chaos

TOTAL = 2000
RATE = 1000.0  # msgs/s: a run of TOTAL takes ~2 s, in chunks of RATE / 10


def test_sigkill_mid_batch_loses_nothing(h: RestoreHarness) -> None:
    h.conf.update(durable_restore_rate=RATE, durable_restore_batch=TOTAL)
    ids = [str(uuid.uuid4()) for _ in range(TOTAL)]
    store = h.store()
    for start in range(0, TOTAL, 500):
        store.write([flaky_dump(t, "work", n) for n, t in enumerate(ids[start : start + 500])])
    h.state.set("fixed", 1)
    h.worker("exec@%h", "work", "-c", "2")
    restorer = h.worker("restorer@%h", "durable-restore", "-c", "1")
    h.beat()

    def mid_run() -> bool:
        left = store.count()
        return 300 <= TOTAL - left <= TOTAL - 300

    h.wait(mid_run, 60, "the restore run to be under way")
    restorer.kill()  # SIGKILL the worker and its pool child
    left_at_kill = store.count()

    h.worker("restorer2@%h", "durable-restore", "-c", "1")
    h.wait(lambda: set(ids) <= set(h.runs()), 120, "every task to run")
    h.wait(lambda: store.count() == 0, 30, "the dump store to empty")
    store.close()
    runs = h.runs()
    assert set(runs) == set(ids)  # nothing lost
    duplicates = sum(n - 1 for n in runs.values())
    in_flight = min(CHUNK, int(RATE / 10))
    print(
        f"\nSIGKILL mid-run with {left_at_kill} of {TOTAL} dumps left: "
        f"{duplicates} duplicate(s) (at most one chunk of {in_flight} can be in flight)"
    )
    assert duplicates <= in_flight
