"""The spill record byte format: version, CRC32, JSON metadata, raw body."""

from __future__ import annotations

import datetime
import decimal
import struct
import uuid

import pytest

from celery_durable.exceptions import CorruptRecord, VersionMismatch
from celery_durable.spill import SpillRecord, decode, encode
from celery_durable.spill.record import FORMAT_VERSION


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
    with pytest.raises(VersionMismatch, match="version"):
        decode(bytes(data))


@pytest.mark.parametrize("data", [b"", b"\x01\x00", b"\x01" + b"\x00" * 7])
def test_short_input_is_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptRecord):
        decode(data)


def raw_record(meta: bytes, body: bytes = b"b") -> bytes:
    """Bytes in the record format with a *valid* CRC over arbitrary metadata."""
    import zlib

    tail = struct.pack(">Id", len(meta), 1.0)
    crc = zlib.crc32(body, zlib.crc32(meta, zlib.crc32(tail)))
    return struct.pack(">BI", FORMAT_VERSION, crc) + tail + meta + body


def test_raw_record_helper_matches_the_format() -> None:
    record = decode(raw_record(b'["e","r",null,null,{},{},[]]'))
    assert (record.exchange, record.body, record.created) == ("e", b"b", 1.0)


def test_valid_crc_over_bad_json_is_corrupt() -> None:
    with pytest.raises(CorruptRecord, match="decoded"):
        decode(raw_record(b"[not json"))


def test_valid_crc_over_wrong_shape_is_corrupt() -> None:
    with pytest.raises(CorruptRecord):
        decode(raw_record(b"[1,2]"))


def test_valid_crc_with_a_length_past_the_end_is_corrupt() -> None:
    data = bytearray(raw_record(b"[]"))
    import zlib

    data[5:9] = struct.pack(">I", 10_000)
    data[1:5] = struct.pack(">I", zlib.crc32(bytes(data[5:])))
    with pytest.raises(CorruptRecord, match="length"):
        decode(bytes(data))
