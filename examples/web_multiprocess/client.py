"""Send COUNT requests (``python client.py PORT COUNT``), a few at a time, and print the answers."""

from __future__ import annotations

import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def get(port: int, order_id: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/order/{order_id}", timeout=30) as r:
        return str(r.read().decode().strip())


def main() -> None:
    port, count = int(sys.argv[1]), int(sys.argv[2])
    first = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    with ThreadPoolExecutor(max_workers=4) as pool:
        for answer in pool.map(lambda n: get(port, n), range(first, first + count)):
            print(answer, flush=True)


if __name__ == "__main__":
    main()
