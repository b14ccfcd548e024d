"""Is a dump well-formed enough to list, plan and republish?

A store decodes whatever bytes it holds into a :class:`DumpEntry`, but the
values may still have the wrong types: a hand-edited export (``restores:
"many"``), a dump written by a buggy or foreign writer, a user store.  Such an
entry must not crash ``dlq ls`` or ``status`` (comparing ``"many" >= 5``) nor
be republished wrongly (``args: "abc"`` would become ``['a', 'b', 'c']``), and
above all it must not stop a restore run from restoring the others.

So every reader asks :func:`entry_problem` first: ``dlq import`` refuses the
line, a restore run and the CLI treat the entry as *quarantined* with the
returned reason (kept in the store, listed, never restored or purged, counted in
``celery_durable_corrupt_records{store="dlq"}`` by the run that skips it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from .base import DumpEntry, QuarantinedDump

__all__ = ["entry_problem", "quarantined_entry", "split_valid"]

_STR_FIELDS = ("exc_type", "exc_message", "traceback", "hostname", "host", "entry_id")
_DICT_FIELDS = ("kwargs", "headers", "properties", "delivery_info", "extra")
_DELIVERY_KEYS = ("exchange", "routing_key", "queue")
_EMBED_LISTS = ("callbacks", "errbacks", "chain")


def _kind(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def entry_problem(entry: DumpEntry) -> str | None:
    """``None`` for a well-formed entry, else ``"<field>: expected ..., got ..."``."""
    if _plainly_valid(entry):
        return None
    return _first_problem(entry)


_NONE_OR_STR = frozenset((type(None), str))
_NONE_OR_INT = frozenset((type(None), int))
_NONE_OR_LIST = frozenset((type(None), list))
_NONE_OR_DICT = frozenset((type(None), dict))
_ONLY_STR = frozenset((str,))


def _plainly_valid(entry: DumpEntry) -> bool:
    """The rules below in one expression, for exact types only (what a decoded dump
    holds).  False means "ask :func:`_first_problem`", which also accepts subclasses:
    a restore validates every dump it reads, so the common case must be cheap."""
    e = entry
    info = e.delivery_info
    props = e.properties
    embed = e.embed
    return (
        type(e.task_id) is str
        and e.task_id != ""
        and type(e.task_name) is str
        and e.task_name != ""
        and type(e.args) in (list, tuple)
        and type(e.kwargs) is dict
        and type(e.headers) is dict
        and type(props) is dict
        and type(info) is dict
        and type(e.extra) is dict
        and (not e.kwargs or {*map(type, e.kwargs)} <= _ONLY_STR)
        and type(e.exc_type) is str
        and type(e.exc_message) is str
        and type(e.traceback) is str
        and type(e.hostname) is str
        and type(e.host) is str
        and type(e.entry_id) is str
        and type(e.failed_at) in (float, int)
        and math.isfinite(e.failed_at)
        and type(e.restores) is int
        and e.restores >= 0
        and type(e.version) is int
        and type(info.get("exchange")) in _NONE_OR_STR
        and type(info.get("routing_key")) in _NONE_OR_STR
        and type(info.get("queue")) in _NONE_OR_STR
        and type(props.get("priority")) in _NONE_OR_INT
        and type(props.get("delivery_mode")) in _NONE_OR_INT
        and (
            embed is None
            or (
                type(embed) is dict
                and type(embed.get("callbacks")) in _NONE_OR_LIST
                and type(embed.get("errbacks")) in _NONE_OR_LIST
                and type(embed.get("chain")) in _NONE_OR_LIST
                and type(embed.get("chord")) in _NONE_OR_DICT
            )
        )
    )


def _first_problem(entry: DumpEntry) -> str | None:
    for name in ("task_id", "task_name"):
        value = getattr(entry, name)
        if not isinstance(value, str) or not value:
            return f"{name}: expected a non-empty string, got {_kind(value)}"
    if not isinstance(entry.args, (list, tuple)):
        return f"args: expected a list, got {_kind(entry.args)}"
    for name in _DICT_FIELDS:
        value = getattr(entry, name)
        if not isinstance(value, dict):
            return f"{name}: expected an object, got {_kind(value)}"
    if any(not isinstance(key, str) for key in entry.kwargs):
        return "kwargs: expected string keys"
    for name in _STR_FIELDS:
        value = getattr(entry, name)
        if not isinstance(value, str):
            return f"{name}: expected a string, got {_kind(value)}"
    failed_at = entry.failed_at
    if not (_is_int(failed_at) or isinstance(failed_at, float)) or not math.isfinite(failed_at):
        return f"failed_at: expected a Unix time, got {_kind(failed_at)}"
    if not _is_int(entry.restores) or entry.restores < 0:
        return f"restores: expected an integer >= 0, got {_kind(entry.restores)}"
    if not _is_int(entry.version):
        return f"version: expected an integer, got {_kind(entry.version)}"
    for key in _DELIVERY_KEYS:
        value = entry.delivery_info.get(key)
        if value is not None and not isinstance(value, str):
            return f"delivery_info.{key}: expected a string, got {_kind(value)}"
    for key in ("priority", "delivery_mode"):
        value = entry.properties.get(key)
        if value is not None and not _is_int(value):
            return f"properties.{key}: expected an integer, got {_kind(value)}"
    return _embed_problem(entry.embed)


def _embed_problem(embed: Any) -> str | None:
    if embed is None:
        return None
    if not isinstance(embed, dict):
        return f"embed: expected an object, got {_kind(embed)}"
    for key in _EMBED_LISTS:
        value = embed.get(key)
        if value is not None and not isinstance(value, list):
            return f"embed.{key}: expected a list, got {_kind(value)}"
    chord = embed.get("chord")
    if chord is not None and not isinstance(chord, dict):
        return f"embed.chord: expected an object, got {_kind(chord)}"
    return None


def quarantined_entry(store_url: str, entry: DumpEntry, reason: str) -> QuarantinedDump:
    """How a malformed entry is reported next to the store's own quarantined dumps."""
    task = repr(entry.task_id)[:80]
    return QuarantinedDump(f"{store_url} entry {entry.entry_id} (task {task})", reason)


def split_valid(
    store_url: str, entries: Iterable[DumpEntry]
) -> tuple[list[DumpEntry], list[QuarantinedDump]]:
    """Well-formed entries, and the others reported as quarantined."""
    good: list[DumpEntry] = []
    bad: list[QuarantinedDump] = []
    for entry in entries:
        problem = entry_problem(entry)
        if problem is None:
            good.append(entry)
        else:
            bad.append(quarantined_entry(store_url, entry, problem))
    return good, bad
