"""Send ``resize`` for images 1..COUNT to queue ``eu`` and COUNT+1..2*COUNT to ``us``."""

from __future__ import annotations

import sys

from app import resize


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for image_id in range(1, 2 * count + 1):
        queue = "eu" if image_id <= count else "us"
        result = resize.apply_async((image_id,), queue=queue)
        print(f"sent image {image_id} to {queue} as task {result.id}", flush=True)


if __name__ == "__main__":
    main()
