"""One restore run per store at a time.

Two concurrent runs over the same dumps would publish each entry twice.  Beat
ticks can overlap when a rate-limited run outlasts the interval, and an operator
may run ``dlq restore`` meanwhile, so every run takes a lock named after its store:

* ``file://path``: ``flock`` on ``path.restore.lock`` beside the dump directory
  (released by the kernel when the holder dies, even on SIGKILL);
* ``redis://`` (``redis+sentinel://`` too): a redis-py ``Lock`` with a short TTL
  that the run refreshes after
  every published chunk; a SIGKILLed holder blocks others for at most
  :data:`REDIS_LOCK_TTL` seconds.  The key lives under the store's ``?prefix=``
  (``<prefix>:restore-lock``), so fleets sharing one redis with different
  prefixes restore independently; the default prefix keeps the historical key
  :data:`REDIS_LOCK_KEY`, so old and new processes of one fleet still exclude
  each other during an upgrade;
* anything else (in-memory stores in tests): an in-process lock.

Every failure to take, keep or check a lock is a
:class:`~celery_durable.exceptions.RestoreError` saying why.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..exceptions import ConfigError, RestoreError
from ..files import private_dir
from ..sentinel_url import display_url, redis_client

__all__ = ["REDIS_LOCK_TTL", "RunLock", "redis_lock_target", "run_lock"]

REDIS_LOCK_TTL = 5.0
REDIS_LOCK_KEY = "celery-durable:restore-lock"
#: The redis dump store's key prefix when its URL has no ``?prefix=``.
DEFAULT_STORE_PREFIX = "celery_durable:dlq"


class RunLock(Protocol):
    def acquire(self) -> bool: ...
    def refresh(self) -> None: ...
    def release(self) -> None: ...


class _FileLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        try:
            # Owner-only like the dumps beside it; an older lock file is tightened too.
            private_dir(self.path.parent, setting="durable_dlq_url", error=RestoreError)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            with contextlib.suppress(OSError):  # not ours: the lock still works
                os.fchmod(fd, 0o600)
        except (OSError, ConfigError, RestoreError) as exc:
            raise RestoreError(f"cannot open the restore lock {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as exc:
            os.close(fd)
            raise RestoreError(f"cannot lock {self.path}: {exc}") from exc
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


def redis_lock_target(url: str) -> tuple[str, str]:
    """``(redis URL without our query keys, lock key)`` for a ``redis://`` dump store URL."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), DEFAULT_STORE_PREFIX)
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    key = REDIS_LOCK_KEY if prefix == DEFAULT_STORE_PREFIX else f"{prefix}:restore-lock"
    return urlunsplit(parts._replace(query=rest)), key


class _RedisLock:
    def __init__(self, url: str) -> None:
        import redis

        client_url, self.key = redis_lock_target(url)
        self._where = f"{self.key} on {display_url(client_url)}"
        # TypeError/ValueError: a URL argument redis-py does not take, raised when
        # it first connects.  LockError (expired, taken over) is a RedisError.
        self._errors = (redis.RedisError, OSError, TypeError, ValueError)
        try:
            self._client = redis_client(client_url, socket_timeout=5, socket_connect_timeout=5)
        except (*self._errors, ConfigError) as exc:
            raise RestoreError(f"restore lock: bad redis URL for {self._where}: {exc}") from exc
        self._lock: Any = self._client.lock(self.key, timeout=REDIS_LOCK_TTL)

    def acquire(self) -> bool:
        try:
            return bool(self._lock.acquire(blocking=False))
        except self._errors as exc:
            raise RestoreError(f"cannot take the restore lock {self._where}: {exc}") from exc

    def refresh(self) -> None:
        try:
            self._lock.reacquire()
        except self._errors as exc:
            raise RestoreError(f"lost the restore lock {self._where}: {exc}") from exc

    def release(self) -> None:
        with contextlib.suppress(Exception):  # expired or unreachable: nothing left to free
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
    if parts.scheme in ("redis", "rediss", "unix", "redis+sentinel"):
        return _RedisLock(url)
    return _LocalLock(url)
