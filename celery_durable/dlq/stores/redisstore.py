"""``redis://host:port/db``: one dump store shared by every host of a fleet.

Two keys (prefix ``celery_durable:dlq``, change it with ``?prefix=...`` in the URL)::

    <prefix>:index   sorted set: entry id -> failure time (oldest first)
    <prefix>:data    hash: entry id -> framed dump

An entry id is ``<failure time in microseconds>-<sha1 of the framed dump>``, so
writing the same batch twice (a flush retried after a timeout whose first attempt
did succeed) stores each dump once.  A batch is written in one ``MULTI``/``EXEC``
transaction: a writer killed mid-flush leaves nothing (Redis discards a
transaction that was never executed).

A framed dump is ``b"CDLQ" | u32 version | u32 crc32(payload) | payload``.  A
dump of another ``durable_dlq_version`` is skipped and reported, never deleted; a
dump failing its CRC is counted in ``celery_durable_corrupt_records{store="dlq"}``
and reported.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from kombu.exceptions import ContentDisallowed

from ... import metrics
from ...exceptions import CorruptRecord, DumpError
from ..base import DumpEntry, DumpStore, EncodedDump, QuarantinedDump
from ..codec import Codec, crc32

__all__ = ["RedisStore"]

MAGIC = b"CDLQ"
FRAME = struct.Struct(">4sII")  # magic, version, crc32(payload)
PAGE = 500


def _split_prefix(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), "celery_durable:dlq")
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


class RedisStore(DumpStore):
    """Dumps in a Redis sorted set + hash, readable from every host."""

    def __init__(
        self,
        url: str,
        *,
        codec: Codec | None = None,
        version: int = 1,
        client: redis.Redis | None = None,
    ) -> None:
        self.url = url
        redis_url, prefix = _split_prefix(url)
        self.codec = codec or Codec()
        self.version = version
        self.index_key = f"{prefix}:index"
        self.data_key = f"{prefix}:data"
        self.client = client or redis.Redis.from_url(
            redis_url, socket_timeout=10.0, socket_connect_timeout=5.0
        )
        self._counted: set[str] = set()

    def _frame(self, payload: bytes) -> bytes:
        return FRAME.pack(MAGIC, self.version, crc32(payload)) + payload

    def write_encoded(self, dumps: Sequence[EncodedDump]) -> list[str]:
        if not dumps:
            return []
        data: dict[str, bytes] = {}
        index: dict[str, float] = {}
        ids: list[str] = []
        for dump in dumps:
            framed = self._frame(dump.payload)
            entry_id = f"{int(dump.failed_at * 1e6):017d}-{hashlib.sha1(framed).hexdigest()[:20]}"
            data[entry_id] = framed
            index[entry_id] = dump.failed_at
            ids.append(entry_id)
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(self.data_key, mapping=data)  # type: ignore[arg-type]
                pipe.zadd(self.index_key, index)
                pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise DumpError(f"cannot write {len(dumps)} dumps to {self.url}: {exc}") from exc
        return ids

    def _scan(self) -> Iterator[tuple[str, bytes]]:
        """``(entry_id, framed)`` oldest first; ids deleted meanwhile are skipped."""
        try:
            raw: Any = self.client.zrange(self.index_key, 0, -1)
            ids = [i.decode() for i in raw]
            for start in range(0, len(ids), PAGE):
                page = ids[start : start + PAGE]
                values: list[Any] = self.client.hmget(self.data_key, page)
                for entry_id, value in zip(page, values, strict=True):
                    if value is not None:
                        yield entry_id, value
        except (redis.RedisError, OSError) as exc:
            raise DumpError(f"cannot read dumps from {self.url}: {exc}") from exc

    def _unframe(self, entry_id: str, framed: bytes) -> DumpEntry | QuarantinedDump:
        where = f"{self.data_key}[{entry_id}]"
        try:
            magic, version, crc = FRAME.unpack_from(framed, 0)
        except struct.error:
            magic, version, crc = b"", None, 0
        if magic != MAGIC:
            return self._damaged(entry_id, QuarantinedDump(where, "not a dump (bad magic)"))
        if version != self.version:
            return QuarantinedDump(
                where, f"format version {version}, this store reads {self.version}", version
            )
        payload = framed[FRAME.size :]
        if crc32(payload) != crc:
            return self._damaged(entry_id, QuarantinedDump(where, "checksum mismatch", version))
        try:
            entry = self.codec.decode(payload)
        except ContentDisallowed as exc:
            return QuarantinedDump(where, f"not accepted: {exc}", version)
        except CorruptRecord as exc:
            return self._damaged(entry_id, QuarantinedDump(where, str(exc), version))
        entry.entry_id = entry_id
        return entry

    def _damaged(self, entry_id: str, found: QuarantinedDump) -> QuarantinedDump:
        if entry_id not in self._counted:
            self._counted.add(entry_id)
            metrics.CORRUPT_RECORDS.labels(store="dlq").inc()
        return found

    def entries(self, *, task: str | None = None) -> Iterator[DumpEntry]:
        for entry_id, framed in self._scan():
            entry = self._unframe(entry_id, framed)
            if isinstance(entry, DumpEntry) and (task is None or entry.task_name == task):
                yield entry

    def quarantined(self) -> list[QuarantinedDump]:
        return [
            found
            for found in (self._unframe(i, f) for i, f in self._scan())
            if isinstance(found, QuarantinedDump)
        ]

    def delete(self, entry_ids: Iterable[str]) -> int:
        ids = list(entry_ids)
        if not ids:
            return 0
        removed = 0
        try:
            for start in range(0, len(ids), PAGE):
                page = ids[start : start + PAGE]
                with self.client.pipeline(transaction=True) as pipe:
                    pipe.zrem(self.index_key, *page)
                    pipe.hdel(self.data_key, *page)
                    removed += int(pipe.execute()[0])
        except (redis.RedisError, OSError) as exc:
            raise DumpError(f"cannot delete dumps from {self.url}: {exc}") from exc
        return removed

    def close(self) -> None:
        self.client.close()
