"""A process that writes dumps through a real DumpQueue: ``dlq_writer.py URL N PREFIX [PAD]``.

``N`` dumps named ``PREFIX-<i>`` (forever when N is 0), each padded with ``PAD``
bytes of traceback so a flush takes a while; used by the concurrency and SIGKILL
tests.
"""

from __future__ import annotations

import itertools
import sys
import time

from celery_durable.dlq import DumpEntry, open_store
from celery_durable.dlq.dumpqueue import DumpQueue


def entry(task_id: str, pad: int) -> DumpEntry:
    return DumpEntry(
        task_id=task_id,
        task_name="writer.task",
        args=[task_id],
        kwargs={},
        headers={"id": task_id, "task": "writer.task"},
        properties={},
        delivery_info={"exchange": "", "routing_key": "dlq", "queue": "dlq"},
        embed={},
        exc_type="RuntimeError",
        exc_message="boom",
        traceback="x" * pad,
        hostname="writer@test",
        failed_at=time.time(),
    )


def main() -> None:
    url, count, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    pad = int(sys.argv[4]) if len(sys.argv) > 4 else 100
    queue = DumpQueue(open_store(url), capacity_bytes=64 * 1024, flush_interval=0.05)
    numbers = itertools.count() if count == 0 else range(count)
    for i in numbers:
        queue.put(entry(f"{prefix}-{i}", pad))
    assert queue.close(timeout=60)
    print("done", flush=True)


if __name__ == "__main__":
    main()
