"""celery-durable: make Celery lose nothing when things break.

* ``broker_url = "durable+redis://..."``: a Kombu transport that spills publishes
  to a local LevelDB store while the broker is down or slow, and drains them in
  order when it is back (``celery_durable.transport``).
* ``@dead_letter``: dump tasks on their final failure (``celery_durable.dlq``) and
  restore them from beat (``celery_durable.restore``).

Importing this package registers the ``durable`` Kombu transport alias.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES

__version__ = "0.1.0"

__all__ = ["__version__", "dead_letter", "enable_restore_schedule"]

#: ``durable+<scheme>://``: the inner broker's URL scheme -> the Kombu transport
#: class that wraps it.  Each is registered as the alias ``durable+<scheme>``
#: (what Kombu resolves in ``Connection.switch()``, ``clone()`` and pickling), and
#: ``durable`` (what Kombu resolves for the first URL, having split off the ``+``)
#: dispatches on this table too.  A new broker is one line here.
TRANSPORTS: dict[str, str] = {
    "redis": "celery_durable.transport.redis:DurableRedisTransport",
    "rediss": "celery_durable.transport.redis:DurableRedisTransport",
    "amqp": "celery_durable.transport.amqp:DurableAmqpTransport",
    "pyamqp": "celery_durable.transport.amqp:DurableAmqpTransport",
    "amqps": "celery_durable.transport.amqp:DurableAmqpTransport",
    "sentinel": "celery_durable.transport.sentinel:DurableSentinelTransport",
}

TRANSPORT_ALIASES.setdefault("durable", "celery_durable.transport:Transport")
for _scheme, _path in TRANSPORTS.items():
    TRANSPORT_ALIASES.setdefault(f"durable+{_scheme}", _path)


def __getattr__(name: str) -> Any:
    # Lazy: `import celery_durable` (for the transport alias) must stay cheap and
    # must not import Celery's app machinery into plain Kombu producers.
    if name == "dead_letter":
        from .dlq.capture import dead_letter

        return dead_letter
    if name == "enable_restore_schedule":
        from .restore.schedule import enable_restore_schedule

        return enable_restore_schedule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
