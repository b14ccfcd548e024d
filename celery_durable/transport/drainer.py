"""The drainer: one background thread per (process, broker) that forwards the backlog.

It takes what a :class:`~celery_durable.transport.router.PublishRouter` holds
(memory buffer first, then stores adopted from dead processes, then the
process's own store), forwards it in pipelined batches through a broker's
:class:`~celery_durable.transport.forwarder.Forwarder`, and deletes a record only
once the broker has it.  While the broker is down it retries with the
breaker's backoff (exponential, full jitter); a publisher waiting for room cuts
the wait short (:meth:`Drainer.hurry`).  It honours ``drain_rate``, lingers a
few milliseconds when caught up so batches can gather, and looks for stores
that dead processes left behind every :data:`ORPHAN_SCAN_INTERVAL` seconds
while idle.

Nothing runs until it is needed: :meth:`Drainer.start` (adopt orphans, start the
thread) is called by the router's first spill or buffered message, or by an
explicit hook in long-lived processes (worker, beat: :mod:`celery_durable.worker`),
so building a transport starts no thread and touches no disk.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from .. import metrics
from ..exceptions import SpillError, SpillFull, StoreDamaged
from ..spill import SpillStore, StoreLocked, find_orphans, forksafe
from ..spill.directory import set_aside_damaged
from .forwarder import ForwardsBatches, UnsendableRecord
from .router import PublishRouter

__all__ = ["DRAIN_LINGER", "ORPHAN_SCAN_INTERVAL", "Drainer"]

logger = logging.getLogger(__name__)

#: How often an idle drainer looks for stores left by processes that died (or
#: exited with a backlog while the broker was down) since it started.
ORPHAN_SCAN_INTERVAL = 5.0
#: Seconds a caught-up drainer waits for more messages before the next batch:
#: bounds drain cycles to ~200/s, adds at most this much latency in wal/buffered.
DRAIN_LINGER = 0.005
#: Seconds between backlog gauge updates while the drainer moves records.
GAUGE_INTERVAL = 0.5
#: Seconds an idle drainer sleeps when nothing wakes it.
IDLE_WAIT = 1.0


class Drainer:
    """Forwards a router's buffer and backlog (and adopted stores) to the broker."""

    def __init__(
        self,
        router: PublishRouter,
        forwarder: ForwardsBatches,
        broker_errors: tuple[type[BaseException], ...],
    ) -> None:
        self.router = router
        self.breaker = router.breaker
        self.options = router.options
        self.forwarder = forwarder
        self.broker_errors = broker_errors
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._hurry = threading.Event()  # cuts a backoff short (close, a publisher waiting)
        self._start_lock = threading.Lock()
        self._started = False
        self._adopted: list[SpillStore] = []
        self._thread: threading.Thread | None = None
        self._next_orphan_scan = 0.0
        self._gauges_due = 0.0
        router.on_work = self.notify
        router.on_hurry = self.hurry

    # -- starting and waking ---------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._started

    def start(self) -> None:
        """Adopt dead processes' stores and start the thread (once; later calls are no-ops)."""
        if self._started:
            return
        with self._start_lock:
            if self._started or self._stopping.is_set():
                return
            self.adopt_orphans()
            self._started = True
            self._ensure_thread()

    def notify(self) -> None:
        """Something waits for the broker: start the drainer, or wake it."""
        if not self._started:
            self.start()
        elif not self._wake.is_set():
            self._wake.set()
        thread = self._thread
        if thread is not None and not thread.is_alive():
            self._ensure_thread()

    def hurry(self) -> None:
        """Try the broker now, even in the middle of a backoff."""
        if not self._started:
            self.start()
        self._hurry.set()
        self._wake.set()

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            if self._stopping.is_set():
                return
            self._thread = threading.Thread(
                target=self._run, name=f"celery-durable-drainer-{os.getpid()}", daemon=True
            )
            self._thread.start()

    # -- adoption ------------------------------------------------------------------
    def adopt_orphans(self) -> None:
        """Open every store under the router's directory whose owner is dead.

        Not in a fork-tainted process (:mod:`celery_durable.spill.forksafe`):
        opening a store with data could make LevelDB wait for ever there; an
        untainted process (the next pool child, a producer, the CLI) adopts them.
        """
        self._next_orphan_scan = time.monotonic() + ORPHAN_SCAN_INTERVAL
        if forksafe.tainted():
            forksafe.warn_once("stores of dead processes are not adopted")
            return
        for path in find_orphans(self.router.store_dir):
            try:
                store = SpillStore(path, max_bytes=self.options.spill_max_bytes)
            except StoreLocked:
                continue  # another live process adopted it first
            except StoreDamaged as exc:  # damaged since find_orphans looked
                set_aside_damaged(path, exc)
                continue
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

    # -- the loop ----------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            # A wake-up or hurry from before this attempt is answered by it.
            self._wake.clear()
            self._hurry.clear()
            event, seconds = self.cycle()
            if seconds > 0:
                event.wait(seconds)

    def cycle(self) -> tuple[threading.Event, float]:
        """One drain step and its error handling; returns what to wait on, and how long.

        The thread loops over this; tests call it directly to drain step by step.
        """
        try:
            moved = self._step()
        except self.broker_errors as exc:
            self._on_broker_error(exc)
            return self._hurry, self.breaker.backoff()
        except SpillError as exc:  # disk full or failing: not the broker's fault
            logger.error("celery-durable: spill store error, drainer retries: %s", exc)
            self.router.attempted(False)
            return self._hurry, self.breaker.backoff()
        except Exception as exc:  # the drainer must outlive any bug
            logger.exception("celery-durable: drainer error, retrying")
            self._on_broker_error(exc)
            return self._hurry, self.breaker.backoff()
        now = time.monotonic()
        if not moved or now >= self._gauges_due:
            # Every cycle would cost a LevelDB seek per store (the oldest
            # record's age): while records flow, twice a second is enough.
            self._gauges_due = now + GAUGE_INTERVAL
            self._update_gauges()
        self.router.attempted(True)
        if moved:
            self.breaker.reset()
            if self.options.drain_rate:
                return self._stopping, moved / self.options.drain_rate
            if moved < self.options.drain_batch:
                # Caught up: let a batch gather instead of forwarding each
                # message alone (in wal/buffered mode a cycle per publish
                # would take the GIL from the publishers it serves).
                return self._stopping, DRAIN_LINGER
            return self._stopping, 0.0
        return self._wake, IDLE_WAIT

    def _on_broker_error(self, exc: BaseException) -> None:
        self.router.trip(exc)
        self.forwarder.reset()
        if self.router.mode == "buffered":
            # Keep order: the buffer is older than anything published from now on.
            try:
                self.router.buffer_to_disk("broker down")
            except SpillError:
                logger.exception("celery-durable: cannot spill the memory buffer")
        self._update_gauges()
        self.router.attempted(False)

    def _step(self) -> int:
        """Forward one batch from wherever the oldest messages are; return how many."""
        router = self.router
        if router.buffered:
            return self._forward_buffer()
        while self._adopted:
            store = self._adopted[0]
            if len(store):
                try:
                    return self._forward_store(store)
                except StoreDamaged as exc:
                    # Everything before the unreadable data is at the broker:
                    # set the store aside and go on with the stores behind it.
                    logger.error("celery-durable: adopted spill store set aside: %s", exc)
                    self._adopted.pop(0)
                    store.set_aside(str(exc))
                    continue
            self._adopted.pop(0)
            store.destroy()
        own = router.store
        if own is not None and len(own):
            try:
                moved = self._forward_store(own)
            except StoreDamaged as exc:
                # Its readable head went to the broker; the rest is unreadable:
                # set it aside, and the next spill opens a fresh store.
                logger.error("celery-durable: own spill store set aside: %s", exc)
                router.set_aside(own, str(exc))
                router.leave_disk_mode()
                return 0
            # Only an emptied store changes anything there, and in wal mode only
            # a fork-tainted one (replaced): spare the router's lock, which
            # every publisher takes, in the common case.
            if not len(own) and (router.mode != "wal" or own.write_budget is not None):
                router.leave_disk_mode()
            return moved
        if self.breaker.is_open:
            self.forwarder.ping()
            self.breaker.reset()
        if router.disk_mode:
            router.leave_disk_mode()
        if time.monotonic() >= self._next_orphan_scan:
            self.adopt_orphans()
            if self._adopted:
                self._wake.set()
        return 0

    def _forward_buffer(self) -> int:
        gen, batch = self.router.buffer_head(self.options.drain_batch)
        try:
            self.forwarder.forward(batch)
        except UnsendableRecord:
            # The store can set it aside; the buffer cannot (order: all of it goes).
            self.router.buffer_to_disk("backlog")
            return 1  # progress: the next cycle quarantines it there

        self.router.buffer_sent(gen, len(batch))
        metrics.DRAINED.inc(len(batch))
        return len(batch)

    def _forward_store(self, store: SpillStore) -> int:
        if store.closed:
            store = self._reopen(store)
        items = store.peek(self.options.drain_batch)
        if not items:
            return 0
        try:
            self.forwarder.forward([record for _, record in items])
        except UnsendableRecord as exc:
            # Retrying could never succeed and would hold everything behind it.
            store.quarantine(items[exc.index][0], exc)
            return 1  # progress: the head moved (what came before it is sent again)
        try:
            store.ack(items[-1][0])
        except SpillError:
            # After a disk error LevelDB refuses every write until it is
            # reopened; without a reopen this batch would be forwarded again and
            # again.  (It is forwarded once more after the reopen: at least once.)
            store.close()
            raise
        metrics.DRAINED.inc(len(items))
        return len(items)

    def _reopen(self, store: SpillStore) -> SpillStore:
        """Open a store closed after a disk error again (raises SpillError while it fails)."""
        if self._stopping.is_set():  # closed by close(), not by an error: leave it
            raise SpillError(f"spill store {store.path} is closed (shutting down)")
        if store is self.router.store:
            fresh = self.router.reopen(store)
        else:
            fresh = SpillStore(store.path, max_bytes=self.options.spill_max_bytes)
            self._adopted = [fresh if s is store else s for s in self._adopted]
        logger.warning("celery-durable: spill store %s reopened after an error", store.path)
        return fresh

    def _update_gauges(self) -> None:
        stores = self._stores()
        metrics.BACKLOG_RECORDS.set(sum(len(s) for s in stores))
        metrics.BACKLOG_BYTES.set(sum(s.backlog_bytes for s in stores))
        oldest = [t for t in (s.oldest_created for s in stores) if t is not None]
        metrics.DRAIN_LAG.set(time.time() - min(oldest) if oldest else 0)

    def _stores(self) -> list[SpillStore]:
        own = self.router.store
        return [*self._adopted, *([own] if own is not None else [])]

    # -- introspection and shutdown ----------------------------------------------------
    def backlog(self) -> int:
        """Records not yet at the broker: the router's buffer and store, and adopted stores."""
        return self.router.backlog() + sum(len(s) for s in self._adopted)

    @property
    def closed(self) -> bool:
        return self._stopping.is_set()

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is waiting within ``timeout`` while the broker is up; stop the thread.

        What could not be delivered stays on disk (the memory buffer is moved
        there) for this process's successor or a neighbour to adopt.
        """
        timeout = self.options.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
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
        try:
            try:
                self.router.buffer_to_disk("shutdown")
            except SpillFull:
                # Every buffered message was accepted: a store past spill_max_bytes
                # (by at most buffer_max_bytes) is better than losing them.
                logger.warning(
                    "celery-durable: spill store full at shutdown: writing %d buffered "
                    "messages past spill_max_bytes",
                    self.router.buffered,
                )
                self.router.buffer_to_disk("shutdown", past_limit=True)
        except SpillError:
            logger.exception(
                "celery-durable: %d buffered messages could not be spilled at shutdown",
                self.router.buffered,
            )
        self._stopping.set()
        self._wake.set()
        self._hurry.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        self.forwarder.close()
        for store in self._adopted:
            if len(store):
                store.close()
            else:
                store.destroy()
        self._adopted.clear()
        self.router.close()
