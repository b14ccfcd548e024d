"""The console's routes: overview, dead-letter list and detail, actions, export.

Pages are rendered on the server (Jinja2, autoescaped) and work without any
script.  Reads go through the store's summaries (``dlq/summary.py``), so a page
over 100,000 dumps decodes only what changed since the last request; a detail
page and an export decode just the dumps they show.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from kombu.utils.json import dumps as json_dumps
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from ..dlq.base import DumpStore
from ..dlq.history import restore_history
from ..dlq.summary import AGES, DumpFilter, DumpSummary, fetch, summaries, summarize
from ..dlq.unpark import unpark
from ..settings import durable_settings
from .jobs import RestoreJob
from .overview import dump_counts, dump_overview, spill_overview
from .security import SECURITY_HEADERS, Auth, Csrf, host_allowed

__all__ = ["Console", "create_app"]

logger = logging.getLogger(__name__)

PAGE_SIZE = 50
#: Dumps listed on a purge confirmation page.
CONFIRM_SHOWN = 20


def _when(ts: Any) -> str:
    if ts is None:
        return "-"
    try:
        when = datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):  # a malformed dump's field
        return repr(ts)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return "-"
    return _duration(time.time() - ts)


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    s = max(0, int(seconds))
    if s >= 86400:
        return f"{s // 86400}d {s % 86400 // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60}m"
    if s >= 60:
        return f"{s // 60}m {s % 60}s"
    return f"{s}s"


def _pretty(value: Any) -> str:
    """JSON for people; anything JSON cannot hold is shown by its type name, not evaluated."""
    return json.dumps(value, indent=2, sort_keys=True, default=lambda o: f"<{type(o).__name__}>")


class Console:
    """The state one console process keeps: its store, settings, CSRF token, job."""

    def __init__(
        self,
        app: Any,
        open_store: Callable[[], DumpStore],
        *,
        read_only: bool = False,
        auth: Auth | None = None,
    ) -> None:
        self.app = app
        self.open_store = open_store
        self.store = open_store()
        self.read_only = read_only
        self.auth = auth or Auth()
        settings = durable_settings(app.conf)
        self.max_attempts = int(settings["durable_restore_max_attempts"])
        self.rate = settings["durable_restore_rate"]
        self.csrf = Csrf()
        self.job: RestoreJob | None = None
        self._lock = threading.Lock()
        self._choices: tuple[list[DumpSummary], dict[str, list[str]]] | None = None
        self._counts: tuple[list[DumpSummary], dict[str, Any]] | None = None
        self.env = Environment(
            loader=PackageLoader("celery_durable.web", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        self.env.filters.update(when=_when, ago=_ago, duration=_duration, pretty=_pretty)
        self.env.globals.update(quote=lambda s: quote(str(s), safe=""), urlencode=urlencode)

    # -- helpers ---------------------------------------------------------------
    def rows(self) -> tuple[list[DumpSummary], int]:
        with self._lock:  # one scan at a time; the store's cache is not thread-safe
            live, bad = summaries(self.store)
        return live, len(bad)

    def choices(self, live: list[DumpSummary]) -> dict[str, list[str]]:
        """The filter menus' values; remade only when the store's list changed (it is
        the same list object while nothing changed)."""
        cached = self._choices
        if cached is not None and cached[0] is live:
            return cached[1]
        tasks, excs, queues = set(), set(), set()
        for s in live:
            tasks.add(s.task_name)
            excs.add(s.exc_type)
            queues.add(s.queue)
        queues.discard("")
        found = {"task": sorted(tasks), "exc": sorted(excs), "queue": sorted(queues)}
        self._choices = (live, found)
        return found

    def render(self, request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        ctx.update(
            request=request,
            read_only=self.read_only,
            csrf=self.csrf.token,
            job=self.job,
            store_url=self.store.url,
            ages=AGES,
        )
        return HTMLResponse(self.env.get_template(name).render(**ctx), status_code=status)

    def matching(self, flt: DumpFilter) -> list[DumpSummary]:
        live, _ = self.rows()
        return flt.select(live, self.max_attempts)

    # -- pages -------------------------------------------------------------------
    def overview(self, request: Request) -> Response:
        live, quarantined = self.rows()
        cached = self._counts
        if cached is None or cached[0] is not live:
            cached = self._counts = (live, dump_counts(live, self.max_attempts))
        dumps = dump_overview(self.store, cached[1], quarantined)
        try:
            spill = spill_overview(self.app)
            spill_error = ""
        except Exception as exc:  # show the page anyway, with the reason
            spill, spill_error = None, str(exc).splitlines()[0] if str(exc) else repr(exc)
        return self.render(request, "overview.html", dumps=dumps, spill=spill, error=spill_error)

    def dumps(self, request: Request) -> Response:
        flt = DumpFilter.from_mapping(request.query_params)
        live, _ = self.rows()
        found = flt.select(live, self.max_attempts)
        found.reverse()  # newest first
        try:
            page = max(1, int(request.query_params.get("page") or 1))
        except ValueError:
            page = 1
        pages = max(1, (len(found) + PAGE_SIZE - 1) // PAGE_SIZE)
        page = min(page, pages)
        shown = found[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        choices = self.choices(live)
        return self.render(
            request,
            "dumps.html",
            rows=shown,
            total=len(live),
            matched=len(found),
            page=page,
            pages=pages,
            flt=flt,
            params=flt.as_params(),
            choices=choices,
            max_attempts=self.max_attempts,
            message=request.query_params.get("done", ""),
        )

    def detail(self, request: Request) -> Response:
        entry_id = request.path_params["entry_id"]
        found = fetch(self.store, [entry_id])
        if not found:
            return self.render(request, "error.html", 404, message=f"No dump {entry_id!r}.")
        entry = found[0]
        return self.render(
            request,
            "detail.html",
            e=entry,
            parked=summarize(entry).restores >= self.max_attempts,
            max_attempts=self.max_attempts,
            history=restore_history(entry.headers),
        )

    def export(self, request: Request) -> Response:
        flt = DumpFilter.from_mapping(request.query_params)
        ids = [s.entry_id for s in self.matching(flt)]

        def lines() -> Iterator[str]:
            for start in range(0, len(ids), 500):
                for entry in fetch(self.store, ids[start : start + 500]):
                    yield json_dumps(entry.to_dict()) + "\n"

        return StreamingResponse(
            lines(),
            media_type="application/x-ndjson",
            headers={"content-disposition": 'attachment; filename="dead-letters.jsonl"'},
        )

    def restore_page(self, request: Request) -> Response:
        return self.render(request, "restore.html")

    # -- actions -----------------------------------------------------------------
    def act(self, form: dict[str, Any], ids: list[str]) -> tuple[str, Any]:
        """Run a POSTed action: ("redirect", url) or ("confirm", context)."""
        action = form.get("action", "")
        flt = DumpFilter.from_mapping(form)
        back = "/dumps?" + urlencode(flt.as_params())
        if form.get("scope") == "matching":
            targets = self.matching(flt)
            what = "all dumps matching the filter"
        else:
            wanted = set(ids)
            live, _ = self.rows()
            targets = [s for s in live if s.entry_id in wanted]
            what = "the selected dumps"
        if not targets:
            return "redirect", back + "&done=" + quote("nothing selected")
        if action == "restore":
            with self._lock:
                if self.job is not None and self.job.running:
                    return "redirect", "/restore"
                self.job = RestoreJob(f"restore {len(targets)} of {what}", len(targets))
            self.job.start(self.app, self.open_store, {s.entry_id for s in targets}, self.rate)
            return "redirect", "/restore"
        if action == "purge":
            if form.get("confirm") != "yes":
                keep = {k: v for k, v in form.items() if k not in ("confirm", "csrf", "until")}
                # What was confirmed is what matched now: dumps that fail after this
                # page was shown are not purged by confirming it.
                keep["until"] = repr(time.time())
                return "confirm", {
                    "count": len(targets),
                    "what": what,
                    "shown": targets[:CONFIRM_SHOWN],
                    "ids": [s.entry_id for s in targets] if form.get("scope") != "matching" else [],
                    "form": keep,
                }
            try:
                until = float(form.get("until") or "inf")
            except ValueError:
                until = float("inf")
            targets = [s for s in targets if s.failed_at <= until]
            removed = self.store.delete(s.entry_id for s in targets)
            logger.warning("console: purged %d dumps from %s", removed, self.store.url)
            return "redirect", back + "&done=" + quote(f"purged {removed} dumps")
        if action == "unpark":
            entries = fetch(self.store, [s.entry_id for s in targets])
            count = unpark(self.store, entries, self.max_attempts)
            return "redirect", back + "&done=" + quote(f"unparked {count} dumps")
        return "redirect", back + "&done=" + quote(f"unknown action {action!r}")

    async def action(self, request: Request) -> Response:
        if self.read_only:
            return PlainTextResponse("read-only console: actions are disabled\n", 403)
        pairs = parse_qsl((await request.body()).decode("utf-8", "replace"))
        form = {k: v for k, v in pairs if k != "ids"}
        ids = [v for k, v in pairs if k == "ids"]
        if not self.csrf.valid(form, request.headers):
            return PlainTextResponse("missing or bad CSRF token; reload the page\n", 403)
        kind, value = await run_in_threadpool(self.act, form, ids)
        if kind == "confirm":
            return self.render(request, "confirm.html", **value)
        return RedirectResponse(value, status_code=303)


class _Guard(BaseHTTPMiddleware):
    """The Host check (without authentication), authentication (with it), and
    security headers on every response."""

    def __init__(self, app: Any, auth: Auth, bind_host: str) -> None:
        super().__init__(app)
        self.auth = auth
        self.bind_host = bind_host

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if not self.auth.configured and not host_allowed(
            request.headers.get("host", ""), self.bind_host
        ):
            response: Response = PlainTextResponse(
                "unknown Host: open the console by its loopback address\n", 403
            )
        elif not self.auth.allows(request.headers.get("authorization", "")):
            response = PlainTextResponse(
                "authentication required\n",
                401,
                headers={"www-authenticate": 'Basic realm="celery-durable", charset="UTF-8"'},
            )
        else:
            response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def create_app(
    app: Any,
    open_store: Callable[[], DumpStore],
    *,
    read_only: bool = False,
    auth: Auth | None = None,
    bind_host: str = "127.0.0.1",
) -> Starlette:
    """The console as an ASGI application (serve it with uvicorn on ``bind_host``)."""
    console = Console(app, open_store, read_only=read_only, auth=auth)
    routes = [
        Route("/", console.overview),
        Route("/dumps", console.dumps),
        Route("/dumps/{entry_id:path}", console.detail),
        Route("/export", console.export),
        Route("/restore", console.restore_page),
        Route("/actions", console.action, methods=["POST"]),
        Route("/healthz", lambda request: PlainTextResponse("ok\n")),
    ]
    web = Starlette(
        routes=routes, middleware=[Middleware(_Guard, auth=console.auth, bind_host=bind_host)]
    )
    web.state.console = console
    return web
