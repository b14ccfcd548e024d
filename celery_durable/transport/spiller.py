"""Where each publish goes, per producer process and broker; and the drainer.

One :class:`Spiller` exists per (process, broker URL, spill_dir).  It decides,
for every message the durable channel is asked to publish, whether it goes to
the broker now, into the bounded memory buffer, or into the process's LevelDB
spill store; and it runs the drainer thread that forwards buffer and backlog
to the broker, oldest first.

Invariants (they are what "never lose, never reorder" rests on):

* ``_disk_mode`` is True while anything of this process sits on disk (always
  in ``wal`` mode).  While it is True every new message goes to disk behind the
  backlog; it is cleared, under ``_lock``, only when the store is empty.
* In ``buffered`` mode the buffer is older than anything on disk: when it must
  spill (buffer full, broker down) the *whole* buffer moves to disk first, in
  order, then the new message.  A batch the drainer is sending stays in the
  buffer until the broker has it; if it was moved to disk meanwhile the
  generation counter tells, and a successfully sent batch is then also on disk:
  at-least-once, the one place buffered mode can duplicate.
* A record leaves the store (``ack``) only after the broker has it.  A crash
  between the two replays it: duplicates, never loss.
* Stores of dead processes (their LevelDB lock is free) are adopted at start and
  drained before the process's own backlog.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import re
import threading
import time
from collections import deque
from typing import Any

from .. import metrics
from ..exceptions import SpillError, SpillFull
from ..files import private_dir
from ..spill import SpillRecord, SpillStore, StoreLocked, find_orphans, new_store_path
from .breaker import Breaker
from .forwarder import Forwarder
from .options import DurableOptions

__all__ = ["Spiller", "get_spiller", "shutdown_all"]

logger = logging.getLogger(__name__)

# Rough per-record overhead beyond the body, for the buffer's byte budget.
_RECORD_OVERHEAD = 512
# How often an idle drainer looks for stores left by processes that died (or
# exited with a backlog while the broker was down) since it started.
ORPHAN_SCAN_INTERVAL = 5.0
# Seconds a caught-up drainer waits for more messages before the next batch:
# bounds drain cycles to ~200/s, adds at most this much latency in wal/buffered.
DRAIN_LINGER = 0.005


def broker_dir_name(inner_url: str) -> str:
    """A readable, filesystem-safe directory name for one broker (no credentials)."""
    from kombu.utils.url import _parse_url

    parts = _parse_url(inner_url)
    readable = f"{parts.scheme}-{parts.hostname or 'localhost'}-{parts.port or 'default'}"
    readable += f"-{(parts.path or '0').strip('/') or '0'}"
    digest = hashlib.sha1(inner_url.encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", readable) + "-" + digest


class Spiller:
    """Routes publishes between broker, buffer and spill store; runs the drainer."""

    def __init__(
        self,
        inner_url: str,
        options: DurableOptions,
        forwarder: Forwarder,
        broker_errors: tuple[type[BaseException], ...],
    ) -> None:
        self.inner_url = inner_url
        self.options = options
        self.mode = options.publish_mode
        self.forwarder = forwarder
        self.broker_errors = broker_errors
        self.spill_dir = options.spill_dir / broker_dir_name(inner_url)
        self.breaker = Breaker(_safe_url(inner_url))
        self.pid = os.getpid()

        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._hurry = threading.Event()  # close() cuts a backoff short
        self._room = threading.Condition(self._lock)
        self._buffer: deque[SpillRecord] = deque()
        self._buffer_bytes = 0
        self._buffer_gen = 0
        self._store: SpillStore | None = None
        self._adopted: list[SpillStore] = []
        self._thread: threading.Thread | None = None
        self._next_orphan_scan = 0.0
        self.disk_mode = self.mode == "wal"

        # 0700 (payloads), ConfigError naming spill_dir / SpillError with the OS reason.
        private_dir(self.spill_dir, setting="spill_dir", error=SpillError, tighten=True)
        if self.mode == "wal":
            self._open_store()
        self._adopt_orphans()
        # The drainer runs in every process: it also adopts stores that other
        # processes leave behind later (a producer SIGKILLed during an outage).
        self._ensure_thread()

    # -- publishing ----------------------------------------------------------
    def accept(self, record: SpillRecord, reason: str) -> None:
        """Take responsibility for ``record`` (buffer or disk).  Raises SpillFull/SpillError."""
        if self.mode == "buffered":
            size = len(record.body) + _RECORD_OVERHEAD
            with self._lock:
                if not self.disk_mode:
                    if self._buffer_bytes + size <= self.options.buffer_max_bytes:
                        self._buffer.append(record)
                        self._buffer_bytes += size
                        metrics.BUFFERED_BYTES.set(self._buffer_bytes)
                        if not self._wake.is_set():
                            self._wake.set()
                        return
                    self._buffer_to_disk_locked("buffer full")
                    reason = "buffer full"
        self.spill(record, reason)

    def spill(self, record: SpillRecord, reason: str) -> None:
        """Append ``record`` to this process's store, behind any backlog."""
        blocked_since: float | None = None
        while True:
            try:
                with self._lock:
                    self.disk_mode = True
                    self._open_store().append(record)
                break
            except SpillFull:
                metrics.SPILL_FULL.inc()
                if self.options.spill_when_full != "block":
                    raise
                blocked_since = self._wait_for_room(blocked_since)
        _spilled(reason).inc()
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._ensure_thread()
        if not self._wake.is_set():
            self._wake.set()

    def _wait_for_room(self, started: float | None) -> float:
        now = time.monotonic()
        started = started or now
        if now - started > 10:
            logger.warning(
                "celery-durable: spill store full, publisher blocked %.0f s", now - started
            )
            started = now
        with self._room:
            self._room.wait(1.0)
        return started

    def trip(self, exc: BaseException) -> None:
        """The broker failed us: publish to disk until the drainer sees it again."""
        self.breaker.trip(exc)
        self.disk_mode = True
        self._ensure_thread()
        self._wake.set()

    # -- storage -------------------------------------------------------------
    def _open_store(self) -> SpillStore:
        if self._store is None:
            try:
                self._store = SpillStore(
                    new_store_path(self.spill_dir),
                    max_bytes=self.options.spill_max_bytes,
                    sync=self.options.spill_sync,
                    sync_interval=self.options.spill_sync_interval,
                )
            except StoreLocked as exc:  # pragma: no cover - the name is unique per process
                raise SpillError(str(exc)) from exc
        return self._store

    def _adopt_orphans(self) -> None:
        self._next_orphan_scan = time.monotonic() + ORPHAN_SCAN_INTERVAL
        for path in find_orphans(self.spill_dir):
            try:
                store = SpillStore(path, max_bytes=self.options.spill_max_bytes)
            except StoreLocked:
                continue  # another live process adopted it first
            except SpillError as exc:
                logger.error("celery-durable: cannot adopt spill store %s: %s", path, exc)
                continue
            if len(store):
                logger.warning(
                    "celery-durable: adopted %d spilled messages from dead process store %s",
                    len(store), path,
                )  # fmt: skip
                self._adopted.append(store)
            else:
                store.destroy()

    def _buffer_to_disk_locked(self, reason: str) -> None:
        """Move the whole buffer to disk, in order (caller holds ``_lock``)."""
        self.disk_mode = True
        if not self._buffer:
            return
        records = list(self._buffer)
        self._open_store().extend(records)  # SpillFull: buffer stays, caller sees it
        self._buffer.clear()
        self._buffer_bytes = 0
        self._buffer_gen += 1
        metrics.BUFFERED_BYTES.set(0)
        _spilled(reason).inc(len(records))

    # -- the drainer ---------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            if self._stopping.is_set():
                return
            self._thread = threading.Thread(
                target=self._run, name=f"celery-durable-drainer-{self.pid}", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                moved = self._step()
            except self.broker_errors as exc:
                self._on_broker_error(exc)
                continue
            except SpillError as exc:  # disk full or failing: not the broker's fault
                logger.error("celery-durable: spill store error, drainer retries: %s", exc)
                if self._hurry.wait(self.breaker.backoff()):
                    self._hurry.clear()
                continue
            except Exception as exc:  # the drainer must outlive any bug
                logger.exception("celery-durable: drainer error, retrying")
                self._on_broker_error(exc)
                continue
            self._update_gauges()
            if moved:
                self.breaker.reset()
                if self.options.drain_rate:
                    self._stopping.wait(moved / self.options.drain_rate)
                elif moved < self.options.drain_batch:
                    # Caught up: let a batch gather instead of forwarding each
                    # message alone (in wal/buffered mode a cycle per publish
                    # would take the GIL from the publishers it serves).
                    self._stopping.wait(DRAIN_LINGER)
            else:
                self._wake.wait(1.0)

    def _on_broker_error(self, exc: BaseException) -> None:
        self.breaker.trip(exc)
        self.forwarder.reset()
        if self.mode == "buffered":
            # Keep order: the buffer is older than anything published from now on.
            with self._lock:
                try:
                    self._buffer_to_disk_locked("broker down")
                except SpillError:
                    logger.exception("celery-durable: cannot spill the memory buffer")
        self._update_gauges()
        if self._hurry.wait(self.breaker.backoff()):
            self._hurry.clear()

    def _step(self) -> int:
        """Forward one batch from wherever the oldest messages are; return how many."""
        if self._buffer:
            return self._forward_buffer()
        while self._adopted:
            store = self._adopted[0]
            if len(store):
                return self._forward_store(store)
            self._adopted.pop(0)
            store.destroy()
        own = self._store
        if own is not None and len(own):
            moved = self._forward_store(own)
            if self._store is not None and not len(self._store):  # (reopened, maybe)
                self._leave_disk_mode()
            return moved
        if self.breaker.is_open:
            self.forwarder.ping()
            self.breaker.reset()
        if self.disk_mode:
            self._leave_disk_mode()
        if time.monotonic() >= self._next_orphan_scan:
            self._adopt_orphans()
            if self._adopted:
                self._wake.set()
        return 0

    def _forward_buffer(self) -> int:
        with self._lock:
            gen = self._buffer_gen
            size = min(len(self._buffer), self.options.drain_batch)
            batch = [self._buffer[i] for i in range(size)]
        self.forwarder.forward(batch)
        with self._lock:
            if gen == self._buffer_gen:
                for _ in batch:
                    record = self._buffer.popleft()
                    self._buffer_bytes -= len(record.body) + _RECORD_OVERHEAD
                metrics.BUFFERED_BYTES.set(self._buffer_bytes)
        metrics.DRAINED.inc(len(batch))
        return len(batch)

    def _forward_store(self, store: SpillStore) -> int:
        if store.closed:
            store = self._reopen(store)
        items = store.peek(self.options.drain_batch)
        if not items:
            return 0
        self.forwarder.forward([record for _, record in items])
        try:
            store.ack(items[-1][0])
        except SpillError:
            # After a disk error LevelDB refuses every write until it is
            # reopened; without a reopen this batch would be forwarded again and
            # again.  (It is forwarded once more after the reopen: at least once.)
            store.close()
            raise
        metrics.DRAINED.inc(len(items))
        with self._room:
            self._room.notify_all()
        return len(items)

    def _reopen(self, store: SpillStore) -> SpillStore:
        """Open a store closed after a disk error again (raises SpillError while it fails)."""
        if self._stopping.is_set():  # closed by close(), not by an error: leave it
            raise SpillError(f"spill store {store.path} is closed (shutting down)")
        with self._lock:
            fresh = SpillStore(
                store.path,
                max_bytes=self.options.spill_max_bytes,
                sync=self.options.spill_sync,
                sync_interval=self.options.spill_sync_interval,
            )
            if store is self._store:
                self._store = fresh
            else:
                self._adopted = [fresh if s is store else s for s in self._adopted]
        logger.warning("celery-durable: spill store %s reopened after an error", store.path)
        return fresh

    def _leave_disk_mode(self) -> None:
        if self.mode == "wal":
            return
        with self._lock:
            if self._store is None or not len(self._store):
                self.disk_mode = False

    def _update_gauges(self) -> None:
        stores = [*self._adopted, *([self._store] if self._store is not None else [])]
        metrics.BACKLOG_RECORDS.set(sum(len(s) for s in stores))
        metrics.BACKLOG_BYTES.set(sum(s.backlog_bytes for s in stores))
        oldest = [t for t in (s.oldest_created for s in stores) if t is not None]
        metrics.DRAIN_LAG.set(time.time() - min(oldest) if oldest else 0)

    # -- introspection and shutdown --------------------------------------------
    def backlog(self) -> int:
        """Records of this process not yet at the broker (buffer + own + adopted stores)."""
        stores = [*self._adopted, *([self._store] if self._store is not None else [])]
        return len(self._buffer) + sum(len(s) for s in stores)

    def close(self, timeout: float | None = None) -> None:
        """Flush the buffer to the broker (or to disk) within ``timeout``; stop the drainer."""
        timeout = self.options.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        # While the broker is reachable, give the drainer the time we have to
        # deliver the buffer and backlog; what is left stays on disk for adoption.
        self._hurry.set()  # a drainer sleeping in backoff retries now
        while (
            self.backlog()
            and not self.breaker.is_open
            and self._thread is not None
            and self._thread.is_alive()
            and time.monotonic() < deadline
        ):
            self._wake.set()
            time.sleep(0.01)
        with self._lock:
            try:
                self._buffer_to_disk_locked("shutdown")
            except SpillError:
                logger.exception(
                    "celery-durable: %d buffered messages could not be spilled at shutdown",
                    len(self._buffer),
                )
        self._stopping.set()
        self._wake.set()
        self._hurry.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        self.forwarder.close()
        for store in [*self._adopted, *([self._store] if self._store is not None else [])]:
            if len(store):
                store.close()
            else:
                store.destroy()
        self._adopted.clear()
        self._store = None


_SPILLED_BY_REASON: dict[str, Any] = {}


def _spilled(reason: str) -> Any:
    """The SPILLED counter for ``reason`` (``labels()`` takes a lock: not per publish)."""
    child = _SPILLED_BY_REASON.get(reason)
    if child is None:
        child = _SPILLED_BY_REASON[reason] = metrics.SPILLED.labels(reason=reason)
    return child


def _safe_url(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


_SPILLERS: dict[tuple[Any, ...], Spiller] = {}
_SPILLERS_LOCK = threading.Lock()


def get_spiller(key: tuple[Any, ...], factory: Any) -> Spiller:
    """The process's Spiller for ``key``, created by ``factory()`` on first use.

    Keyed by pid too: a forked child (prefork pool, gunicorn worker) never
    shares its parent's store or drainer thread; it gets its own.
    """
    full_key = (os.getpid(), *key)
    spiller = _SPILLERS.get(full_key)
    if spiller is None:
        with _SPILLERS_LOCK:
            spiller = _SPILLERS.get(full_key)
            if spiller is None:
                spiller = _SPILLERS[full_key] = factory()
    return spiller


def spillers() -> list[Spiller]:
    """This process's live Spillers."""
    pid = os.getpid()
    return [s for key, s in _SPILLERS.items() if key[0] == pid]


def shutdown_all(timeout: float | None = None) -> None:
    """Flush and close every Spiller of this process (exit, worker shutdown)."""
    pid = os.getpid()
    with _SPILLERS_LOCK:
        mine = [(k, s) for k, s in _SPILLERS.items() if k[0] == pid]
        for key, _ in mine:
            del _SPILLERS[key]
    for _, spiller in mine:
        try:
            spiller.close(timeout)
        except Exception:  # shutdown must go on
            logger.exception("celery-durable: error closing spiller for %s", spiller.inner_url)


atexit.register(shutdown_all)
