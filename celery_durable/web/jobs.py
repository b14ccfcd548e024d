"""Restores started from the console: in a background thread, one at a time.

A job runs :func:`celery_durable.restore.runner.restore` - the code the beat task
runs, under the same per-store lock, at ``durable_restore_rate`` - over the
dumps the operator chose, so restored tasks keep their original ids.  Progress
is counted as the runner deletes each published chunk from the store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..dlq.base import DumpEntry, DumpStore, EncodedDump, QuarantinedDump

__all__ = ["RestoreJob"]

logger = logging.getLogger(__name__)


class _Counting(DumpStore):
    """The job's store, counting what the runner deletes (= restored)."""

    def __init__(self, inner: DumpStore, job: RestoreJob) -> None:
        self.inner = inner
        self.url = inner.url
        self.codec = inner.codec
        self.job = job

    def write_encoded(self, dumps: Sequence[EncodedDump]) -> list[str]:
        return self.inner.write_encoded(dumps)

    def entries(self, *, task: str | None = None) -> Iterator[DumpEntry]:
        return self.inner.entries(task=task)

    def delete(self, entry_ids: Iterable[str]) -> int:
        removed = self.inner.delete(entry_ids)
        self.job.restored += removed
        return removed

    def quarantined(self) -> list[QuarantinedDump]:
        return self.inner.quarantined()

    def put_note(self, name: str, data: dict[str, Any]) -> None:
        put = getattr(self.inner, "put_note", None)
        if put is not None:
            put(name, data)

    def close(self) -> None:
        self.inner.close()


@dataclass
class RestoreJob:
    """One console restore: ``state`` is running, done, busy or failed."""

    description: str
    total: int
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    state: str = "running"
    restored: int = 0
    postponed: dict[str, int] = field(default_factory=dict)
    error: str = ""

    def start(
        self,
        app: Any,
        open_store: Callable[[], DumpStore],
        entry_ids: set[str],
        rate: float | None,
    ) -> None:
        thread = threading.Thread(
            target=self._run,
            args=(app, open_store, entry_ids, rate),
            name="celery-durable-console-restore",
            daemon=True,
        )
        thread.start()

    def _run(
        self, app: Any, open_store: Callable[[], DumpStore], ids: set[str], rate: float | None
    ) -> None:
        from ..restore.runner import RestoreOptions, restore

        try:
            # A manual restore, like `celery durable dlq restore`: the operator chose
            # these dumps, so backoff and parking do not hold them back; the queue
            # rate control and durable_restore_rate do.
            options = RestoreOptions.from_app(
                app,
                batch=None,
                ignore_backoff=True,
                include_parked=True,
                rate=rate,
                trigger="console",
            )
            store = _Counting(open_store(), self)
            try:
                report = restore(app, store, options, select=lambda e: e.entry_id in ids)
            finally:
                store.close()
            self.postponed = dict(report.postponed)
            self.state = "busy" if report.busy else "done"
        except Exception as exc:
            logger.exception("console: restore failed")
            self.error = str(exc).splitlines()[0] if str(exc) else repr(exc)
            self.state = "failed"
        finally:
            self.finished_at = time.time()

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def percent(self) -> int:
        return 100 if not self.total else min(100, round(100 * self.restored / self.total))
