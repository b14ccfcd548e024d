"""The console's detail page shows a dump's restore history, escaped."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from celery import Celery

from celery_durable.dlq import open_store
from celery_durable.dlq.history import HISTORY_HEADER
from celery_durable.web.app import create_app

from .restore_memstore import make_entry


def _get(asgi: Any, path: str) -> tuple[int, str]:
    """One GET through the ASGI app (no HTTP client needed)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(asgi(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body.decode()


def test_the_console_detail_page_shows_the_history_escaped(tmp_path: Path) -> None:
    app = Celery("console-history", broker="memory://", set_as_current=False)
    url = (tmp_path / "dlq").as_uri()
    store = open_store(url)
    entry = make_entry("t-5", restores=1)
    hostile = "<script>alert(1)</script>"
    entry.headers[HISTORY_HEADER] = [
        {
            "at": "2026-11-23T17:00:00+00:00",
            "restores": 1,
            "exc_type": "KeyError",
            "exc_message": hostile,
            "host": "box-a",
            "by": "cli",
        }
    ]
    store.write([entry])
    store.write([make_entry("t-6")])
    status, page = _get(create_app(app, lambda: open_store(url)), f"/dumps/{entry.entry_id}")
    assert status == 200, page
    assert 'id="restore-history"' in page
    assert "2026-11-23T17:00:00+00:00" in page and "box-a" in page and "#1" in page
    assert hostile not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    never = next(e for e in store.entries() if e.task_id == "t-6")
    status, page = _get(create_app(app, lambda: open_store(url)), f"/dumps/{never.entry_id}")
    assert status == 200 and "Never restored" in page
