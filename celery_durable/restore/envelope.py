"""The redis message Kombu would write for a restore, built straight from the dump.

Kombu's publish (``Producer.publish`` -> ``prepare_message`` -> the virtual
channel's ``basic_publish`` -> the redis ``_put``) serializes the body with
``kombu.utils.json.dumps``, base64-encodes it (the channel's ``body_encoding``),
adds ``body_encoding``, ``delivery_tag`` and ``delivery_info`` to the properties
and serializes the whole envelope with ``kombu.utils.json.dumps`` again.  Each of
those ``dumps`` builds a fresh ``JSONEncoder``; here one C encoder, made once
with exactly the settings ``json.dumps(obj, cls=kombu.utils.json.JSONEncoder)``
uses (same ``default``, separators, ASCII escaping), writes both, so the text is
the one Kombu writes, key order included.  What ``kombu.utils.json.loads`` makes
of it equals Kombu's own message but for the delivery tag (a fresh uuid4 either
way).

Anything this module does not reproduce takes Kombu's path (:func:`json_text`
falls back to ``kombu.utils.json.dumps`` itself, so a value the encoder refuses
fails the same way; :func:`Envelopes.for_channel` returns None for a body
encoding other than base64 or a serializer registry where ``json`` is not
Kombu's).
"""

from __future__ import annotations

import base64
import json.encoder
import os
from collections.abc import Sequence
from typing import Any

from kombu.serialization import dumps as serialize
from kombu.serialization import registry
from kombu.utils import json as kombu_json

from .message import Republish

__all__ = ["Envelopes", "json_text", "uuid4_strings"]

_PERSISTENT = 2
# The envelope's text is {"body": <base64>, "content-encoding": "utf-8",
# "content-type": "application/json", "headers": {...}, "properties": {...}}.
_HEAD = '{"body": "'
_MIDDLE = '", "content-encoding": "utf-8", "content-type": "application/json", '

_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODE: Any = (
    _c_make_encoder(
        # No circularity markers: every value was decoded from a dump, so a cycle
        # cannot occur; if one did, the encoder's error sends us to Kombu's dumps.
        None,
        kombu_json.JSONEncoder().default,
        json.encoder.encode_basestring_ascii,
        None,
        ": ",
        ", ",
        False,
        False,
        True,
    )
    if _c_make_encoder is not None
    else None
)


def json_text(obj: Any) -> str:
    """``kombu.utils.json.dumps(obj)``, without building an encoder per call."""
    try:
        return "".join(_C_ENCODE(obj, 0))
    except Exception:  # no C encoder, or a value it refuses: Kombu's dumps raises
        return str(kombu_json.dumps(obj))  # what Kombu raises


def uuid4_strings(n: int) -> list[str]:
    """``n`` random version-4 UUIDs as strings (``str(uuid.uuid4())``), from one urandom."""
    raw = bytearray(os.urandom(16 * n))
    for at in range(6, 16 * n, 16):
        raw[at] = (raw[at] & 0x0F) | 0x40  # version 4
        raw[at + 2] = (raw[at + 2] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return [
        f"{h[i:][:8]}-{h[i + 8 :][:4]}-{h[i + 12 :][:4]}-{h[i + 16 :][:4]}-{h[i + 20 :][:12]}"
        for i in range(0, 32 * n, 32)
    ]


def _kombu_json_serializer() -> bool:
    """The registry's ``json`` is Kombu's own (a user may have registered another)."""
    found = registry._encoders.get("json")
    return found is not None and tuple(found) == (
        "application/json",
        "utf-8",
        kombu_json.dumps,
    )


class Envelopes:
    """Builds the redis list entries of restored messages for one Kombu redis channel."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        # (exchange, routing_key, priority) -> (redis lists, x-expires queues + TTL)
        self._routes: dict[tuple[str, str, Any], tuple[tuple[str, ...], list[tuple[str, int]]]] = {}
        self._tags: list[str] = []

    @classmethod
    def for_channel(cls, channel: Any, serializer: str) -> Envelopes | None:
        """Envelopes for ``channel``, or None where this module is not Kombu's twin."""
        encoding = getattr(channel, "body_encoding", None)
        if serializer != "json" or encoding != "base64" or not _kombu_json_serializer():
            return None
        return cls(channel)

    def usable(self, m: Republish) -> bool:
        """The default exchange or a direct one, to a queue without ``x-expires``."""
        ch = self.channel
        if m.exchange and ch.typeof(m.exchange).type != "direct":
            return False
        return m.queue not in (getattr(ch, "_expires", None) or {})

    def _route(
        self, exchange: str, routing_key: str, priority: Any
    ) -> tuple[tuple[str, ...], list[tuple[str, int]]]:
        """The channel's own routing and priority lists (``_lookup``, ``_q_for_pri``)."""
        ch = self.channel
        level = ch._get_message_priority({"properties": {"priority": priority}}, reverse=False)
        queues = list(ch._lookup(exchange, routing_key))
        expires = getattr(ch, "_expires", None) or {}
        route = (
            tuple(ch._q_for_pri(q, level) for q in queues),
            [(q, expires[q]) for q in queues if q in expires],
        )
        self._routes[(exchange, routing_key, priority)] = route
        return route

    def encode(self, m: Republish) -> tuple[str, tuple[str, ...]]:
        """``(the envelope text, the redis lists it goes to)`` for ``m``.

        Raises ``EncodeError`` when the body cannot be serialized (as Kombu's publish).
        """
        try:
            body = "".join(_C_ENCODE(m.body, 0))
        except Exception:  # no C encoder, or a value it refuses: Kombu's serializer
            _, _, body = serialize(m.body, serializer="json")  # says why (EncodeError)
        if not self._tags:
            self._tags = uuid4_strings(256)
        # What Producer.publish + prepare_message + _inplace_augment_message set.
        properties = dict(m.properties)
        priority = properties.pop("priority", None) or self.channel.default_priority
        if not properties.get("delivery_mode"):
            properties["delivery_mode"] = _PERSISTENT
        properties["delivery_info"] = {"exchange": m.exchange, "routing_key": m.routing_key}
        properties["priority"] = priority
        properties["body_encoding"] = "base64"
        properties["delivery_tag"] = self._tags.pop()
        # The envelope dict Kombu encodes, in its key order; the base64 body
        # needs no JSON escaping, so it is spliced in rather than scanned.
        rest = json_text({"headers": m.headers, "properties": properties})
        text = _HEAD + base64.b64encode(body.encode("utf-8")).decode("ascii") + _MIDDLE + rest[1:]
        route = self._routes.get((m.exchange, m.routing_key, priority))
        if route is None:
            route = self._route(m.exchange, m.routing_key, priority)
        return text, route[0]

    def build(self, chunk: Sequence[Republish]) -> tuple[dict[str, list[str]], dict[str, int]]:
        """``(redis list -> entries in publish order, x-expires queue -> TTL ms)``."""
        lists: dict[str, list[str]] = {}
        expiring: dict[str, int] = {}
        for m in chunk:
            text, names = self.encode(m)
            for name in names:
                lists.setdefault(name, []).append(text)
            route = self._routes[(m.exchange, m.routing_key, _priority_of(m, self.channel))]
            for queue, ttl in route[1]:
                expiring[queue] = ttl
        return lists, expiring


def _priority_of(m: Republish, channel: Any) -> Any:
    return m.properties.get("priority") or channel.default_priority
