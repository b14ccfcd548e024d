"""The dump queue: an in-process buffer between a failing task and the dump store.

Why buffer: a task failure must not wait on a disk fsync or a Redis round trip,
and one segment per flush (not per dump) keeps the ``file://`` store small.  The
dlqdump model: a batch is written when it holds ``capacity_bytes`` or
``flush_interval`` seconds after its first item, whichever comes first, and
whatever is left is written on worker shutdown and at interpreter exit.

Threads and processes: one daemon flusher thread per queue, started lazily by
the first :meth:`DumpQueue.put`.  A forked child (a prefork pool process) must
not inherit the parent's items (the parent writes those) nor its thread (it does
not exist in the child): :func:`celery_durable.dlq.capture` drops every queue in
the child after ``fork``, so each child builds its own.

Write failures are never raised into the worker.  The batch goes back to the
front of the buffer, the failure is logged with the task ids and counted in
``celery_durable_dump_write_errors``, and the write is retried with exponential
backoff (``flush_interval`` doubling up to 30 s).  Memory stays bounded: once the
buffer holds more than ``max_pending_bytes`` (default 16 x capacity, at least 16
MiB) the oldest dumps are dropped from memory, each written to the log at ERROR
level as one JSON line (``dlq: DROPPED DUMP {...}``) that ``celery durable dlq
import`` reads back.  The same happens to whatever a final flush at shutdown
could not write.  Nothing is dropped without a trace.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from kombu.utils.json import dumps as json_dumps

from .. import metrics
from . import retention
from .base import DumpEntry, DumpStore

__all__ = ["DumpQueue"]

logger = logging.getLogger(__name__)

MAX_BACKOFF = 30.0


class DumpQueue:
    """Buffer dumps and write them to a store in batches, from a background thread."""

    def __init__(
        self,
        store: DumpStore | Callable[[], DumpStore],
        *,
        capacity_bytes: int = 1 << 20,
        flush_interval: float = 1.0,
        max_pending_bytes: int | None = None,
    ) -> None:
        self._store_or_factory = store
        self._store: DumpStore | None = store if isinstance(store, DumpStore) else None
        self.capacity_bytes = capacity_bytes
        self.flush_interval = flush_interval
        self.max_pending_bytes = max_pending_bytes or max(16 * capacity_bytes, 16 << 20)
        self._cond = threading.Condition(threading.Lock())
        self._write_lock = threading.Lock()  # one batch in flight at a time
        self._items: list[tuple[DumpEntry, bytes]] = []
        self._bytes = 0
        self._first_at: float | None = None
        self._retry_at = 0.0
        self._failures = 0
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def store(self) -> DumpStore:
        if self._store is None:
            factory = self._store_or_factory
            assert callable(factory)
            self._store = factory()
        return self._store

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def put(self, entry: DumpEntry) -> None:
        """Buffer one dump; never blocks on I/O (encoding happens here, writing later)."""
        payload = self.store.encode(entry)
        with self._cond:
            self._items.append((entry, payload))
            self._bytes += len(payload)
            first = self._first_at is None
            if first:
                self._first_at = time.monotonic()
            if self._thread is None or not self._thread.is_alive():
                self._start_thread()
            if first or self._bytes >= self.capacity_bytes:
                self._cond.notify()
            self._enforce_bound()

    def _start_thread(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, name="celery-durable-dlq-flush", daemon=True
        )
        self._thread.start()

    def _due_in(self, now: float) -> float | None:
        """Seconds until the next flush is due (<= 0: now); None when empty."""
        if not self._items or self._first_at is None:
            return None
        due = self._first_at + self.flush_interval
        if self._bytes >= self.capacity_bytes:
            due = now
        return max(due, self._retry_at) - now

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    wait = self._due_in(time.monotonic())
                    if wait is not None and wait <= 0:
                        break
                    self._cond.wait(wait)
            try:
                self.flush()
            except Exception:  # never let the flusher die
                logger.exception("dlq: unexpected error in the dump flusher")

    def flush(self, timeout: float | None = None) -> bool:
        """Write everything buffered now; True when the buffer is empty afterwards.

        Never raises: a failed write is logged, counted and retried later.
        """
        if not self._write_lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        try:
            with self._cond:
                batch, self._items = self._items, []
                self._bytes = 0
                self._first_at = None
            if not batch:
                return True
            started = time.perf_counter()
            try:
                self.store.write_encoded(batch)
            except Exception as exc:
                self._failed(batch, exc)
                return False
            metrics.DUMP_FLUSH_DURATION.observe(time.perf_counter() - started)
            metrics.DUMP_FLUSHES.inc()
            metrics.DUMP_BYTES.inc(sum(len(p) for _, p in batch))
            for name, n in Counter(e.task_name for e, _ in batch).items():
                metrics.DUMPED.labels(task=name).inc(n)
            retention.after_flush(self.store)
            with self._cond:
                self._failures = 0
                self._retry_at = 0.0
                return not self._items
        finally:
            self._write_lock.release()

    def _failed(self, batch: list[tuple[DumpEntry, bytes]], exc: Exception) -> None:
        metrics.DUMP_WRITE_ERRORS.inc()
        with self._cond:
            self._failures += 1
            delay = min(self.flush_interval * 2**self._failures, MAX_BACKOFF)
            self._retry_at = time.monotonic() + max(delay, 0.05)
            self._items[:0] = batch
            self._bytes += sum(len(p) for _, p in batch)
            if self._first_at is None:
                self._first_at = time.monotonic()
            ids = [e.task_id for e, _ in batch]
            self._enforce_bound()
        logger.error(
            "dlq: cannot write %d dumps to %s (%s); retrying in %.1fs; task ids: %s",
            len(ids),
            getattr(self.store, "url", self.store),
            exc,
            delay,
            ", ".join(ids),
        )

    def _enforce_bound(self) -> None:
        """Called with the lock held: drop the oldest dumps beyond the memory bound."""
        dropped: list[DumpEntry] = []
        while self._bytes > self.max_pending_bytes and len(self._items) > 1:
            entry, payload = self._items.pop(0)
            self._bytes -= len(payload)
            dropped.append(entry)
        for entry in dropped:
            log_dropped(entry, "the dump buffer is over its memory bound")

    def close(self, timeout: float = 10.0) -> bool:
        """Final flush (worker shutdown, exit); log what could not be written."""
        ok = self.flush(timeout=timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            if not ok:
                leftover, self._items = self._items, []
                self._bytes = 0
                self._first_at = None
            else:
                leftover = []
        for entry, _ in leftover:
            log_dropped(entry, "the final flush failed")
        return ok


def log_dropped(entry: DumpEntry, why: str) -> None:
    """The last resort: the whole dump as one JSON line in the log (``dlq import`` reads it)."""
    logger.error("dlq: DROPPED DUMP (%s) %s", why, json_dumps(entry.to_dict()))
