"""``durable_producer.py`` plus what the failover cost this process.

After the publishes it waits (at most 120 s) until its spill backlog reached
the broker, then prints ``spilled N`` (messages that went through the spill
store), ``drained N`` and ``drained-at T`` (wall clock, ``time.time()``).
"""

from __future__ import annotations

import sys
import time

import durable_producer
from durable_app import app

from celery_durable import metrics
from celery_durable.transport.spiller import spillers


def _total(counter: object) -> int:
    return int(
        sum(
            sample.value
            for family in counter.collect()  # type: ignore[attr-defined]
            for sample in family.samples
            if sample.name.endswith("_total")
        )
    )


def main() -> None:
    durable_producer.main()
    app.connection_for_write().release()  # the Spillers exist by now
    deadline = time.monotonic() + 120
    while any(s.backlog() for s in spillers()) and time.monotonic() < deadline:
        time.sleep(0.01)
    left = sum(s.backlog() for s in spillers())
    out = sys.stdout
    out.write(f"spilled {_total(metrics.SPILLED)}\ndrained {_total(metrics.DRAINED)}\n")
    out.write(f"backlog-left {left}\ndrained-at {time.time():.3f}\n")
    out.flush()


if __name__ == "__main__":
    main()
