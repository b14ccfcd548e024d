"""Per-queue rate control: the dlqdump Restorer's AllowRate / PostponeInterval.

A target queue is fed only while ``length < allow_rate * capacity``.  The length
is read once per run through Kombu's passive ``queue_declare`` (its
``message_count``; works on redis and amqp) and then counted up as messages are
added, so one run never overshoots.  A queue found too long is postponed for
``postpone_interval`` seconds; the postponement is remembered in this process
across runs (a module-level table), so later beat ticks skip it without asking
the broker again.  Other queues keep going.  "In this process" means per pool
child in a prefork worker: a child that has not seen the postponement probes the
queue once and finds it full just the same.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .. import metrics

__all__ = ["QueueGate", "clear_postponements", "postponed_until"]

logger = logging.getLogger(__name__)

# queue name -> time.monotonic() until which it is postponed (this process only).
_POSTPONED: dict[str, float] = {}
_POSTPONED_LOCK = threading.Lock()


def postponed_until(queue: str, clock: Callable[[], float] = time.monotonic) -> float | None:
    """Monotonic deadline of ``queue``'s postponement, or None."""
    with _POSTPONED_LOCK:
        until = _POSTPONED.get(queue)
    if until is not None and until <= clock():
        return None
    return until


def clear_postponements() -> None:
    """Forget every postponement (tests, or an operator's forced restore)."""
    with _POSTPONED_LOCK:
        _POSTPONED.clear()


class QueueGate:
    """Decides, message by message, whether a queue may take one more restore.

    ``length_of(queue)`` returns the queue's current length (messages ready).
    With ``enforce=False`` (``dlq restore --force``) every queue is open; with
    ``remember=False`` (a dry run) nothing is recorded or counted.
    """

    def __init__(
        self,
        length_of: Callable[[str], int],
        *,
        allow_rate: float,
        capacity: int,
        postpone_interval: float,
        enforce: bool = True,
        remember: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._length_of = length_of
        self.limit = allow_rate * capacity
        self.postpone_interval = postpone_interval
        self.enforce = enforce
        self.remember = remember
        self._clock = clock
        self._lengths: dict[str, int] = {}
        self._closed: set[str] = set()

    @property
    def closed(self) -> frozenset[str]:
        """Queues postponed during this run (or still postponed from an earlier one)."""
        return frozenset(self._closed)

    def admit(self, queue: str) -> bool:
        if not self.enforce:
            return True
        if queue in self._closed:
            return False
        length = self._lengths.get(queue)
        if length is not None:
            # Seen (and open) in this run: its count says it all, no lock, no probe.
            if length < self.limit:
                return True
            self._postpone(queue, length)
            return False
        with _POSTPONED_LOCK:
            until = _POSTPONED.get(queue)
            if until is not None and until <= self._clock():
                del _POSTPONED[queue]
                until = None
        if until is not None:
            self._closed.add(queue)
            return False
        length = self._lengths.get(queue)
        if length is None:
            length = self._lengths[queue] = self._length_of(queue)
        if length < self.limit:
            return True
        self._postpone(queue, length)
        return False

    def added(self, queue: str, count: int = 1) -> None:
        """Count messages this run put on ``queue``: a re-check without a round trip."""
        if queue in self._lengths:
            self._lengths[queue] += count

    def _postpone(self, queue: str, length: int) -> None:
        self._closed.add(queue)
        if not self.remember:  # a dry run changes nothing
            return
        with _POSTPONED_LOCK:
            _POSTPONED[queue] = self._clock() + self.postpone_interval
        metrics.POSTPONED.labels(queue=queue).inc()
        logger.info(
            "restore: queue %r holds %d >= %.0f messages; postponed %.1fs",
            queue,
            length,
            self.limit,
            self.postpone_interval,
        )
