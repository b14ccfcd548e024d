"""The shortcuts a restore takes give exactly what the long way gives.

Each shortcut (JSON decoding without Kombu's object hook, the dataclass-free
``DumpEntry.from_dict``, the one-expression validity check, cached ISO times,
bulk uuid4 tags, header-only deletes, unsynced tombstones) is checked against
the code it stands in for.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from kombu.serialization import loads as kombu_loads
from kombu.utils.json import dumps

from celery_durable.dlq import open_store
from celery_durable.dlq.base import DumpEntry
from celery_durable.dlq.codec import _JSON_HEAD, Codec
from celery_durable.dlq.history import _iso, _iso_uncached
from celery_durable.dlq.stores.filestore import FileStore
from celery_durable.dlq.validate import _first_problem, _plainly_valid, entry_problem
from celery_durable.restore.envelope import json_text, uuid4_strings
from tests.unit.restore_memstore import make_entry


def _slow_decode(payload: bytes) -> Any:
    return kombu_loads(payload[len(_JSON_HEAD) :], "application/json", "utf-8", accept=None)


@pytest.mark.parametrize(
    "args",
    [
        [1, "plain"],
        ['ü 日本 \n\t"quoted" \\ back'],
        [datetime.datetime(2026, 1, 2, 3, 4, 5), uuid.UUID(int=7), decimal.Decimal("1.5")],
        [b"bytes", {"__type__": "not a marker", "x": 1}],
        [float("inf"), 1e300, -0.0, 2**70],
    ],
)
def test_decoding_without_the_hook_gives_what_kombu_gives(args: list[Any]) -> None:
    codec = Codec()
    entry = make_entry("t1", args=args)
    payload = codec.encode(entry)
    assert payload.startswith(_JSON_HEAD)
    assert codec.decode(payload) == DumpEntry.from_dict(_slow_decode(payload))


def test_an_escaped_type_marker_still_goes_through_kombus_hook() -> None:
    codec = Codec()
    payload = codec.encode(make_entry("t2"))
    when = datetime.datetime(2026, 1, 2, 3, 4, 5)
    marker = dumps(when).replace('"__type__"', '"\\u005f_type__"').encode()
    payload = payload.replace(b'"k": "v"', b'"k": ' + marker)
    decoded = codec.decode(payload)
    assert decoded.kwargs["k"] == when  # Kombu's hook turned it into a datetime
    assert decoded == DumpEntry.from_dict(_slow_decode(payload))


def test_a_reregistered_json_decoder_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    from kombu.serialization import registry

    seen: list[Any] = []

    def mine(data: Any) -> Any:
        seen.append(data)
        return json.loads(data)

    monkeypatch.setitem(registry._decoders, "application/json", mine)
    codec = Codec()
    codec.decode(codec.encode(make_entry("t3")))
    assert seen


def test_fast_from_dict_is_the_dataclass_constructor() -> None:
    full = make_entry("t4").to_dict()
    required = {
        k: v
        for k, v in full.items()
        if k not in ("restores", "entry_id", "version", "extra", "host")
    }
    for data in (full, required, {**full, "unknown": 1}):
        built = DumpEntry.from_dict(dict(data))
        known = {k: v for k, v in data.items() if k in DumpEntry.__dataclass_fields__}
        assert built == DumpEntry(**known)
        assert built.to_dict() == DumpEntry(**known).to_dict()
    a, b = DumpEntry.from_dict(dict(required)), DumpEntry.from_dict(dict(required))
    assert a.extra == {} and a.extra is not b.extra  # a fresh default per entry
    with pytest.raises(TypeError):
        DumpEntry.from_dict({"task_id": "x"})
    defaults = {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        for f in dataclasses.fields(DumpEntry)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }
    assert {k: getattr(a, k) for k in defaults} == defaults


class _Str(str):
    pass


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"task_id": ""},
        {"task_id": _Str("sub")},
        {"args": (1, 2)},
        {"args": "abc"},
        {"kwargs": {1: "x"}},
        {"failed_at": float("nan")},
        {"failed_at": True},
        {"failed_at": 5},
        {"restores": -1},
        {"restores": True},
        {"version": 1.0},
        {"delivery_info": {"exchange": 1}},
        {"properties": {"priority": True}},
        {"embed": None},
        {"embed": {"chain": ()}},
        {"embed": {"chord": []}},
        {"host": None},
        {"extra": []},
    ],
)
def test_the_quick_validity_check_never_accepts_what_the_rules_refuse(
    change: dict[str, Any],
) -> None:
    entry = make_entry("t5")
    for key, value in change.items():
        setattr(entry, key, value)
    if _plainly_valid(entry):
        assert _first_problem(entry) is None
    assert entry_problem(entry) == _first_problem(entry)


@pytest.mark.parametrize(
    "ts",
    [
        0.0,
        1.0,
        1795455581.0,
        1795455581.4999995,
        1795455581.9999994,
        1795455581.9999996,
        5,
        -1.5,
        1e12,
        "x",
    ],
)
def test_cached_iso_times_are_the_uncached_ones(ts: Any) -> None:
    for _ in range(2):  # the second one from the cache
        assert _iso(ts) == _iso_uncached(ts)


def test_bulk_tags_are_random_version_4_uuids() -> None:
    tags = uuid4_strings(300)
    assert len(set(tags)) == 300
    for tag in tags:
        parsed = uuid.UUID(tag)
        assert str(parsed) == tag and parsed.version == 4 and parsed.variant == uuid.RFC_4122


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2.5, None, True], "ü": "日本", "t": (1, 2)},
        {"when": datetime.datetime(2026, 1, 2), "id": uuid.UUID(int=3), "b": b"x"},
    ],
)
def test_json_text_is_kombus_dumps(value: Any) -> None:
    assert json_text(value) == dumps(value)
    with pytest.raises(TypeError):
        json_text({"x": object()})


def _file_store(tmp_path: Path) -> FileStore:
    store = open_store((tmp_path / "dlq").as_uri())
    assert isinstance(store, FileStore)
    return store


def test_deleting_the_last_records_drops_the_segment_without_a_tombstone(tmp_path: Path) -> None:
    store = _file_store(tmp_path)
    store.write([make_entry(f"d{i}") for i in range(4)])
    ids = [e.entry_id for e in store.entries()]
    with store.batched_deletes():
        assert store.delete(ids[:2]) == 2
        assert len(list(store.deleted_dir.iterdir())) == 1
        assert [e.task_id for e in open_store(store.url).entries()] == ["d2", "d3"]  # seen at once
        assert store.delete(ids[2:]) == 2
    assert list(store.segments_dir.iterdir()) == []
    assert list(store.deleted_dir.iterdir()) == []
    assert store.delete(ids) == 0


def test_a_torn_tombstone_is_ignored_whole(tmp_path: Path) -> None:
    store = _file_store(tmp_path)
    store.write([make_entry(f"t{i}") for i in range(3)])
    stem = next(store.segments_dir.iterdir()).name.split(".")[0]
    # What a power loss can leave of a tombstone written without fsync.
    (store.deleted_dir / f"{stem}.1-1-1.del").write_bytes(b"\0\0\0\0")
    (store.deleted_dir / f"{stem}.1-1-2.del").write_text("0\n1")
    (store.deleted_dir / f"{stem}.1-1-3.del").write_text("")
    assert [e.task_id for e in store.entries()] == ["t0", "t1", "t2"]  # restored again, not lost
    (store.deleted_dir / f"{stem}.1-1-4.del").write_text("2\n")
    assert [e.task_id for e in store.entries()] == ["t0", "t1"]


def test_a_damaged_segment_emptied_by_deletes_goes_to_quarantine(tmp_path: Path) -> None:
    store = _file_store(tmp_path)
    store.write([make_entry("good"), make_entry("bad")])
    [seg] = store.segments_dir.iterdir()
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0xFF  # the last record's payload: its checksum fails
    seg.write_bytes(bytes(data))
    [good] = store.entries()
    assert store.delete([good.entry_id]) == 1
    assert len(list(store.segments_dir.iterdir())) == 1  # the damaged record lives on
    assert store.delete([good.entry_id[:-1] + "1"]) == 1  # an operator's purge
    assert list(store.segments_dir.iterdir()) == []
    assert any(p.name == seg.name for p in store.quarantine_dir.iterdir())
