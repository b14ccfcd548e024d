"""``celery durable spill ls|drain|check``."""

from __future__ import annotations

from . import durable


@durable.group(name="spill")
def spill() -> None:
    """Local spill stores of the durable transport."""
