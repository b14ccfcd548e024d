"""The console in a real browser: Debian's headless chromium driven by Playwright,
against a real ``celery durable web`` process, a real redis and a real worker.

Dumps are made by real failing tasks; a restore is checked by the worker running
the restored tasks under their original ids.  The screenshots in
``docs/src/img/console-*.png`` are taken here when ``CELERY_DURABLE_SCREENSHOTS=1``
is set (so a plain test run leaves the working tree clean); otherwise they go
to a temporary directory, still proving each page renders.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celery_durable.dlq import open_store
from tests.helpers.processes import ROOT, Proc, celery, wait_ready
from tests.helpers.redis_server import RedisServer, free_port
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
IMG = (
    ROOT / "docs" / "src" / "img"
    if os.environ.get("CELERY_DURABLE_SCREENSHOTS") == "1"
    else Path(tempfile.mkdtemp(prefix="console-shots-"))
)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Env:
    """Redis, a worker, a console, and a client app to send failing tasks with."""

    def __init__(self, tmp: Path) -> None:
        from tests.integration.console_app import make_app

        self.tmp = tmp
        self.redis = RedisServer().start()
        self.broker = f"redis://127.0.0.1:{self.redis.port}/0"
        self.dlq_url = f"redis://127.0.0.1:{self.redis.port}/1"
        self.results = f"redis://127.0.0.1:{self.redis.port}/2"
        self.procs: list[Proc] = []
        self.app = make_app(self.broker, self.dlq_url)
        self.worker = wait_ready(
            self.start("worker", "worker", "-P", "solo", "--loglevel=INFO", "--without-heartbeat",
                       "--without-gossip", "--without-mingle")
        )  # fmt: skip
        self.port = free_port()
        self.console = self.web("console", "--port", str(self.port))
        self.base = f"http://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "CONSOLE_BROKER": self.broker,
            "CONSOLE_DLQ_URL": self.dlq_url,
            "CONSOLE_RESULTS": self.results,
            **extra,
        }

    def start(self, name: str, *args: str, **env: str) -> Proc:
        proc = celery("-A", "console_app", *args, log=self.tmp / f"{name}.log",
                      env=self.env(**env), cwd=HERE)  # fmt: skip
        self.procs.append(proc)
        return proc

    def web(self, name: str, *args: str, **env: str) -> Proc:
        """Start ``celery durable web`` and wait until it answers."""
        proc = self.start(name, "durable", "web", *args, **env)
        port = args[args.index("--port") + 1]
        url = f"http://127.0.0.1:{port}/healthz"

        def up() -> bool:
            assert proc.alive(), proc.output()
            try:
                return status(url, headers=env_headers(env)) in (200, 401)
            except OSError:
                return False

        wait_for(up, timeout=60, message=lambda: f"console up; log:\n{proc.output()}")
        return proc

    def dumps(self, task: str) -> list[Any]:
        store = open_store(self.dlq_url)
        try:
            return list(store.entries(task=task))
        finally:
            store.close()

    def fail(self, task: str, *argsets: tuple[Any, ...]) -> list[str]:
        """Send failing tasks and wait until each is dumped; return their task ids."""
        ids = [self.app.send_task(task, args=args).id for args in argsets]
        wait_for(
            lambda: {e.task_id for e in self.dumps(task)} >= set(ids),
            timeout=60,
            message=lambda: f"dumps of {ids}; worker log:\n{self.worker.output()[-3000:]}",
        )
        return ids

    def ran(self) -> list[str]:
        import redis

        client = redis.Redis.from_url(self.results)
        try:
            return [i.decode() for i in client.lrange("ran", 0, -1)]
        finally:
            client.close()

    def fix(self, task: str) -> None:
        import redis

        redis.Redis.from_url(self.results).set(f"fixed:{task}", "1")

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
        self.redis.close()


def env_headers(env: dict[str, str]) -> dict[str, str]:
    token = env.get("CELERY_DURABLE_WEB_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def status(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    durable_dir = tmp_path_factory.mktemp("durable")
    old = os.environ.get("CELERY_DURABLE_DIR")
    os.environ["CELERY_DURABLE_DIR"] = str(durable_dir)
    e = Env(tmp_path_factory.mktemp("console"))
    try:
        yield e
    finally:
        e.close()
        if old is None:
            os.environ.pop("CELERY_DURABLE_DIR", None)
        else:
            os.environ["CELERY_DURABLE_DIR"] = old


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="console-chromium-")
    with sync_playwright() as pw:
        # A fresh profile: Playwright passes it as --user-data-dir.
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800},
        )
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    p = browser.new_page()
    dialogs: list[str] = []
    p.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    p.dialogs = dialogs
    yield p
    p.close()


def shot(page: Any, name: str) -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMG / f"console-{name}.png"))


def rows(page: Any) -> list[str]:
    return [str(r.get_attribute("data-task-id")) for r in page.locator("tr.dump").all()]


def test_list_filter_and_detail(env: Env, page: Any) -> None:
    charges = env.fail("console.charge", (1,), (2, "vip"), (3,))
    emails = env.fail("console.email", ("ann@example.com",), ("bob@example.com",))
    page.goto(env.base + "/")
    assert int(page.inner_text("#dump-count")) >= 5
    shot(page, "overview")

    page.goto(env.base + "/dumps")
    assert set(charges + emails) <= set(rows(page))
    page.select_option("select[name=task]", "console.email")
    page.click("#apply")
    assert sorted(rows(page)) == sorted(emails)
    page.select_option("select[name=task]", "")
    page.select_option("select[name=exc]", "ValueError")
    page.fill("input[name=q]", "order 2")
    page.click("#apply")
    assert rows(page) == [charges[1]]
    page.goto(env.base + "/dumps?task=console.charge")
    shot(page, "list")

    page.click(f"text={charges[1]}")
    assert "card declined for order 2" in page.inner_text("#exception")
    assert '"vip"' in page.inner_text("#args")
    assert "ValueError" in page.inner_text("#traceback")
    assert charges[1] in page.inner_text("#headers")
    shot(page, "detail")


def test_hostile_dump_is_shown_as_text(env: Env, page: Any) -> None:
    payload = "<script>document.title='pwned';alert(1)</script><img src=x onerror=alert(2)>"
    (task_id,) = env.fail("console.hostile", (payload,))
    page.goto(env.base + "/dumps?task=console.hostile")
    assert payload[:40] in page.inner_text("#dumps")
    page.click(f"text={task_id}")
    assert payload in page.inner_text("#exception")
    assert payload.replace('"', '\\"') in page.inner_text("#args")
    assert page.locator("script").count() == 0  # the pages carry no script at all
    assert page.locator("main img").count() == 0
    assert "pwned" not in page.title() and page.dialogs == []


def test_restore_selected_runs_them_under_their_original_ids(env: Env, page: Any) -> None:
    ids = env.fail("console.flaky", (1,), (2,), (3,), (4,))
    env.fix("console.flaky")
    page.goto(env.base + "/dumps?task=console.flaky")
    chosen = ids[:2]
    for task_id in chosen:
        page.check(f"tr[data-task-id='{task_id}'] input[type=checkbox]")
    page.click("#restore-selected")
    assert page.url.endswith("/restore")
    wait_for(
        lambda: page.reload() and page.get_attribute("#job-state", "data-state") != "running",
        timeout=60,
        message="the console's restore to finish",
    )
    assert page.get_attribute("#job-state", "data-state") == "done", page.inner_text("main")
    assert "2 of 2 restored" in page.inner_text("#job-state")
    shot(page, "restore")
    wait_for(
        lambda: set(chosen) <= set(env.ran()),
        timeout=60,
        message=lambda: f"restored tasks to run; worker log:\n{env.worker.output()[-3000:]}",
    )
    assert sorted(env.ran()) == sorted(chosen)  # original ids, each once
    assert sorted(e.task_id for e in env.dumps("console.flaky")) == sorted(ids[2:])
    page.goto(env.base + "/")
    assert "restored 2" in page.inner_text("#last-run")


def test_purge_asks_for_confirmation(env: Env, page: Any) -> None:
    ids = env.fail("console.purgeme", (1,), (2,), (3,))
    page.goto(env.base + "/dumps?task=console.purgeme")
    page.click("#purge-matching")
    assert "Purge 3 dump(s)?" in page.inner_text("h1")
    shot(page, "purge-confirm")
    page.click("#cancel")
    assert len(env.dumps("console.purgeme")) == 3  # cancelled: nothing deleted
    page.goto(env.base + "/dumps?task=console.purgeme")
    page.check(f"tr[data-task-id='{ids[0]}'] input[type=checkbox]")
    page.click("#purge-selected")
    assert "Purge 1 dump(s)?" in page.inner_text("h1")
    page.click("#confirm-purge")
    assert "purged 1 dumps" in page.inner_text("#message")
    assert sorted(e.task_id for e in env.dumps("console.purgeme")) == sorted(ids[1:])
    page.click("#purge-matching")
    assert "Purge 2 dump(s)?" in page.inner_text("h1")
    (late,) = env.fail("console.purgeme", (4,))  # fails while the operator reads the page
    page.click("#confirm-purge")
    assert "purged 2 dumps" in page.inner_text("#message")
    assert [e.task_id for e in env.dumps("console.purgeme")] == [late]  # not confirmed: kept


def test_read_only_console_refuses_actions(env: Env, page: Any) -> None:
    ids = env.fail("console.charge", (40,))
    port = free_port()
    proc = env.web("read-only", "--port", str(port), "--read-only")
    base = f"http://127.0.0.1:{port}"
    page.goto(base + "/dumps?task=console.charge")
    assert page.is_visible("#read-only")
    assert page.locator("button").count() == 1  # only the filter's
    assert page.locator("input[type=checkbox]").count() == 0
    shot(page, "read-only")
    page.click(f"text={ids[0]}")
    assert page.locator("#restore-one").count() == 0
    # A hand-made POST (with a valid token from the read-write console) is refused.
    token = re.search(r'name="csrf" value="([^"]+)"', fetch_text(env.base + "/dumps"))
    assert token
    data = f"csrf={token.group(1)}&action=purge&scope=matching&confirm=yes".encode()
    assert status(base + "/actions", data=data) == 403
    assert len(env.dumps("console.charge")) >= 1
    proc.terminate()


def fetch_text(url: str, headers: dict[str, str] | None = None) -> str:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.read().decode())


def test_post_without_csrf_token_is_refused(env: Env) -> None:
    env.fail("console.purgeme", (99,))
    before = sorted(e.task_id for e in env.dumps("console.purgeme"))
    data = b"action=purge&scope=matching&confirm=yes&task=console.purgeme"
    assert status(env.base + "/actions", data=data) == 403
    token = re.search(r'name="csrf" value="([^"]+)"', fetch_text(env.base + "/dumps"))
    assert token
    foreign = {"Origin": "http://evil.example"}
    assert status(env.base + "/actions", data=data + f"&csrf={token.group(1)}".encode(),
                  headers=foreign) == 403  # fmt: skip
    assert sorted(e.task_id for e in env.dumps("console.purgeme")) == before


def test_non_loopback_bind_without_auth_is_refused(env: Env) -> None:
    proc = env.start("exposed", "durable", "web", "--host", "0.0.0.0", "--port", str(free_port()))
    assert proc.wait(60) != 0
    assert "refusing to serve the console on 0.0.0.0" in proc.output()
    assert "CELERY_DURABLE_WEB_TOKEN" in proc.output()


def test_configured_auth_is_required(env: Env) -> None:
    port = free_port()
    proc = env.web("auth", "--port", str(port), CELERY_DURABLE_WEB_TOKEN="s3cret-token")
    base = f"http://127.0.0.1:{port}"
    assert status(base + "/dumps") == 401
    assert status(base + "/dumps", headers={"Authorization": "Bearer wrong"}) == 401
    assert status(base + "/dumps", headers={"Authorization": "Bearer s3cret-token"}) == 200
    proc.terminate()


def test_overview_shows_what_retention_dropped(env: Env, page: Any) -> None:
    from celery_durable.dlq.retention import Retention, enforce
    from tests.integration.dlq_writer import entry

    url = f"redis://127.0.0.1:{env.redis.port}/3"
    store = open_store(url)
    store.write([entry(f"r{i}", 10) for i in range(5)])
    assert enforce(store, Retention(max_entries=2))["max_entries"] == 3
    store.close()
    port = free_port()
    proc = env.web("retention", "--port", str(port), "--url", url)
    page.goto(f"http://127.0.0.1:{port}/")
    assert page.inner_text("#dump-count") == "2"
    assert page.inner_text("#dropped-count") == "3"
    assert "max_entries 3" in page.inner_text("main")
    proc.terminate()


def test_a_foreign_host_name_is_refused(env: Env) -> None:
    """DNS rebinding: a page on evil.example re-pointed to 127.0.0.1 cannot read the console."""
    assert status(env.base + "/dumps", headers={"Host": "evil.example:80"}) == 403
    assert status(env.base + "/dumps", headers={"Host": f"localhost:{env.port}"}) == 200


def test_a_taken_port_is_a_one_line_error(env: Env) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = env.start("taken", "durable", "web", "--port", str(port))
        assert proc.wait(60) != 0
    assert f"Error: web: cannot listen on 127.0.0.1:{port}" in proc.output()
    assert "Traceback" not in proc.output()


def test_port_zero_and_ipv6_loopback(env: Env) -> None:
    proc = env.start("ipv6", "durable", "web", "--host", "::1", "--port", "0")
    found = wait_for(
        lambda: re.search(r"console on http://\[::1\]:(\d+)/", proc.output()) or not proc.alive(),
        timeout=60,
        message=lambda: proc.output(),
    )
    assert proc.alive() and isinstance(found, re.Match), proc.output()
    url = f"http://[::1]:{found.group(1)}/healthz"

    def up() -> bool:
        try:
            return status(url) == 200
        except OSError:  # bound, not yet listening
            return False

    wait_for(up, timeout=30, message="the console on ::1")
    proc.terminate()
