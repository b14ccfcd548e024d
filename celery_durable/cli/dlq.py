"""``celery durable dlq ls|show|restore|purge|export|import``."""

from __future__ import annotations

from . import durable


@durable.group(name="dlq")
def dlq() -> None:
    """Dead-letter dumps of failed tasks."""
