"""The publish circuit breaker: is the broker considered down right now?

Opened by a failed or slow publish, closed by the drainer when the broker takes
a batch (or answers a probe) again.  While open, publishes go straight to disk
without touching the network, and the drainer retries with exponential backoff
and full jitter so a fleet of producers does not stampede a recovering broker.
"""

from __future__ import annotations

import logging
import random
import time

from .. import metrics

__all__ = ["Breaker"]

logger = logging.getLogger(__name__)


class Breaker:
    """Open/closed state, with the backoff schedule for retries while open."""

    def __init__(self, name: str, base: float = 0.1, cap: float = 5.0) -> None:
        self.name = name
        self.base = base
        self.cap = cap
        self.is_open = False
        self.opened_at: float | None = None
        self._failures = 0

    def trip(self, exc: BaseException) -> None:
        """Record a failure; open the breaker if it was closed."""
        self._failures += 1
        if not self.is_open:
            self.is_open = True
            self.opened_at = time.monotonic()
            metrics.BREAKER_OPEN.set(1)
            logger.warning(
                "celery-durable: broker %s unreachable (%s: %s); publishes spill to disk "
                "until it is back",
                self.name, type(exc).__name__, _short(exc),
            )  # fmt: skip

    def reset(self) -> None:
        """The broker took a batch or answered a probe: close the breaker."""
        self._failures = 0
        if self.is_open:
            down = time.monotonic() - (self.opened_at or time.monotonic())
            self.is_open = False
            self.opened_at = None
            metrics.BREAKER_OPEN.set(0)
            logger.warning("celery-durable: broker %s is back after %.1f s", self.name, down)

    def backoff(self) -> float:
        """Seconds to wait before the next attempt: exponential, capped, full jitter."""
        ceiling = min(self.cap, self.base * (2 ** min(self._failures, 16)))
        return random.uniform(ceiling / 2, ceiling)


def _short(exc: BaseException, limit: int = 300) -> str:
    """The exception's text on one line, cut: redis-py's Sentinel errors embed a
    full client repr per Sentinel (several KB)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
