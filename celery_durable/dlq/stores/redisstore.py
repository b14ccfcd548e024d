"""``redis://host:port/db``: one dump store shared by every host of a fleet.

(``redis+sentinel://...?master_name=NAME`` for a redis under Sentinel:
:mod:`celery_durable.sentinel_url`.)

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
import json
import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from kombu.exceptions import ContentDisallowed

from ... import metrics
from ...exceptions import CorruptRecord, DumpError
from ...sentinel_url import redis_client
from ..base import DumpEntry, DumpStore, EncodedDump, QuarantinedDump
from ..codec import Codec, crc32
from ..retention import REASONS, Retention
from ..summary import DumpSummary, summarize

__all__ = ["RedisStore"]

MAGIC = b"CDLQ"
FRAME = struct.Struct(">4sII")  # magic, version, crc32(payload)
PAGE = 500
#: Seconds between two checks of ``durable_dlq_max_bytes`` (fleet-wide; see below).
BYTES_CHECK_INTERVAL = 30.0


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
        self.client = client or redis_client(
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

    # -- notes: small JSON documents about the store (the last restore run) ----
    def put_note(self, name: str, data: dict[str, Any]) -> None:
        key = f"{self.index_key.rsplit(':', 1)[0]}:note:{name}"
        try:
            self.client.set(key, json.dumps(data))
        except (redis.RedisError, OSError) as exc:
            raise DumpError(f"cannot write note {name} to {self.url}: {exc}") from exc

    def get_note(self, name: str) -> dict[str, Any] | None:
        key = f"{self.index_key.rsplit(':', 1)[0]}:note:{name}"
        try:
            raw: Any = self.client.get(key)
            data = json.loads(raw) if raw else None
        except (redis.RedisError, OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # -- listing (dlq/summary.py: the console) -----------------------------------
    # An entry id names one immutable dump, so its summary is made once per
    # process and kept; a call reads the index (ids only) and fetches just the
    # dumps it has not seen.
    def summaries(self) -> tuple[list[DumpSummary], list[QuarantinedDump]]:
        """Live dumps oldest first as summaries, and what could not be read."""
        try:
            raw: Any = self.client.zrange(self.index_key, 0, -1)
            last = self.__dict__.get("_summary_last")
            if last is not None and last[0] == raw:
                return last[1]  # the index did not change: nor did any dump
            done = len(last[0]) if last is not None else 0
            if last is not None and len(raw) > done and raw[:done] == last[0]:
                # Only appended (new failures come last): read just the new ones.
                live, bad = self._summarize([i.decode() for i in raw[done:]])
                result = (last[1][0] + live, last[1][1] + bad)
            else:
                ids = [i.decode() for i in raw]
                cache = self.__dict__.get("_summary_cache", {})
                if len(cache) > len(ids):  # forget what was deleted meanwhile
                    present = set(ids)
                    self.__dict__["_summary_cache"] = {
                        k: v for k, v in cache.items() if k in present
                    }
                result = self._summarize(ids)
        except (redis.RedisError, OSError) as exc:
            raise DumpError(f"cannot read dumps from {self.url}: {exc}") from exc
        self.__dict__["_summary_last"] = (raw, result)
        return result

    def _summarize(self, ids: list[str]) -> tuple[list[DumpSummary], list[QuarantinedDump]]:
        cache: dict[str, DumpSummary | QuarantinedDump]
        cache = self.__dict__.setdefault("_summary_cache", {})
        missing = [i for i in ids if i not in cache]
        for start in range(0, len(missing), PAGE):
            page = missing[start : start + PAGE]
            values: list[Any] = self.client.hmget(self.data_key, page)
            for entry_id, value in zip(page, values, strict=True):
                if value is not None:
                    found = self._unframe(entry_id, value)
                    cache[entry_id] = summarize(found) if isinstance(found, DumpEntry) else found
        live: list[DumpSummary] = []
        bad: list[QuarantinedDump] = []
        for entry_id in ids:
            item = cache.get(entry_id)
            if isinstance(item, DumpSummary):
                live.append(item)
            elif item is not None:
                bad.append(item)
        return live, bad

    def fetch(self, entry_ids: Iterable[str]) -> list[DumpEntry]:
        """The live dumps with these ids, oldest first."""
        ids = sorted(set(entry_ids))
        if not ids:
            return []
        try:
            values: list[Any] = self.client.hmget(self.data_key, ids)
        except (redis.RedisError, OSError) as exc:
            raise DumpError(f"cannot read dumps from {self.url}: {exc}") from exc
        found = [self._unframe(i, v) for i, v in zip(ids, values, strict=True) if v is not None]
        return [e for e in found if isinstance(e, DumpEntry)]

    def close(self) -> None:
        self.client.close()

    # -- retention (dlq/retention.py) ------------------------------------------
    def _retention_keys(self) -> list[str]:
        base = self.index_key.rsplit(":", 1)[0]
        return [
            self.index_key,
            self.data_key,
            f"{base}:sizes",
            f"{base}:bytes",
            f"{base}:dropped",
            f"{base}:bytes_checked",
        ]

    def enforce_retention(self, retention: Retention, now: float) -> dict[str, int]:
        """Delete what the bounds exclude, atomically in one Lua script; drops per reason."""
        cutoff = "" if retention.max_age is None else repr(now - retention.max_age)
        args = [
            cutoff,
            "" if retention.max_entries is None else str(retention.max_entries),
            "" if retention.max_bytes is None else str(retention.max_bytes),
            "1" if retention.drop_newest else "0",
            str(int(BYTES_CHECK_INTERVAL * 1000)),
        ]
        try:
            counts: Any = self.client.eval(_RETENTION_LUA, 6, *self._retention_keys(), *args)
        except (redis.RedisError, OSError) as exc:
            raise DumpError(f"cannot enforce retention on {self.url}: {exc}") from exc
        return dict(zip(REASONS, (int(c) for c in counts), strict=True))

    def dropped_counts(self) -> dict[str, int]:
        """Dumps dropped by retention so far, per reason, by every process of the fleet."""
        try:
            raw: Any = self.client.hgetall(self._retention_keys()[4])
        except (redis.RedisError, OSError) as exc:
            raise DumpError(f"cannot read {self.url}: {exc}") from exc
        return {k.decode(): int(v) for k, v in raw.items()}


# Age and entry bounds cost O(log N + dropped) (ZRANGEBYSCORE, ZCARD, ZRANGE), so
# they are enforced after every flush.  The byte bound needs every dump's size,
# and sizes are accounted lazily so writes stay one MULTI: ``sizes`` (entry id ->
# framed bytes) and ``bytes`` (their sum) catch up with the index by two ZDIFFs
# (new ids: HSTRLEN each; vanished ids: restored or purged meanwhile), which is
# O(N) inside Redis (about 0.1 s at 100,000 dumps).  So the byte bound is checked
# at most once per ARGV[5] milliseconds for the whole fleet (until the
# ``bytes_checked`` key expires).  Every drop is counted in ``dropped`` per reason.  One
# script, so concurrent enforcements are serialised by Redis and never drop more
# than the bounds ask.
_RETENTION_LUA = """
local index, data, sizes, total = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local dropped, checked = KEYS[5], KEYS[6]
local newest = ARGV[4] == '1'
local function account()
  for _, id in ipairs(redis.call('ZDIFF', 2, index, sizes)) do
    local n = redis.call('HSTRLEN', data, id)
    redis.call('ZADD', sizes, n, id)
    redis.call('INCRBY', total, n)
  end
  local gone = redis.call('ZDIFF', 2, sizes, index, 'WITHSCORES')
  for i = 1, #gone, 2 do
    redis.call('ZREM', sizes, gone[i])
    redis.call('DECRBY', total, gone[i + 1])
  end
end
local function drop(ids, reason)
  if #ids == 0 then return 0 end
  for _, id in ipairs(ids) do
    local n = redis.call('ZSCORE', sizes, id)
    if n then redis.call('DECRBY', total, n) end
  end
  for i = 1, #ids, 1000 do
    local chunk = {unpack(ids, i, math.min(i + 999, #ids))}
    redis.call('ZREM', index, unpack(chunk))
    redis.call('HDEL', data, unpack(chunk))
    redis.call('ZREM', sizes, unpack(chunk))
  end
  redis.call('HINCRBY', dropped, reason, #ids)
  return #ids
end
local out = {0, 0, 0}
if ARGV[1] ~= '' then
  out[1] = drop(redis.call('ZRANGEBYSCORE', index, '-inf', '(' .. ARGV[1]), 'max_age')
end
if ARGV[2] ~= '' then
  local excess = redis.call('ZCARD', index) - tonumber(ARGV[2])
  if excess > 0 then
    local ids
    if newest then
      ids = redis.call('ZRANGE', index, -excess, -1)
    else
      ids = redis.call('ZRANGE', index, 0, excess - 1)
    end
    out[2] = drop(ids, 'max_entries')
  end
end
if ARGV[3] ~= '' and redis.call('SET', checked, '1', 'PX', ARGV[5], 'NX') then
  account()
  local over = tonumber(redis.call('GET', total) or '0') - tonumber(ARGV[3])
  local ids, pos = {}, 0
  while over > 0 do
    local page
    if newest then
      page = redis.call('ZRANGE', index, pos, pos + 99, 'REV')
    else
      page = redis.call('ZRANGE', index, pos, pos + 99)
    end
    if #page == 0 then break end
    for _, id in ipairs(page) do
      if over <= 0 then break end
      table.insert(ids, id)
      over = over - tonumber(redis.call('ZSCORE', sizes, id) or '0')
    end
    pos = pos + 100
  end
  out[3] = drop(ids, 'max_bytes')
end
return out
"""
