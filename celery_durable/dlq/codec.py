"""Turning a :class:`DumpEntry` into bytes and back, through Kombu's serializer registry.

Why Kombu's registry: users already configure it (``accept_content``, custom
serializers registered with ``kombu.serialization.register``), so a dump is
encoded the way their messages are, and decoding refuses what the app refuses
(pickle unless ``accept_content`` allows it).

A payload is self-describing so a store can mix serializers over time::

    u8 len | content_type | u8 len | content_encoding | serialized entry

Framing (format version, CRC32) belongs to each store; see ``crc_frame``.

Decoding JSON, the common case, skips Kombu's per-object hook (a Python call for
every dict, a third of a restore's read time) whenever the payload cannot hold
one of Kombu's ``{"__type__": ..., "__value__": ...}`` markers: then the hook
changes nothing and the C decoder alone gives the identical result.

Encoding is on a failing task's path, so :meth:`Codec.encode` calls the
registered encoder itself rather than through ``kombu.serialization.dumps``
(its error-wrapping context manager and lookups cost as much as a third of
the encoding), and for Kombu's own ``json`` it reuses one encoder of the very
class and options ``kombu.utils.json.dumps`` builds on every call: same bytes.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import Iterable
from typing import Any

from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.serialization import dumps, loads, prepare_accept_content, registry
from kombu.utils import json as kombu_json

from ..exceptions import ConfigError, CorruptRecord, DumpError
from .base import DumpEntry

__all__ = ["Codec", "codec_for_app", "crc32"]


def crc32(data: bytes | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


#: The payload header Kombu's JSON serializer gives (content type, encoding).
_JSON_HEAD = b"\x10application/json\x05utf-8"
# A "__type__" key written with an escape for one of its letters (_ t y p e are
# U+005F, U+0074, U+0079, U+0070, U+0065): rare, so any \u005x-\u007x escape
# sends the payload the slow way.
_ESCAPED_LETTER = re.compile(rb"\\u00[5-7]")


def _plain_json(payload: bytes) -> Any:
    """``payload``'s JSON document if Kombu's object hook cannot matter, else ``None``."""
    if b"__type__" in payload:
        return None
    if b"\\u00" in payload and _ESCAPED_LETTER.search(payload) is not None:
        return None
    try:
        text = payload[len(_JSON_HEAD) :].decode("utf-8")
        # json.loads(text) minus its wrappers: the C scanner, then nothing may follow.
        data, end = _scan(text, 0)
    except (ValueError, StopIteration):  # let Kombu's path say what is wrong
        return None
    return data if end == len(text) else None


_scan: Any = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # json.loads uses it


class Codec:
    """Encode with ``serializer``; decode only ``accept`` (serializer names or content types).

    ``accept`` defaults to JSON only, like Celery's ``accept_content``; pass the
    app's ``accept_content`` to honour it (:func:`codec_for_app`).
    """

    def __init__(self, serializer: str = "json", accept: Iterable[str] | None = None) -> None:
        self.serializer = serializer
        self.accept: set[str] = prepare_accept_content(list(accept or ["json"]))
        # What kombu.utils.json.dumps does per call: cls(**no options).encode(obj).
        self._json = _KOMBU_JSON_CLS()
        self._heads: dict[tuple[str, str], bytes] = {}

    def encode(self, entry: DumpEntry) -> bytes:
        fields = vars(entry)
        # A copy of the instance dict is to_dict() at a tenth of the cost, when
        # it holds exactly the dataclass fields (nothing set on the side).
        same = fields.keys() == type(entry).__dataclass_fields__.keys()
        data = dict(fields) if same else entry.to_dict()
        # Looked up per call, as Kombu does: a serializer registered later wins.
        found = getattr(registry, "_encoders", {}).get(self.serializer)
        try:
            if found is None or self.serializer == "raw":  # Kombu says what is wrong
                content_type, content_encoding, payload = dumps(data, serializer=self.serializer)
            else:
                content_type, content_encoding, encoder = found
                fast = encoder is _KOMBU_JSON_DUMPS
                payload = self._json.encode(data) if fast else encoder(data)
        except Exception as exc:  # kombu raises EncodeError and friends
            raise DumpError(f"cannot encode dump of {entry.task_id}: {exc!r}") from exc
        raw = payload.encode(content_encoding or "utf-8") if isinstance(payload, str) else payload
        return self._head(content_type or "", content_encoding or "") + raw

    def _head(self, content_type: str, content_encoding: str) -> bytes:
        head = self._heads.get((content_type, content_encoding))
        if head is None:
            ct, ce = content_type.encode(), content_encoding.encode()
            head = struct.pack(">B", len(ct)) + ct + struct.pack(">B", len(ce)) + ce
            self._heads[(content_type, content_encoding)] = head
        return head

    def decode(self, payload: bytes) -> DumpEntry:
        """Raises ``CorruptRecord`` for bad bytes, ``ContentDisallowed`` if not accepted."""
        if payload.startswith(_JSON_HEAD) and self._fast_json():
            plain = _plain_json(payload)
            if type(plain) is dict and "task_id" in plain:
                try:
                    return DumpEntry.from_dict(plain)
                except TypeError:
                    pass  # the slow path raises the error
        try:
            ctlen = payload[0]
            content_type = payload[1 : 1 + ctlen].decode()
            pos = 1 + ctlen
            celen = payload[pos]
            content_encoding = payload[pos + 1 : pos + 1 + celen].decode()
            raw = payload[pos + 1 + celen :]
        except (IndexError, UnicodeDecodeError) as exc:
            raise CorruptRecord(f"bad dump payload header: {exc!r}") from exc
        try:
            data: Any = loads(
                raw,
                content_type,
                content_encoding,
                accept=self.accept,
            )
        except ContentDisallowed:
            raise
        except (DecodeError, ValueError, TypeError) as exc:
            raise CorruptRecord(f"cannot decode dump ({content_type}): {exc!r}") from exc
        if not isinstance(data, dict) or "task_id" not in data:
            raise CorruptRecord("decoded dump is not an entry mapping")
        try:
            return DumpEntry.from_dict(data)
        except TypeError as exc:
            raise CorruptRecord(f"dump misses fields: {exc}") from exc

    def _fast_json(self) -> bool:
        """JSON is accepted and decoded by Kombu's own ``loads`` (not re-registered)."""
        return (
            "application/json" in self.accept
            and registry._decoders.get("application/json") is kombu_json.loads
        )


_KOMBU_JSON_DUMPS = kombu_json.dumps
_KOMBU_JSON_CLS = kombu_json.JSONEncoder  # the ``cls`` kombu.utils.json.dumps passes


def codec_for_app(app: Any, serializer: str | None = None) -> Codec:
    """The codec an app's settings ask for: ``durable_dlq_serializer``, ``accept_content``."""
    from ..settings import durable_settings

    conf = app.conf
    name = serializer or durable_settings(conf)["durable_dlq_serializer"]
    known = sorted(registry.name_to_type)
    if name not in known:
        # Fail when the worker starts, not at the first failing task.
        raise ConfigError(
            f"durable_dlq_serializer={name!r}: no such Kombu serializer; "
            f"registered: {', '.join(known)}"
        )
    return Codec(name, conf.accept_content or ["json"])
