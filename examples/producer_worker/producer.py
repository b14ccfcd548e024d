"""Publish orders steadily, so you can stop redis in the middle and watch nothing get lost.

    python producer.py [COUNT] [INTERVAL] [FIRST]

Sends ``process_order(i)`` for i in FIRST..FIRST+COUNT-1 (default 100 orders
from 0), one every INTERVAL seconds (default 0.1), printing ``sent i`` after
each publish returned and, at the end, the slowest publish.  While redis is
down the publishes still return at once: the messages wait in the spill store
and reach the worker, in order, after redis is back.
"""

from __future__ import annotations

import sys
import time

from app import process_order


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    interval = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
    first = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    slowest = 0.0
    for order_id in range(first, first + count):
        started = time.monotonic()
        process_order.delay(order_id)
        slowest = max(slowest, time.monotonic() - started)
        print(f"sent {order_id}", flush=True)
        time.sleep(interval)
    print(f"done: {count} orders published, slowest publish {slowest:.3f} s", flush=True)


if __name__ == "__main__":
    main()
