"""Rebuild the original Celery message of a failed task, as a :class:`DumpEntry`.

Why rebuild: ``task_failure`` does not carry the message.  Two places send it:

* the process that ran the task (prefork child, thread, solo): the raw message
  is gone and ``task.request`` is a ``Context`` made of the message headers,
  properties, delivery info and the body's embed (callbacks, errbacks, chain,
  chord); ``Context.headers`` holds only *custom* headers, so the protocol-2
  headers are picked back out of the context by name;
* the worker's main process, for a hard time limit or a lost pool process
  (``celery/worker/request.py``): there the worker's ``Request`` still holds the
  Kombu message, which is copied as is.  ``task.request`` may belong to another
  task in that process and is not used.

Either way the entry carries everything a restore needs to republish the same
message (same id, same links, same routing) and a human needs to debug it.
"""

from __future__ import annotations

import socket
import time
import traceback as tb_module
from typing import Any

from .base import DumpEntry

__all__ = ["RESTORES_HEADER", "entry_from_context", "entry_from_request"]

#: Incremented by every restore; a dump records how many restores it already had.
RESTORES_HEADER = "x-durable-restores"

#: Celery protocol-2 headers (``celery/app/amqp.py`` ``as_task_v2``).
PROTOCOL2_HEADERS = (
    "lang",
    "task",
    "id",
    "shadow",
    "eta",
    "expires",
    "group",
    "group_index",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "replaced_task_nesting",
    "stamped_headers",
    "stamps",
)
EMBED_KEYS = ("callbacks", "errbacks", "chain", "chord")
#: Transport bookkeeping that must not be republished.
TRANSPORT_PROPERTIES = ("delivery_info", "delivery_tag", "body_encoding")

_HOST = socket.gethostname()


def _restores(headers: dict[str, Any]) -> int:
    try:
        return max(int(headers.get(RESTORES_HEADER) or 0), 0)
    except (TypeError, ValueError):
        return 0


def _exc_fields(exc: BaseException, einfo: Any) -> tuple[str, str, str]:
    cls = type(exc)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    text = getattr(einfo, "traceback", None)
    if not text:
        text = "".join(tb_module.format_exception(cls, exc, exc.__traceback__))
    return name, str(exc), str(text)


def _queue_name(app: Any, exchange: str | None, routing_key: str | None) -> str | None:
    """The queue the message came from, as far as the app's routing can tell.

    Kombu's ``delivery_info`` has exchange and routing key, not the queue.
    """
    try:
        queues = app.amqp.queues
    except Exception:  # pragma: no cover - an app without amqp set up
        return routing_key
    for name, queue in queues.items():
        if queue.routing_key == routing_key and (queue.exchange.name or "") == (exchange or ""):
            return str(name)
    if routing_key in queues:
        return routing_key
    return routing_key or None


def _delivery(app: Any, info: dict[str, Any] | None) -> dict[str, Any]:
    info = info or {}
    exchange, routing_key = info.get("exchange"), info.get("routing_key")
    return {
        "exchange": exchange or "",
        "routing_key": routing_key or "",
        "queue": _queue_name(app, exchange, routing_key),
    }


def _properties(props: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (props or {}).items() if k not in TRANSPORT_PROPERTIES}


def _entry(
    task: Any,
    headers: dict[str, Any],
    properties: dict[str, Any],
    delivery_info: dict[str, Any],
    args: Any,
    kwargs: Any,
    embed: dict[str, Any],
    exc: BaseException,
    einfo: Any,
    hostname: str | None,
) -> DumpEntry:
    exc_type, exc_message, text = _exc_fields(exc, einfo)
    return DumpEntry(
        task_id=str(headers.get("id")),
        task_name=str(headers.get("task") or task.name),
        args=list(args or ()),
        kwargs=dict(kwargs or {}),
        headers=headers,
        properties=properties,
        delivery_info=delivery_info,
        embed={k: embed.get(k) for k in EMBED_KEYS},
        exc_type=exc_type,
        exc_message=exc_message,
        traceback=text,
        hostname=hostname or "",
        failed_at=time.time(),
        restores=_restores(headers),
        host=_HOST,
    )


def entry_from_context(
    task: Any, ctx: Any, task_id: str, exc: BaseException, einfo: Any, args: Any, kwargs: Any
) -> DumpEntry:
    """From the ``task.request`` Context of the process that ran the task."""
    fields = vars(ctx)  # read, never changed
    headers = {k: fields[k] for k in PROTOCOL2_HEADERS if k in fields}
    custom = fields.get("headers")
    if custom:
        headers.update(custom)
    headers["id"] = task_id
    if "task" not in headers:
        headers["task"] = task.name
    return _entry(
        task,
        headers,
        _properties(fields.get("properties")),
        _delivery(task.app, fields.get("delivery_info")),
        fields.get("args", args),
        fields.get("kwargs", kwargs),
        {k: fields.get(k) for k in EMBED_KEYS},
        exc,
        einfo,
        fields.get("hostname"),
    )


def entry_from_request(task: Any, request: Any, exc: BaseException, einfo: Any) -> DumpEntry:
    """From the worker's ``Request`` (main process: hard time limit, lost process)."""
    message = request.message
    headers = dict(message.headers or {})
    headers.setdefault("id", request.id)
    headers.setdefault("task", request.task_name)
    args, kwargs = request.args, request.kwargs
    embed: dict[str, Any] = {}
    try:
        payload = message.payload
        if isinstance(payload, (list, tuple)) and len(payload) == 3:
            args, kwargs, embed = payload[0], payload[1], payload[2] or {}
    except Exception:  # an undecodable body: keep what the request has
        pass
    return _entry(
        task,
        headers,
        _properties(message.properties),
        _delivery(task.app, message.delivery_info),
        args,
        kwargs,
        embed,
        exc,
        einfo,
        request.hostname,
    )
