"""Bounded dump stores: ``durable_dlq_max_bytes|max_entries|max_age`` and ``when_full``.

A dump store is bounded so a storm of failures cannot fill a disk or a Redis.
The bounds are enforced *after* a write, never inside it: the dump queue calls
:func:`after_flush` once a batch is in the store, and each store's
``enforce_retention(retention, now)`` hook picks what goes:

1. ``max_age``: dumps that failed longer ago than this are expired;
2. ``max_entries``: beyond it, ``drop_oldest`` removes the oldest dumps and
   ``drop_newest`` the newest (the batch just written, so the store keeps the
   first failures of an incident, like Logstash's ``drop_newer``);
3. ``max_bytes``: the same, by the stored size of the dumps.

Parked dumps count toward every bound and are dropped like any other dump: a
parked dump that was never looked at must not keep the store full forever.
Quarantined dumps (another format version, damaged) are not counted: they are
never deleted by us.

Dropping is never silent: each store keeps a persistent count per reason
(``dropped_counts()``, shown by ``celery durable status`` and the console), and
every drop is logged at WARNING and counted in
``celery_durable_dumps_dropped_total{reason}``.  Enforcement is serialised per
store (a ``flock`` or a Lua script) and idempotent, so concurrent writers never
drop more than the bounds ask.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from .. import metrics

__all__ = ["REASONS", "Retention", "after_flush", "dropped_counts", "enforce"]

logger = logging.getLogger(__name__)

REASONS = ("max_age", "max_entries", "max_bytes")


@dataclass(frozen=True)
class Retention:
    """The bounds of a dump store (``None``: unbounded)."""

    max_bytes: int | None = None
    max_entries: int | None = None
    max_age: float | None = None
    when_full: str = "drop_oldest"

    @property
    def active(self) -> bool:
        return any(b is not None for b in (self.max_bytes, self.max_entries, self.max_age))

    @property
    def drop_newest(self) -> bool:
        return self.when_full == "drop_newest"

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> Retention:
        return cls(
            max_bytes=settings["durable_dlq_max_bytes"],
            max_entries=settings["durable_dlq_max_entries"],
            max_age=settings["durable_dlq_max_age"],
            when_full=settings["durable_dlq_when_full"],
        )


def enforce(
    store: Any, retention: Retention | None = None, now: float | None = None
) -> dict[str, int]:
    """Apply ``retention`` (default: the store's own) to ``store``; return drops per reason."""
    retention = retention or getattr(store, "retention", None)
    hook = getattr(store, "enforce_retention", None)
    if retention is None or hook is None or not retention.active:
        return {}
    dropped: dict[str, int] = hook(retention, time.time() if now is None else now)
    for reason, count in dropped.items():
        if count:
            metrics.DUMPS_DROPPED.labels(reason=reason).inc(count)
            logger.warning(
                "dlq: dropped %d dump(s) from %s: %s bound (%s)",
                count,
                getattr(store, "url", store),
                reason,
                _describe(retention, reason),
            )
    return dropped


def _describe(retention: Retention, reason: str) -> str:
    if reason == "max_age":
        return f"durable_dlq_max_age={retention.max_age}"
    limit = retention.max_entries if reason == "max_entries" else retention.max_bytes
    return f"durable_dlq_{reason}={limit}, durable_dlq_when_full={retention.when_full}"


def after_flush(store: Any) -> None:
    """The dump queue's hook, after every successful flush: enforce the store's bounds."""
    try:
        enforce(store)
    except Exception:  # retention must never fail a flush; the next one tries again
        logger.exception("dlq: enforcing the dump store's retention failed")


def dropped_counts(store: Any) -> dict[str, int]:
    """Dumps dropped so far by reason, as persisted by the store (all processes, all time)."""
    hook = getattr(store, "dropped_counts", None)
    counts: dict[str, int] = hook() if hook is not None else {}
    return {reason: int(counts.get(reason, 0)) for reason in REASONS}
