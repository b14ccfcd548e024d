"""The drainer's publish frames are byte for byte what py-amqp writes for the same message."""

from __future__ import annotations

import datetime
import decimal
from typing import Any

import pytest
from amqp import spec
from amqp.method_framing import frame_writer
from amqp.serialization import dumps
from hypothesis import given, settings
from hypothesis import strategies as st

from celery_durable.spill import SpillRecord
from celery_durable.transport.amqp_frames import FrameEncoder, record_message


class _Sink:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: Any) -> None:
        self.parts.append(bytes(data))


class _Conn:
    bytes_sent = 0

    def __init__(self, frame_max: int) -> None:
        self.frame_max = frame_max


def py_amqp_frames(record: SpillRecord, channel_id: int, frame_max: int) -> bytes:
    """What py-amqp's basic_publish writes for ``record`` (the reference)."""
    sink = _Sink()
    write = frame_writer(_Conn(frame_max), sink)
    args = dumps("Bssbb", (0, record.exchange, record.routing_key, False, False))
    write(1, channel_id, spec.Basic.Publish, args, record_message(record))
    return b"".join(sink.parts)


def ours(record: SpillRecord, channel_id: int, frame_max: int) -> bytes:
    out: list[bytes] = []
    FrameEncoder(channel_id, frame_max).encode(record, out)
    return b"".join(out)


names = st.text(max_size=20)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.binary(max_size=30)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(names, inner, max_size=4)
    | st.tuples(inner, inner),
    max_leaves=12,
)
octets = st.integers(min_value=0, max_value=255)
short_strings = st.text(max_size=40)
properties = st.fixed_dictionaries(
    {},
    optional={
        "delivery_mode": octets,
        "priority": octets,
        "correlation_id": short_strings,
        "reply_to": short_strings,
        "expiration": short_strings,
        "message_id": short_strings,
        "timestamp": st.integers(min_value=0, max_value=2**64 - 1),
        "type": short_strings,
        "user_id": short_strings,
        "app_id": short_strings,
        "cluster_id": short_strings,
    },
)
records = st.builds(
    SpillRecord,
    body=st.binary(max_size=3000),
    exchange=st.text(max_size=30),
    routing_key=st.text(max_size=30),
    content_type=st.none() | short_strings,
    content_encoding=st.none() | short_strings,
    headers=st.dictionaries(names, values, max_size=8),
    properties=properties,
)


@settings(max_examples=400, deadline=None)
@given(record=records, channel_id=st.integers(1, 65535), frame_max=st.sampled_from([4096, 131072]))
def test_same_bytes_as_py_amqp(record: SpillRecord, channel_id: int, frame_max: int) -> None:
    assert ours(record, channel_id, frame_max) == py_amqp_frames(record, channel_id, frame_max)


def celery_like() -> SpillRecord:
    return SpillRecord(
        body=b'[[2, 2], {}, {"callbacks": null, "errbacks": null, "chain": null}]',
        exchange="",
        routing_key="celery",
        content_type="application/json",
        content_encoding="utf-8",
        headers={
            "lang": "py",
            "task": "proj.add",
            "id": "d6f0c7a8-2a59-4f7e-9a38-3f4f3f1f0e7e",
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": "d6f0c7a8-2a59-4f7e-9a38-3f4f3f1f0e7e",
            "parent_id": None,
            "argsrepr": "(2, 2)",
            "kwargsrepr": "{}",
            "origin": "gen1234@host",
            "ignore_result": False,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        properties={
            "correlation_id": "d6f0c7a8-2a59-4f7e-9a38-3f4f3f1f0e7e",
            "reply_to": "3b0a8c2e-1c5e-3a3e-9c7c-6b3b2f1e0d9c",
            "delivery_mode": 2,
            "priority": 0,
            "body_encoding": "base64",  # Kombu's own keys: not AMQP properties
            "delivery_tag": "a1b2",
            "delivery_info": {"exchange": "", "routing_key": "celery"},
        },
    )


def test_a_celery_task_message() -> None:
    record = celery_like()
    assert ours(record, 1, 131072) == py_amqp_frames(record, 1, 131072)


@pytest.mark.parametrize(
    "header",
    [
        decimal.Decimal("1.25"),
        datetime.datetime(2026, 1, 2, 3, 4, 5),
        True,  # a bool is an int subclass: py-amqp tests bool first
        type("Str", (str,), {})("a str subclass"),
    ],
)
def test_values_py_amqp_encodes_its_own_way(header: Any) -> None:
    record = celery_like()
    record.headers["x"] = header
    assert ours(record, 1, 131072) == py_amqp_frames(record, 1, 131072)


@pytest.mark.parametrize(
    "record",
    [
        SpillRecord(body=b"x", exchange="", routing_key="q", headers={"bad": object()}),
        SpillRecord(body=b"x", exchange="", routing_key="q", properties={"type": "t" * 300}),
        SpillRecord(body=b"x", exchange="", routing_key="q", properties={"priority": 256}),
    ],
    ids=["unencodable header", "long shortstr", "octet out of range"],
)
def test_what_py_amqp_refuses_is_refused_alike(record: SpillRecord) -> None:
    with pytest.raises(Exception) as reference:
        py_amqp_frames(record, 1, 131072)
    with pytest.raises(type(reference.value)):
        ours(record, 1, 131072)


def test_a_big_body_is_split_as_py_amqp_splits_it() -> None:
    record = SpillRecord(body=b"b" * 10_000, exchange="ex", routing_key="rk")
    assert ours(record, 7, 4096) == py_amqp_frames(record, 7, 4096)
