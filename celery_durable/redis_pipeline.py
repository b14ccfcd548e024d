"""Push many Kombu messages to redis in one pipeline, exactly as Kombu would.

Kombu's redis publish builds a new client and does one round trip per message;
its ``PublishBatch`` pipelines the round trips but still walks the generic
publish path per message.  Both the drainer (spilled records) and restore
(dumped tasks) move thousands of messages at once, so they build each message
as the virtual channel's ``prepare_message`` and in-place augment would (body
encoded with the channel's ``body_encoding``, a fresh delivery tag, the
delivery info), route with the channel's own ``_lookup`` once per (exchange,
routing key) and batch, pick the list with ``_get_message_priority`` and
``_q_for_pri`` once per priority value, serialize with Kombu's JSON encoder
(built once: ``kombu.utils.json.dumps`` builds one per call), and send one
multi-value LPUSH per redis list (the same order as one LPUSH per message:
consumers BRPOP from the other end), plus the PEXPIREs Kombu's ``_put`` adds
for queues declared with ``x-expires``.

Only for the default exchange and ``direct`` exchanges on Kombu's redis channel
(or a subclass): :func:`can_push` says when; anything else takes Kombu's path.
``push`` and :func:`push_records` return only after redis answered every
command; any error raises.
"""

from __future__ import annotations

import uuid
from binascii import b2a_base64
from collections.abc import Callable, Iterable, Iterator, Sequence
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, Any

from kombu.transport import redis as kombu_redis
from kombu.utils.json import JSONEncoder

if TYPE_CHECKING:
    from .spill import SpillRecord

__all__ = ["can_push", "delivery_tags", "dumps", "push", "push_records"]

# Kombu's JSON (its type registry via ``default``, ASCII output, NaN allowed),
# with the C encoder built once.  Only the separators differ from
# ``kombu.utils.json.dumps`` (no spaces): the same JSON value, fewer bytes.
_KOMBU = JSONEncoder(separators=(",", ":"))
_c_encode: Callable[[Any, int], Any] | None = (
    c_make_encoder(
        None, _KOMBU.default, encode_basestring_ascii, None, ":", ",", False, False, True
    )
    if c_make_encoder is not None
    else None
)


def dumps(obj: Any) -> str:
    """``kombu.utils.json.dumps(obj)`` without the spaces, at a fraction of the cost."""
    if _c_encode is None:  # pragma: no cover - CPython always has the C encoder
        return _KOMBU.encode(obj)
    return "".join(_c_encode(obj, 0))


def delivery_tags() -> Iterator[str]:
    """Fresh delivery tags: distinct uuid4 strings, one ``os.urandom`` per 4096.

    Kombu takes a ``uuid4()`` per message (a ``urandom`` system call each, more
    than the LPUSH costs).  Here one random uuid4 is the base and the next
    4,095 tags count up in its last 48 bits (the node field): every tag is a
    well-formed version 4 uuid, distinct from the others of the run, and as
    unlikely as Kombu's to equal a tag from elsewhere (a tag is the key of the
    consumer's ``unacked`` hash: only uniqueness matters).
    """
    while True:
        base = uuid.uuid4()
        prefix = str(base)[:24]
        node = base.node
        for i in range(4096):
            yield f"{prefix}{(node + i) & 0xFFFFFFFFFFFF:012x}"


def can_push(channel: Any, exchanges: Iterable[str]) -> bool:
    """True if every exchange is the default one or a direct one on a redis channel."""
    if not isinstance(channel, kombu_redis.Channel):
        return False
    return all(not ex or channel.typeof(ex).type == "direct" for ex in exchanges)


class _Batch:
    """The redis lists of one pipeline, and the routes and list names already looked up."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.lists: dict[str, list[str]] = {}
        self.expiring: dict[str, int] = {}
        self.expires = getattr(channel, "_expires", None) or {}
        # (exchange, routing key, raw priority) -> the lists a message goes to
        self.targets: dict[tuple[str, str, Any], list[list[str]]] = {}

    def add(self, raw: str, exchange: str, routing_key: str, priority: Any) -> None:
        key = (exchange, routing_key, priority)
        try:
            targets = self.targets.get(key)
        except TypeError:  # an unhashable priority: Kombu's own rules, uncached
            targets = self._targets(exchange, routing_key, priority)
        else:
            if targets is None:
                targets = self.targets[key] = self._targets(exchange, routing_key, priority)
        for values in targets:
            values.append(raw)

    def _targets(self, exchange: str, routing_key: str, priority: Any) -> list[list[str]]:
        channel = self.channel
        pri = channel._get_message_priority({"properties": {"priority": priority}}, reverse=False)
        targets = []
        # The default exchange routes to the queue named by the key, as in
        # Kombu's basic_publish (it does not ask _lookup).
        queues = channel._lookup(exchange, routing_key) if exchange else [routing_key]
        for queue in queues:
            targets.append(self.lists.setdefault(channel._q_for_pri(queue, pri), []))
            if queue in self.expires:
                self.expiring[queue] = self.expires[queue]
        return targets

    def send(self) -> None:
        channel = self.channel
        lists = [(name, values) for name, values in self.lists.items() if values]
        if len(lists) == 1 and not self.expiring:
            # One command needs no pipeline (building one copies redis-py's
            # table of response callbacks: more than the LPUSH of 500 costs).
            with channel.conn_or_acquire() as client:
                client.lpush(lists[0][0], *lists[0][1])
            return
        with channel.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            for name, values in lists:
                pipe.lpush(name, *values)
            for queue, ttl in self.expiring.items():
                for step in channel.priority_steps:
                    pipe.pexpire(channel._q_for_pri(queue, step), ttl)
            pipe.execute()


def _priority(message: dict[str, Any]) -> Any:
    try:
        return message["properties"]["priority"]
    except (KeyError, TypeError):
        return None


def push(channel: Any, messages: Sequence[tuple[dict[str, Any], str, str]]) -> None:
    """Route and push ``(prepared message, exchange, routing_key)`` tuples in one pipeline.

    Each message is augmented in place as Kombu's ``basic_publish`` would (body
    encoding, delivery tag, delivery info) before it is serialized.
    """
    batch = _Batch(channel)
    tags = delivery_tags()
    encoding = channel.body_encoding
    encode_body = channel.encode_body
    for message, exchange, routing_key in messages:
        message["body"], body_encoding = encode_body(message["body"], encoding)
        props = message["properties"]
        props.update(body_encoding=body_encoding, delivery_tag=next(tags))
        props["delivery_info"].update(exchange=exchange, routing_key=routing_key)
        batch.add(dumps(message), exchange, routing_key, _priority(message))
    batch.send()


def push_records(channel: Any, records: Sequence[SpillRecord]) -> None:
    """Push spilled records in one pipeline, each exactly as Kombu would publish it.

    The message is the one ``channel.prepare_message`` builds from the record
    (:func:`~celery_durable.transport.forwarder.prepare_message`), augmented as
    ``basic_publish`` would augment it, without the intermediate objects.
    """
    batch = _Batch(channel)
    tags = delivery_tags()
    encoding = channel.body_encoding
    base64 = encoding == "base64"
    encode_body = channel.encode_body
    default_priority = channel.default_priority
    for record in records:
        exchange, routing_key = record.exchange, record.routing_key
        properties = dict(record.properties)
        # As Kombu's prepare_message: a missing priority becomes the default one.
        if "priority" not in properties:
            properties["priority"] = default_priority
        # A message put back in line after a failed delivery says so, as
        # Kombu's own restores do (Celery: request.delivery_info["redelivered"]).
        properties["delivery_info"] = (
            {"redelivered": True, "exchange": exchange, "routing_key": routing_key}
            if record.headers.get("redelivered")
            else {"exchange": exchange, "routing_key": routing_key}
        )
        if base64:
            body: Any = b2a_base64(record.body, newline=False).decode("ascii")
            properties["body_encoding"] = "base64"
        else:
            body, properties["body_encoding"] = encode_body(record.body, encoding)
        properties["delivery_tag"] = next(tags)
        message = {
            "body": body,
            "content-encoding": record.content_encoding,
            "content-type": record.content_type,
            "headers": record.headers,
            "properties": properties,
        }
        batch.add(dumps(message), exchange, routing_key, properties["priority"])
    batch.send()
