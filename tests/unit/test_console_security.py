"""The console's security rules: bind check, authentication, CSRF, filters."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from celery_durable.dlq.summary import DumpFilter, summarize
from celery_durable.exceptions import ConfigError
from celery_durable.web.security import (
    Auth,
    Csrf,
    auth_from_env,
    check_bind,
    host_allowed,
    is_loopback,
)
from tests.integration.dlq_writer import entry


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_loopback_binds_need_no_auth(host: str) -> None:
    assert is_loopback(host)
    check_bind(host, Auth())


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com"])
def test_other_binds_are_refused_without_auth(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(ConfigError, match="refusing to serve the console"):
        check_bind(host, Auth())
    check_bind(host, Auth(token="t"))


def test_auth_from_env_and_files(tmp_path: Path) -> None:
    assert not auth_from_env({}).configured
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    auth = auth_from_env({"CELERY_DURABLE_WEB_TOKEN_FILE": str(token_file)})
    assert auth.token == "from-file"
    auth = auth_from_env({"CELERY_DURABLE_WEB_USER": "ops", "CELERY_DURABLE_WEB_PASSWORD": "pw"})
    assert auth.configured and auth.user == "ops"
    with pytest.raises(ConfigError, match="needs both"):
        auth_from_env({"CELERY_DURABLE_WEB_USER": "ops"})
    with pytest.raises(ConfigError, match="cannot read"):
        auth_from_env({"CELERY_DURABLE_WEB_TOKEN_FILE": str(tmp_path / "missing")})


def test_auth_checks_bearer_and_basic() -> None:
    auth = Auth(token="tok", user="ops", password="pw")
    assert auth.allows("Bearer tok")
    assert not auth.allows("Bearer nope") and not auth.allows("") and not auth.allows("Basic !!")
    assert auth.allows(basic("ops", "pw"))
    assert not auth.allows(basic("ops", "nope"))
    assert auth.allows(basic("anyone", "tok"))  # the token as a browser's password
    assert Auth().allows("")  # not configured: open (loopback only)


def test_csrf_needs_the_token_and_our_origin() -> None:
    csrf = Csrf()
    assert csrf.valid({"csrf": csrf.token}, {"host": "127.0.0.1:5556"})
    assert not csrf.valid({}, {})
    assert not csrf.valid({"csrf": "forged"}, {})
    same = {"host": "127.0.0.1:5556", "origin": "http://127.0.0.1:5556"}
    assert csrf.valid({"csrf": csrf.token}, same)
    other = {"host": "127.0.0.1:5556", "origin": "http://evil.example"}
    assert not csrf.valid({"csrf": csrf.token}, other)


def test_filter_fields() -> None:
    e = entry("abc-123", 10)
    e.exc_type, e.exc_message, e.restores = "KeyError", "Customer 42 missing", 3
    e.failed_at = time.time() - 7200
    s = summarize(e)
    assert DumpFilter().matches(s, 5)
    assert DumpFilter(task="writer.task", exc="KeyError", queue="dlq").matches(s, 5)
    assert not DumpFilter(exc="ValueError").matches(s, 5)
    assert DumpFilter(text="customer 42").matches(s, 5)
    assert DumpFilter(text="ABC-1").matches(s, 5)  # the task id too
    assert DumpFilter(parked="yes").matches(s, 3) and not DumpFilter(parked="no").matches(s, 3)
    assert DumpFilter(age=">1h").matches(s, 5) and not DumpFilter(age="1h").matches(s, 5)
    assert DumpFilter(age="24h").matches(s, 5)
    flt = DumpFilter.from_mapping({"task": " t ", "parked": "maybe", "age": "bogus", "q": "x"})
    assert flt == DumpFilter(task="t", text="x")
    assert flt.as_params() == {"task": "t", "q": "x"}


def test_select_agrees_with_matches() -> None:
    now = time.time()
    rows = []
    for i in range(60):
        e = entry(f"id-{i}", 5)
        e.task_name = f"t{i % 3}"
        e.exc_type = ("KeyError", "ValueError")[i % 2]
        e.exc_message = f"Order {i} failed"
        e.delivery_info = {"queue": ("a", "b", "c", "")[i % 4]}
        e.restores = i % 5
        e.failed_at = now - i * 1800
        rows.append(summarize(e))
    filters = [
        DumpFilter(),
        DumpFilter(task="t1"),
        DumpFilter(exc="KeyError", queue="b"),
        DumpFilter(parked="yes"),
        DumpFilter(parked="no", age="24h"),
        DumpFilter(age=">1h", text="ORDER 1"),
        DumpFilter(task="t2", exc="ValueError", queue="c", parked="no", age=">24h", text="9"),
    ]
    for flt in filters:
        assert flt.select(rows, 3, now) == [s for s in rows if flt.matches(s, 3, now)], flt


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("127.0.0.1:5556", True),
        ("localhost:5556", True),
        ("LOCALHOST", True),
        ("[::1]:5556", True),
        ("10.1.2.3:5556", True),  # the bound address
        ("evil.example:5556", False),
        ("evil.example", False),
        ("", False),
    ],
)
def test_host_header_must_name_the_console(header: str, ok: bool) -> None:
    assert host_allowed(header, "10.1.2.3") is ok
