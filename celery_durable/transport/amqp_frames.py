"""``basic.publish`` frames for spilled records, byte for byte what py-amqp writes.

The drainer forwards tens of thousands of records a second; py-amqp's generic
serializer (a format string walked per value, a ``BytesIO`` per table, an
``amqp.Message`` per record) was half of the drainer's CPU time per message in
the profile (``dumps``, ``_serialize_properties``, ``_write_frame``,
``record_message``).  Here the method frame of a route is built once per
batch, and the content header straight from the record's fields.  Values of
types py-amqp encodes in some other way (``Decimal``, ``datetime``, subclasses
of the plain types) and anything it would refuse send the whole header through
py-amqp's own serializer, so the bytes (and the errors) stay py-amqp's.  A unit test
compares the two on generated messages.
"""

from __future__ import annotations

from struct import Struct
from typing import Any

import amqp
from amqp import spec
from amqp.serialization import dumps

from ..spill import SpillRecord

__all__ = ["FrameEncoder", "record_message"]

_FRAME_HEAD = Struct(">BHI")  # type, channel, payload size
_CONTENT_HEAD = Struct(">HHQ")  # class id, weight, body size
_FRAME_END = b"\xce"
_PUBLISH = _CONTENT_HEAD.pack(*spec.Basic.Publish, 0)[:4]  # class id and method id
_BASIC_CLASS = spec.Basic.Publish[0]
_SHORT = Struct("B")
_U32 = Struct(">I")
_ITEM_STR = Struct(">cI")
_ITEM_INT = Struct(">ci")
_ITEM_LONG = Struct(">cq")
_ITEM_FLOAT = Struct(">cd")
_BYTE = Struct("B")
_U64 = Struct(">Q")

#: Properties that are record fields of their own.
_OWN_FIELDS = ("content_type", "content_encoding", "application_headers")
#: The content header's properties after the headers table, in py-amqp's order.
_REST = tuple(amqp.Message.PROPERTIES[3:])


class _Fallback(Exception):
    """A value this encoder leaves to py-amqp."""


def record_message(record: SpillRecord) -> amqp.Message:
    """The py-amqp message for a record (body, headers and properties exactly as published)."""
    properties = {k: v for k, v in record.properties.items() if k not in _OWN_FIELDS}
    if record.content_type is not None:
        properties["content_type"] = record.content_type
    if record.content_encoding is not None:
        properties["content_encoding"] = record.content_encoding
    return amqp.Message(record.body, application_headers=dict(record.headers), **properties)


def _short(value: Any) -> bytes:
    if type(value) is str:
        value = value.encode("utf-8", "surrogatepass")
    elif type(value) is not bytes:
        raise _Fallback
    if len(value) > 255:
        raise _Fallback  # py-amqp raises struct.error: let it
    return _SHORT.pack(len(value)) + value


def _item(value: Any, out: list[bytes]) -> None:
    kind = type(value)
    if kind is str:
        data = value.encode("utf-8", "surrogatepass")
        out.append(_ITEM_STR.pack(b"S", len(data)))
        out.append(data)
    elif kind is bytes:
        out.append(_ITEM_STR.pack(b"S", len(value)))
        out.append(value)
    elif kind is int:
        if value > 2147483647 or value < -2147483647:
            out.append(_ITEM_LONG.pack(b"L", value))
        else:
            out.append(_ITEM_INT.pack(b"I", value))
    elif value is None:
        out.append(b"V")
    elif kind is bool:
        out.append(b"t\x01" if value else b"t\x00")
    elif kind is float:
        out.append(_ITEM_FLOAT.pack(b"d", value))
    elif kind is dict:
        out.append(b"F")
        out.append(_table(value))
    elif kind is list or kind is tuple:
        items: list[bytes] = []
        for v in value:
            _item(v, items)
        data = b"".join(items)
        out.append(b"A")
        out.append(_U32.pack(len(data)))
        out.append(data)
    else:  # Decimal, datetime, subclasses, the unencodable: py-amqp's way (or its error)
        raise _Fallback


#: Encoded header names (Celery's ~20 are the same in every message).
_KEYS: dict[str, bytes] = {}


def _table(table: dict[Any, Any]) -> bytes:
    out: list[bytes] = []
    append = out.append
    keys = _KEYS
    for key, value in table.items():
        name = keys.get(key) if type(key) is str else None
        if name is None:
            name = _short(key)
            if type(key) is str and len(keys) < 4096:
                keys[key] = name
        append(name)
        if value is None:
            append(b"V")
        else:
            _item(value, out)
    data = b"".join(out)
    return _U32.pack(len(data)) + data


def _encode_properties(record: SpillRecord) -> bytes:
    """The content header's property flags and list, as ``Message._serialize_properties``."""
    props = record.properties
    flags = 0x2000  # application_headers: always present (a table, maybe empty)
    out = [b"", b""]
    if record.content_type is not None:
        flags |= 0x8000
        out[0] = _short(record.content_type or "")
    if record.content_encoding is not None:
        flags |= 0x4000
        out[1] = _short(record.content_encoding or "")
    out.append(_table(record.headers))
    bit = 0x1000
    for name, kind in _REST:
        value = props.get(name)
        if value is not None:
            flags |= bit
            if kind == "s":
                out.append(_short(value or ""))
            elif kind == "o":
                if type(value) is not int or not 0 <= value <= 255:
                    raise _Fallback
                out.append(_BYTE.pack(value))
            elif kind == "L":
                if type(value) is not int or not 0 <= value < 1 << 64:
                    raise _Fallback
                out.append(_U64.pack(value))
            else:
                raise _Fallback
        bit >>= 1
    return flags.to_bytes(2, "big") + b"".join(out)


class FrameEncoder:
    """Encodes records as the frames of ``basic.publish`` on one channel."""

    def __init__(self, channel_id: int, frame_max: int) -> None:
        self.channel_id = channel_id
        self.chunk_size = frame_max - 8  # py-amqp's largest body frame
        self._methods: dict[tuple[str, str], bytes] = {}

    def method_frame(self, exchange: str, routing_key: str) -> bytes:
        key = (exchange, routing_key)
        frame = self._methods.get(key)
        if frame is None:
            payload = _PUBLISH + dumps("Bssbb", (0, exchange, routing_key, False, False))
            frame = _FRAME_HEAD.pack(1, self.channel_id, len(payload)) + payload + _FRAME_END
            if len(self._methods) < 1024:  # a bound: routes are few, but who knows
                self._methods[key] = frame
        return frame

    def encode(self, record: SpillRecord, out: list[bytes]) -> None:
        """Append the frames publishing ``record`` to ``out``."""
        body = record.body
        try:
            properties = _encode_properties(record)
        except _Fallback:
            properties = record_message(record)._serialize_properties()
        channel = self.channel_id
        head = _CONTENT_HEAD.pack(_BASIC_CLASS, 0, len(body)) + properties
        out.append(self.method_frame(record.exchange, record.routing_key))
        out.append(_FRAME_HEAD.pack(2, channel, len(head)))
        out.append(head)
        out.append(_FRAME_END)
        size = self.chunk_size
        if len(body) <= size:
            if body:
                out.append(_FRAME_HEAD.pack(3, channel, len(body)))
                out.append(body)
                out.append(_FRAME_END)
            return
        for start in range(0, len(body), size):
            chunk = body[start : start + size]
            out.append(_FRAME_HEAD.pack(3, channel, len(chunk)))
            out.append(chunk)
            out.append(_FRAME_END)
