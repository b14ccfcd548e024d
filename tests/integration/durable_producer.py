"""A producer process: ``python durable_producer.py NAME COUNT``.

Sends ``record(NAME, seq)`` for seq in 0..COUNT-1 and prints ``sent SEQ`` after
each ``apply_async`` returned (flushed, so a SIGKILLed producer's output tells
exactly which publishes had been accepted), the slowest call as ``max-latency``,
``full SEQ`` for a publish refused with SpillFull, and ``done`` at the end.
"""

from __future__ import annotations

import sys
import time

from durable_app import record

from celery_durable.exceptions import SpillFull


def main() -> None:
    name, count = sys.argv[1], int(sys.argv[2])
    stop_on_full = "--stop-on-full" in sys.argv
    worst = 0.0
    out = sys.stdout
    for seq in range(count):
        started = time.monotonic()
        try:
            record.apply_async((name, seq))
        except SpillFull:
            out.write(f"full {seq}\n")
            out.flush()
            if stop_on_full:
                break
            continue
        worst = max(worst, time.monotonic() - started)
        out.write(f"sent {seq}\n")
        out.flush()
    out.write(f"max-latency {worst:.3f}\ndone\n")
    out.flush()


if __name__ == "__main__":
    main()
