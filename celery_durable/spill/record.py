"""The spill record: one Kombu message exactly as a producer published it.

A record is stored *before* routing (exchange and routing key as given), with the
declarations the message needs, so the drainer can declare and route it later on
a broker that may have forgotten everything.  The byte format (version, CRC32,
JSON metadata, raw body; never pickle) is defined by :func:`encode` /
:func:`decode` below.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from kombu.utils.json import JSONEncoder, object_hook

from ..exceptions import CorruptRecord, VersionMismatch

__all__ = ["FORMAT_VERSION", "SpillRecord", "decode", "encode"]

#: Byte format of a stored record (first byte of every value).
FORMAT_VERSION = 1

# version (1 byte) | CRC32 of everything after it (4) | metadata length (4) | metadata | body
_HEADER = struct.Struct(">BII")
_CRC_AT = struct.Struct(">I")
# One encoder, built once: constructing a JSONEncoder per record (what
# ``kombu.utils.json.dumps`` does) costs more than encoding a small header.
_ENCODER = JSONEncoder(separators=(",", ":"), check_circular=False)


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
    """Serialise ``record``: version byte, CRC32, JSON metadata, raw body.

    Metadata goes through Kombu's JSON encoder so datetimes, UUIDs, Decimals and
    bytes inside headers/properties round-trip (tuples come back as lists).
    """
    meta = _ENCODER.encode(
        [
            record.exchange,
            record.routing_key,
            record.content_type,
            record.content_encoding,
            record.headers,
            record.properties,
            record.declarations,
            record.created,
        ]
    ).encode()
    body = record.body
    if not isinstance(body, bytes):
        body = bytes(body)
    length = _CRC_AT.pack(len(meta))
    crc = zlib.crc32(body, zlib.crc32(meta, zlib.crc32(length)))
    return b"".join((_HEADER.pack(FORMAT_VERSION, crc, len(meta)), meta, body))


def decode(data: bytes) -> SpillRecord:
    """Parse bytes written by :func:`encode`.

    Raises :class:`VersionMismatch` for another format version and
    :class:`CorruptRecord` for anything else that is wrong (short, bad CRC, bad JSON).
    """
    if len(data) < _HEADER.size:
        raise CorruptRecord(f"spill record too short ({len(data)} bytes)")
    version, crc, meta_len = _HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise VersionMismatch(
            f"spill record format version {version}, this code reads {FORMAT_VERSION}"
        )
    view = memoryview(data)
    if zlib.crc32(view[5:]) != crc:
        raise CorruptRecord("spill record fails its CRC32 check")
    end = _HEADER.size + meta_len
    if end > len(data):
        raise CorruptRecord("spill record metadata length exceeds the record")
    try:
        meta = json.loads(bytes(view[_HEADER.size : end]), object_hook=object_hook)
        (exchange, routing_key, ctype, cenc, headers, properties, decls, created) = meta
        return SpillRecord(
            body=bytes(view[end:]),
            exchange=exchange,
            routing_key=routing_key,
            content_type=ctype,
            content_encoding=cenc,
            headers=headers,
            properties=properties,
            declarations=decls,
            created=created,
        )
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise CorruptRecord(f"spill record metadata cannot be decoded: {exc}") from exc
