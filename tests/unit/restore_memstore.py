"""An in-memory DumpStore for unit tests of the restore logic (not of the stores)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from typing import Any

from celery_durable.dlq.base import DumpEntry, DumpStore, QuarantinedDump

_ids = itertools.count(1)


class MemoryDumpStore(DumpStore):
    def __init__(self, url: str = "memory://dumps") -> None:
        self.url = url
        self.data: dict[str, DumpEntry] = {}
        self.deleted: list[str] = []

    def write(self, entries: list[DumpEntry]) -> None:
        for entry in entries:
            entry.entry_id = f"{next(_ids):012d}"
            self.data[entry.entry_id] = entry

    def entries(self, *, task: str | None = None) -> Iterator[DumpEntry]:
        for key in sorted(self.data):
            if task is None or self.data[key].task_name == task:
                yield self.data[key]

    def delete(self, entry_ids: Iterable[str]) -> int:
        n = 0
        for key in entry_ids:
            if self.data.pop(key, None) is not None:
                self.deleted.append(key)
                n += 1
        return n

    def quarantined(self) -> list[QuarantinedDump]:
        return []


def make_entry(
    task_id: str,
    *,
    task_name: str = "tasks.add",
    queue: str = "celery",
    restores: int = 0,
    failed_at: float | None = None,
    args: list[Any] | None = None,
    exchange: str = "",
) -> DumpEntry:
    return DumpEntry(
        task_id=task_id,
        task_name=task_name,
        args=args if args is not None else [1, 2],
        kwargs={"k": "v"},
        headers={"id": task_id, "task": task_name, "retries": 0, "root_id": task_id},
        properties={"correlation_id": task_id, "priority": 0, "delivery_mode": 2},
        delivery_info={"exchange": exchange, "routing_key": queue},
        embed={"callbacks": None, "errbacks": None, "chain": None, "chord": None},
        exc_type="ValueError",
        exc_message="boom",
        traceback="",
        hostname="celery@test",
        failed_at=time.time() - 3600 if failed_at is None else failed_at,
        restores=restores,
    )
