"""Bring the pretend object storage back: set the key ``resize`` checks."""

from __future__ import annotations

import redis
from app import FLAG, REDIS_URL


def main() -> None:
    redis.Redis.from_url(REDIS_URL).set(FLAG, "1")
    print("object storage is up", flush=True)


if __name__ == "__main__":
    main()
