"""The spill record byte format: version, CRC32, msgpack (or JSON) metadata, raw body."""

from __future__ import annotations

import datetime
import decimal
import struct
import uuid

import ormsgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celery_durable.exceptions import CorruptRecord, VersionMismatch
from celery_durable.spill import SpillRecord, decode, encode
from celery_durable.spill.record import FORMAT_VERSION, JSON_VERSION


def rich_record() -> SpillRecord:
    return SpillRecord(
        body=bytes(range(256)) * 2,
        exchange="celery",
        routing_key="celery.high",
        content_type="application/json",
        content_encoding="utf-8",
        headers={
            "id": str(uuid.uuid4()),
            "eta": datetime.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc),
            "day": datetime.date(2026, 1, 2),
            "uuid": uuid.uuid4(),
            "price": decimal.Decimal("1.10"),
            "raw": b"\xff\x00binary",
            "text_bytes": b"plain",
            "nested": {"list": [1, 2.5, None, True, "é"]},
        },
        properties={"delivery_mode": 2, "priority": 9, "delivery_info": {"exchange": "x"}},
        declarations=[{"op": "queue_declare", "queue": "celery", "durable": True}],
        created=1234.5,
    )


def test_round_trip_keeps_every_field_and_type() -> None:
    record = rich_record()
    assert decode(encode(record)) == record


def test_tuples_come_back_as_lists() -> None:
    record = SpillRecord(body=b"", exchange="", routing_key="q", headers={"t": (1, 2)})
    assert decode(encode(record)).headers == {"t": [1, 2]}


def test_format_starts_with_version_then_crc_and_carries_raw_body() -> None:
    record = SpillRecord(body=b"BODY-BYTES", exchange="e", routing_key="r")
    data = encode(record)
    assert data[0] == FORMAT_VERSION
    assert data.endswith(b"BODY-BYTES")
    assert b"pickle" not in data and b"\x80\x04" not in data[:2]


def test_every_flipped_byte_is_detected() -> None:
    data = encode(SpillRecord(body=b"x" * 40, exchange="e", routing_key="r", headers={"a": 1}))
    for i in range(1, len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0x01
        with pytest.raises(CorruptRecord):
            decode(bytes(damaged))


def test_other_version_raises_version_mismatch() -> None:
    data = bytearray(encode(SpillRecord(body=b"x", exchange="e", routing_key="r")))
    data[0] = FORMAT_VERSION + 1
    with pytest.raises(VersionMismatch, match="version 3"):
        decode(bytes(data))


@pytest.mark.parametrize("data", [b"", b"\x01\x00", b"\x01" + b"\x00" * 7])
def test_short_input_is_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptRecord):
        decode(data)


def raw_record(meta: bytes, body: bytes = b"b", version: int = JSON_VERSION) -> bytes:
    """Bytes in the record format with a *valid* CRC over arbitrary metadata."""
    import zlib

    tail = struct.pack(">Id", len(meta), 1.0)
    crc = zlib.crc32(body, zlib.crc32(meta, zlib.crc32(tail)))
    return struct.pack(">BI", version, crc) + tail + meta + body


def test_raw_record_helper_matches_the_format() -> None:
    record = decode(raw_record(b'["e","r",null,null,{},{},[]]'))
    assert (record.exchange, record.body, record.created) == ("e", b"b", 1.0)
    packed = ormsgpack.packb(["e", "r", None, None, {}, {}, []])
    record = decode(raw_record(packed, version=FORMAT_VERSION))
    assert (record.exchange, record.body, record.created) == ("e", b"b", 1.0)


def test_valid_crc_over_bad_json_is_corrupt() -> None:
    with pytest.raises(CorruptRecord, match="decoded"):
        decode(raw_record(b"[not json"))


@pytest.mark.parametrize(
    "meta", [b"\xc1", b"\x97\xa1e", b"\xa3\xff\xfe\xfd", ormsgpack.packb([1, 2]), b""]
)
def test_valid_crc_over_bad_msgpack_is_corrupt(meta: bytes) -> None:
    with pytest.raises(CorruptRecord, match="decoded"):
        decode(raw_record(meta, version=FORMAT_VERSION))


def test_valid_crc_over_wrong_shape_is_corrupt() -> None:
    with pytest.raises(CorruptRecord):
        decode(raw_record(b"[1,2]"))


# Written by celery-durable 0.1 (format 1, JSON metadata) before format 2.
FORMAT_1_RECORD = (
    b"\x01\x06\xfco\xd3\x00\x00\x02\tA\xd9T\xfc@\x10\x00\x00"
    b'["celery","celery.high","application/json","utf-8",'
    b'{"id":"6f1c1a43-0d0e-4d5b-9a65-8f0d2c1e0b11",'
    b'"eta":{"__type__":"datetime","__value__":"2026-01-02T03:04:05.000006+00:00"},'
    b'"uuid":{"__type__":"uuid","__value__":{"hex":"12345678123456781234567812345678"}},'
    b'"price":{"__type__":"decimal","__value__":"1.10"},'
    b'"raw":{"__type__":"base64","__value__":"/wA="},"retries":0,"timelimit":[null,null]},'
    b'{"delivery_mode":2,"delivery_info":{"exchange":"","routing_key":"celery"}},'
    b'[{"op":"queue_declare","queue":"celery","durable":true}]]'
    b"\x00\xffbody"
)


def test_a_record_written_in_format_1_still_reads() -> None:
    record = decode(FORMAT_1_RECORD)
    assert record == SpillRecord(
        body=b"\x00\xffbody",
        exchange="celery",
        routing_key="celery.high",
        content_type="application/json",
        content_encoding="utf-8",
        headers={
            "id": "6f1c1a43-0d0e-4d5b-9a65-8f0d2c1e0b11",
            "eta": datetime.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc),
            "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
            "price": decimal.Decimal("1.10"),
            "raw": b"\xff\x00",
            "retries": 0,
            "timelimit": [None, None],
        },
        properties={
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": "celery"},
        },
        declarations=[{"op": "queue_declare", "queue": "celery", "durable": True}],
        created=1_700_000_000.25,
    )
    # ...and a flipped byte in it is still caught.
    damaged = bytearray(FORMAT_1_RECORD)
    damaged[100] ^= 0x01
    with pytest.raises(CorruptRecord):
        decode(bytes(damaged))


def test_new_records_are_format_2_with_msgpack_metadata() -> None:
    data = encode(rich_record())
    assert data[0] == FORMAT_VERSION == 2
    assert b'"__type__"' not in data  # not JSON


@pytest.mark.parametrize(
    ("headers", "decoded"),
    [
        ({"big": 2**70}, {"big": 2**70}),  # beyond 64 bits
        ({1: "int key"}, {"1": "int key"}),  # JSON's key conversion, as before
        ({"s": "\ud800"}, {"s": "\ud800"}),  # a lone surrogate
    ],
)
def test_metadata_msgpack_refuses_is_written_as_format_1(
    headers: dict[object, object], decoded: dict[str, object]
) -> None:
    data = encode(SpillRecord(body=b"x", exchange="", routing_key="q", headers=headers))
    assert data[0] == JSON_VERSION
    assert decode(data).headers == decoded


def test_metadata_neither_format_holds_raises_type_error_as_before() -> None:
    with pytest.raises(TypeError):
        encode(SpillRecord(body=b"", exchange="", routing_key="q", headers={(1, 2): "x"}))
    with pytest.raises(TypeError):
        encode(SpillRecord(body=b"", exchange="", routing_key="q", headers={"o": object()}))


def test_a_user_dict_shaped_like_a_tag_reads_as_in_format_1() -> None:
    # Kombu's JSON revives {"__type__": ..., "__value__": ...} wherever it is;
    # format 2 does the same, so a drained message reads as a direct one.
    headers = {"x": [{"__type__": "decimal", "__value__": "2.5"}], "plain": {"a": 1}}
    record = SpillRecord(body=b"", exchange="", routing_key="q", headers=headers)
    assert decode(encode(record)).headers == {"x": [decimal.Decimal("2.5")], "plain": {"a": 1}}


def test_valid_crc_with_a_length_past_the_end_is_corrupt() -> None:
    data = bytearray(raw_record(b"[]"))
    import zlib

    data[5:9] = struct.pack(">I", 10_000)
    data[1:5] = struct.pack(">I", zlib.crc32(bytes(data[5:])))
    with pytest.raises(CorruptRecord, match="length"):
        decode(bytes(data))


def format_1(record: SpillRecord) -> bytes:
    """``record`` as the format-1 code wrote it (JSON metadata through Kombu's registry)."""
    from celery_durable.spill.record import _json_meta

    fields = [
        record.exchange,
        record.routing_key,
        record.content_type,
        record.content_encoding,
        record.headers,
        record.properties,
        record.declarations,
    ]
    return raw_record(_json_meta(fields), record.body)


_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.datetimes(timezones=st.none() | st.just(datetime.timezone.utc))
    | st.dates()
    | st.uuids()
    | st.decimals(allow_nan=False, allow_infinity=False, places=3)
)
_values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(headers=st.dictionaries(st.text(max_size=12), _values, max_size=8))
def test_format_2_reads_back_exactly_what_format_1_did(headers: dict[str, object]) -> None:
    record = SpillRecord(body=b"b", exchange="", routing_key="q", headers=headers)
    expected = decode(format_1(record)).headers
    assert decode(encode(record)).headers == expected
