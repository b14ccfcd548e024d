"""One restore run per store at a time.

Two concurrent runs over the same dumps would publish each entry twice.  Beat
ticks can overlap when a rate-limited run outlasts the interval, and an operator
may run ``dlq restore`` meanwhile, so every run takes a lock named after its store:

* ``file://path``: ``flock`` on ``path.restore.lock`` beside the dump directory
  (released by the kernel when the holder dies, even on SIGKILL);
* ``redis://``: a redis-py ``Lock`` with a short TTL that the run refreshes after
  every published chunk; a SIGKILLed holder blocks others for at most
  :data:`REDIS_LOCK_TTL` seconds;
* anything else (in-memory stores in tests): an in-process lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

__all__ = ["REDIS_LOCK_TTL", "RunLock", "run_lock"]

REDIS_LOCK_TTL = 5.0
REDIS_LOCK_KEY = "celery-durable:restore-lock"


class RunLock(Protocol):
    def acquire(self) -> bool: ...
    def refresh(self) -> None: ...
    def release(self) -> None: ...


class _FileLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def refresh(self) -> None:
        pass

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class _RedisLock:
    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._lock: Any = self._client.lock(REDIS_LOCK_KEY, timeout=REDIS_LOCK_TTL)

    def acquire(self) -> bool:
        return bool(self._lock.acquire(blocking=False))

    def refresh(self) -> None:
        self._lock.reacquire()

    def release(self) -> None:
        with contextlib.suppress(Exception):
            self._lock.release()
        self._client.close()


_LOCAL: dict[str, threading.Lock] = {}


class _LocalLock:
    def __init__(self, key: str) -> None:
        self._lock = _LOCAL.setdefault(key, threading.Lock())
        self._held = False

    def acquire(self) -> bool:
        self._held = self._lock.acquire(blocking=False)
        return self._held

    def refresh(self) -> None:
        pass

    def release(self) -> None:
        if self._held:
            self._held = False
            self._lock.release()


def run_lock(url: str) -> RunLock:
    """The lock guarding restore runs over the store at ``url``."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        path = Path(parts.path).resolve()
        return _FileLock(path.with_name(path.name + ".restore.lock"))
    if parts.scheme in ("redis", "rediss", "unix"):
        return _RedisLock(url)
    return _LocalLock(url)
