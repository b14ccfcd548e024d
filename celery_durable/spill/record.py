"""The spill record: one Kombu message exactly as a producer published it.

A record is stored *before* routing (exchange and routing key as given), with the
declarations the message needs, so the drainer can declare and route it later on
a broker that may have forgotten everything.  The byte format (version, CRC32,
binary ``created``, msgpack metadata, raw body; never pickle) is defined by
:func:`encode` / :func:`decode` below.  Records of format 1 (JSON metadata) are
still read, and still written for metadata msgpack cannot hold.
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

import ormsgpack
from kombu.utils.json import JSONEncoder, object_hook

from ..exceptions import CorruptRecord, VersionMismatch

__all__ = ["FORMAT_VERSION", "SpillRecord", "decode", "encode"]

#: Byte format written (first byte of every value): 2 has msgpack metadata.
FORMAT_VERSION = 2
#: Format 1: the same frame with JSON metadata.  Read, and written as the
#: fallback for metadata msgpack cannot hold (integers beyond 64 bits).
JSON_VERSION = 1

# version (1) | CRC32 (4) of everything after it | metadata length (4) | created (8, double)
# | metadata | body.  ``created`` is binary because repr() of a float was a
# quarter of the JSON encoding time.
_HEAD = struct.Struct(">BI")
_TAIL = struct.Struct(">Id")
_HEADER_SIZE = _HEAD.size + _TAIL.size
# Metadata is msgpack (format 2): the profile of ``SpillStore.append`` with
# Celery's ~20 headers showed JSON encoding as the largest cost after
# LevelDB's own put (3.8 us of ~12 us; ormsgpack: ~0.6 us), and decoding is
# 2-3x faster too.  Types it is told to pass through (datetime, date, time,
# UUID, integers beyond 64 bits, dataclasses, enums) and those it does not
# know (Decimal, ``__json__``) go to Kombu's JSON registry, tagged as Kombu
# tags them in JSON, so they round-trip as in format 1; bytes are native.
# Whatever ormsgpack refuses (a key that is not a str, a big integer, a lone
# surrogate) is written as format 1, which converts or refuses it as before.
_KOMBU = JSONEncoder(separators=(",", ":"), check_circular=False)
_PACK_OPTIONS = (
    ormsgpack.OPT_PASSTHROUGH_DATETIME
    | ormsgpack.OPT_PASSTHROUGH_UUID
    | ormsgpack.OPT_PASSTHROUGH_BIG_INT
    | ormsgpack.OPT_PASSTHROUGH_DATACLASS
    | ormsgpack.OPT_PASSTHROUGH_ENUM
)
_TYPE_MARK = b"__type__"  # in the metadata of any tagged value
_packb = ormsgpack.packb
_default = _KOMBU.default

# Format 1's JSON encoder and decoders, built once (``kombu.utils.json.dumps``/
# ``loads`` build a new one per call, which costs more than a small header).
_c_encode: Callable[[Any, int], Any] | None = (
    c_make_encoder(
        None, _KOMBU.default, encode_basestring_ascii, None, ":", ",", False, False, True
    )
    if c_make_encoder is not None
    else None
)
_PLAIN = json.JSONDecoder()
_TYPED = json.JSONDecoder(object_hook=object_hook)
_JSON_TYPE_MARK = b'"__type__"'


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
    """Serialise ``record``: version byte, CRC32, lengths and ``created``, metadata, body.

    Metadata is msgpack (format 2), or JSON (format 1) when msgpack cannot hold
    it; either way Kombu's type registry tags datetimes, UUIDs and Decimals so
    they round-trip.  The CRC covers every byte after itself.
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
    version = FORMAT_VERSION
    try:
        meta = _packb(fields, default=_default, option=_PACK_OPTIONS)
    except TypeError:  # ormsgpack.MsgpackEncodeError: format 1 holds it or raises as before
        version, meta = JSON_VERSION, _json_meta(fields)
    body = record.body
    if type(body) is not bytes:
        body = bytes(body)
    # The CRC covers everything after itself: length, created, metadata, body.
    # (One CRC over the concatenated frame beats three chained ones and a join.)
    frame = _TAIL.pack(len(meta), record.created) + meta + body
    return _HEAD.pack(version, zlib.crc32(frame)) + frame


def _json_meta(fields: list[Any]) -> bytes:
    return ("".join(_c_encode(fields, 0)) if _c_encode else _KOMBU.encode(fields)).encode()


def decode(data: bytes) -> SpillRecord:
    """Parse bytes written by :func:`encode` (format 2, or format 1 of earlier releases).

    Raises :class:`VersionMismatch` for another format version and
    :class:`CorruptRecord` for anything else that is wrong (short, bad CRC, bad metadata).
    """
    if len(data) < _HEADER_SIZE:
        raise CorruptRecord(f"spill record too short ({len(data)} bytes)")
    version, crc = _HEAD.unpack_from(data)
    if version != FORMAT_VERSION and version != JSON_VERSION:
        raise VersionMismatch(
            f"spill record format version {version}, this code reads "
            f"{JSON_VERSION} and {FORMAT_VERSION}"
        )
    if zlib.crc32(memoryview(data)[_HEAD.size :]) != crc:
        raise CorruptRecord("spill record fails its CRC32 check")
    meta_len, created = _TAIL.unpack_from(data, _HEAD.size)
    end = _HEADER_SIZE + meta_len
    if end > len(data):
        raise CorruptRecord("spill record metadata length exceeds the record")
    raw = data[_HEADER_SIZE:end]
    try:
        if version == FORMAT_VERSION:
            fields = _unpack(raw)
        else:
            # Kombu's type hook is a Python call per dict: only pay it when a
            # tagged value ({"__type__": ...}) is present.
            fields = (_TYPED if _JSON_TYPE_MARK in raw else _PLAIN).decode(raw.decode())
        exchange, routing_key, ctype, cenc, headers, properties, decls = fields
    except (ValueError, TypeError) as exc:
        # JSONDecodeError, UnicodeError and ormsgpack.MsgpackDecodeError are ValueErrors.
        raise CorruptRecord(f"spill record metadata cannot be decoded: {exc}") from exc
    # Positional: keyword arguments cost a quarter of a decode.
    return SpillRecord(
        data[end:], exchange, routing_key, ctype, cenc, headers, properties, decls, created
    )


def _unpack(raw: bytes) -> Any:
    fields = ormsgpack.unpackb(raw)
    if _TYPE_MARK in raw:  # rare: revive Kombu-tagged values, innermost first
        fields = _revive(fields)
    return fields


def _revive(value: Any) -> Any:
    if type(value) is dict:
        return object_hook({k: _revive(v) for k, v in value.items()})
    if type(value) is list:
        return [_revive(v) for v in value]
    return value
