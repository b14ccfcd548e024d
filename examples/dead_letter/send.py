"""Send ``charge`` for orders 1..COUNT (``python send.py [COUNT]``, default 3)."""

from __future__ import annotations

import sys

from app import charge


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for order_id in range(1, count + 1):
        result = charge.delay(order_id)
        print(f"sent order {order_id} as task {result.id}", flush=True)


if __name__ == "__main__":
    main()
