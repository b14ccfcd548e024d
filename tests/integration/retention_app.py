""":mod:`tests.integration.dlq_app` with a bounded dump store (``DLQ_MAX_ENTRIES``)."""

from __future__ import annotations

import os

from tests.integration.dlq_app import app

app.conf.durable_dlq_max_entries = int(os.environ.get("DLQ_MAX_ENTRIES", "100000"))
app.conf.durable_dlq_when_full = os.environ.get("DLQ_WHEN_FULL", "drop_oldest")

__all__ = ["app"]
