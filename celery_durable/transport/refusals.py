"""A redis that answers but refuses writes is down, for publishing as for draining.

Two refusals a production server gives while it is up:

* ``NOREPLICAS``: ``min-replicas-to-write`` is set (the guard against losing
  acknowledged writes in a failover, see docs/high-availability.md) and too few
  replicas are connected;
* ``READONLY``: the server is a replica now (a failover that a ``redis://``
  URL does not follow, or an operator's ``REPLICAOF``).

redis-py raises both as a ``ResponseError``: a publish would raise to the caller
and the drainer would log a traceback per attempt.  As a ``ConnectionError`` each
is an outage like any other: publishes spill, the breaker opens, the drainer
backs off and forwards the backlog in order once writes are taken again.
(redis-py's Sentinel connection already turns ``READONLY`` into a
``ConnectionError``; ``NOREPLICAS`` it does not.)
"""

from __future__ import annotations

from typing import Any

import redis

__all__ = ["RefusedWriteIsDown", "refusing_connection_class"]


class RefusedWriteIsDown:
    """Mixin for redis-py connection classes: a refused write raises ``ConnectionError``."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.exceptions.ResponseError as exc:
            # redis-py strips the READONLY code into its own class; NOREPLICAS it keeps.
            if isinstance(exc, redis.exceptions.ReadOnlyError):
                code = "READONLY"
            elif str(exc).startswith("NOREPLICAS"):
                code = "NOREPLICAS"
            else:
                raise
            self.disconnect()  # type: ignore[attr-defined]  # replies may be pending
            raise redis.exceptions.ConnectionError(f"redis refuses writes ({code}): {exc}") from exc


def refusing_connection_class(base: Any) -> Any:
    """``base`` (a redis-py connection class) with :class:`RefusedWriteIsDown` mixed in."""
    if base is None:
        return None
    return type(base.__name__, (RefusedWriteIsDown, base), {"__module__": __name__})
