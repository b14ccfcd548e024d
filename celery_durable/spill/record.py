"""The spill record: one Kombu message exactly as a producer published it.

A record is stored *before* routing (exchange and routing key as given), with the
declarations the message needs, so the drainer can declare and route it later on
a broker that may have forgotten everything.  The byte format (version, CRC32,
binary ``created``, JSON metadata, raw body; never pickle) is defined by :func:`encode` /
:func:`decode` below.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

from kombu.utils.json import JSONEncoder, object_hook

from ..exceptions import CorruptRecord, VersionMismatch

__all__ = ["FORMAT_VERSION", "SpillRecord", "decode", "encode"]

#: Byte format of a stored record (first byte of every value).
FORMAT_VERSION = 1

# version (1) | CRC32 (4) of everything after it | metadata length (4) | created (8, double)
# | metadata (JSON) | body.  ``created`` is binary because repr() of a float was a
# quarter of the JSON encoding time.
_HEAD = struct.Struct(">BI")
_TAIL = struct.Struct(">Id")
_HEADER_SIZE = _HEAD.size + _TAIL.size
# The JSON encoder and decoder are built once.  ``kombu.utils.json.dumps``/``loads``
# construct a new encoder/decoder per call, which costs more than encoding a
# small header; on the append hot path that was a third of the time.  The C
# encoder is used directly (what ``JSONEncoder.encode`` builds on every call)
# with Kombu's ``default`` so datetimes, UUIDs, Decimals and bytes round-trip.
_KOMBU = JSONEncoder(separators=(",", ":"), check_circular=False)
_c_encode: Callable[[Any, int], Any] | None = (
    c_make_encoder(
        None, _KOMBU.default, encode_basestring_ascii, None, ":", ",", False, False, True
    )
    if c_make_encoder is not None
    else None
)
_PLAIN = json.JSONDecoder()
_TYPED = json.JSONDecoder(object_hook=object_hook)
_TYPE_MARK = b'"__type__"'


@dataclass
class SpillRecord:
    """A message waiting for the broker."""

    body: bytes
    exchange: str
    routing_key: str
    content_type: str | None = None
    content_encoding: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    #: Entity declarations (``{"op": "exchange_declare"|"queue_declare"|"queue_bind", ...}``
    #: keyword arguments as passed to the channel) to replay before publishing.
    declarations: list[dict[str, Any]] = field(default_factory=list)
    #: Wall-clock time the producer published it (drain lag, oldest record age).
    created: float = field(default_factory=time.time)


def encode(record: SpillRecord) -> bytes:
    """Serialise ``record``: version byte, CRC32, lengths and ``created``, JSON metadata, body.

    Metadata goes through Kombu's JSON type registry so datetimes, UUIDs,
    Decimals and bytes inside headers/properties round-trip (tuples come back
    as lists).  The CRC covers every byte after itself.
    """
    fields = [
        record.exchange,
        record.routing_key,
        record.content_type,
        record.content_encoding,
        record.headers,
        record.properties,
        record.declarations,
    ]
    # _dumps() inlined: this is the producer's hot path.
    meta = ("".join(_c_encode(fields, 0)) if _c_encode else _KOMBU.encode(fields)).encode()
    body = record.body
    if type(body) is not bytes:
        body = bytes(body)
    # The CRC covers everything after itself: length, created, metadata, body.
    tail = _TAIL.pack(len(meta), record.created) + meta
    return b"".join((_HEAD.pack(FORMAT_VERSION, zlib.crc32(body, zlib.crc32(tail))), tail, body))


def decode(data: bytes) -> SpillRecord:
    """Parse bytes written by :func:`encode`.

    Raises :class:`VersionMismatch` for another format version and
    :class:`CorruptRecord` for anything else that is wrong (short, bad CRC, bad JSON).
    """
    if len(data) < _HEADER_SIZE:
        raise CorruptRecord(f"spill record too short ({len(data)} bytes)")
    version, crc = _HEAD.unpack_from(data)
    if version != FORMAT_VERSION:
        raise VersionMismatch(
            f"spill record format version {version}, this code reads {FORMAT_VERSION}"
        )
    if zlib.crc32(memoryview(data)[_HEAD.size :]) != crc:
        raise CorruptRecord("spill record fails its CRC32 check")
    meta_len, created = _TAIL.unpack_from(data, _HEAD.size)
    end = _HEADER_SIZE + meta_len
    if end > len(data):
        raise CorruptRecord("spill record metadata length exceeds the record")
    raw = data[_HEADER_SIZE:end]
    try:
        # Kombu's type hook is a Python call per dict: only pay it when a
        # tagged value ({"__type__": ...}) is present.
        decoder = _TYPED if _TYPE_MARK in raw else _PLAIN
        exchange, routing_key, ctype, cenc, headers, properties, decls = decoder.decode(
            raw.decode()
        )
    except (ValueError, TypeError) as exc:  # JSONDecodeError, UnicodeError are ValueErrors
        raise CorruptRecord(f"spill record metadata cannot be decoded: {exc}") from exc
    return SpillRecord(
        body=data[end:],
        exchange=exchange,
        routing_key=routing_key,
        content_type=ctype,
        content_encoding=cenc,
        headers=headers,
        properties=properties,
        declarations=decls,
        created=created,
    )
