"""Who may use the console, and how forms are protected.

* **Bind.** Loopback (``127.0.0.0/8``, ``::1``, ``localhost``) by default; any other
  address is refused unless authentication is configured (:func:`check_bind`).
* **Authentication** (from the environment, so no secret is on a command line):
  ``CELERY_DURABLE_WEB_TOKEN`` or ``CELERY_DURABLE_WEB_TOKEN_FILE`` (a bearer
  token: ``Authorization: Bearer <token>``; a browser may give it as the basic-auth
  password with any user name), and/or ``CELERY_DURABLE_WEB_USER`` with
  ``CELERY_DURABLE_WEB_PASSWORD`` or ``CELERY_DURABLE_WEB_PASSWORD_FILE`` (basic
  auth).  Once configured it is required on every request, loopback included.
* **Host check.** Without authentication, a request must name the console by a
  loopback host (``127.0.0.1``, ``localhost``, ``[::1]``) or the bound address in
  its ``Host`` header, so a web page whose domain an attacker re-points to
  127.0.0.1 (DNS rebinding) cannot read the console from the operator's browser.
* **CSRF.** Every form carries a token made per server process; a POST without
  it, or from another origin, is refused.
* **Headers.** A Content-Security-Policy allowing no script at all (the pages need
  none), no framing, no referrer, no MIME sniffing.  Everything shown from a dump
  goes through Jinja's autoescaping and is never evaluated.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..exceptions import ConfigError

__all__ = ["Auth", "Csrf", "auth_from_env", "check_bind", "host_allowed", "is_loopback"]

ENV_TOKEN = "CELERY_DURABLE_WEB_TOKEN"
ENV_TOKEN_FILE = "CELERY_DURABLE_WEB_TOKEN_FILE"
ENV_USER = "CELERY_DURABLE_WEB_USER"
ENV_PASSWORD = "CELERY_DURABLE_WEB_PASSWORD"
ENV_PASSWORD_FILE = "CELERY_DURABLE_WEB_PASSWORD_FILE"

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def _secret(env: Mapping[str, str], name: str, file_name: str) -> str | None:
    if env.get(name):
        return env[name]
    path = env.get(file_name)
    if not path:
        return None
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{file_name}={path}: cannot read it: {exc}") from exc
    if not value:
        raise ConfigError(f"{file_name}={path}: the file is empty")
    return value


@dataclass(frozen=True)
class Auth:
    token: str | None = None
    user: str | None = None
    password: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.token or (self.user and self.password))

    def allows(self, header: str) -> bool:
        """Whether an ``Authorization`` header value is good (always, when not configured)."""
        if not self.configured:
            return True
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and self.token:
            return hmac.compare_digest(value.encode(), self.token.encode())
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            if self.user and self.password:
                ok_user = hmac.compare_digest(user.encode(), self.user.encode())
                ok_pass = hmac.compare_digest(password.encode(), self.password.encode())
                if ok_user and ok_pass:
                    return True
            if self.token:
                return hmac.compare_digest(password.encode(), self.token.encode())
        return False


def auth_from_env(env: Mapping[str, str] | None = None) -> Auth:
    env = os.environ if env is None else env
    token = _secret(env, ENV_TOKEN, ENV_TOKEN_FILE)
    user = env.get(ENV_USER) or None
    password = _secret(env, ENV_PASSWORD, ENV_PASSWORD_FILE)
    if bool(user) != bool(password):
        raise ConfigError(
            f"basic auth needs both {ENV_USER} and {ENV_PASSWORD} (or {ENV_PASSWORD_FILE})"
        )
    return Auth(token=token, user=user, password=password)


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, auth: Auth) -> None:
    """Refuse a non-loopback bind without authentication (raises :class:`ConfigError`)."""
    if not is_loopback(host) and not auth.configured:
        raise ConfigError(
            f"refusing to serve the console on {host}: it is not a loopback address and no "
            f"authentication is configured (set {ENV_TOKEN} or {ENV_TOKEN_FILE}, or "
            f"{ENV_USER} and {ENV_PASSWORD}/{ENV_PASSWORD_FILE})"
        )


def host_allowed(header: str, bind_host: str) -> bool:
    """Whether a ``Host`` header names this console (loopback, or the bound address)."""
    host = header.strip().lower()
    if host.startswith("["):
        host = host[: host.find("]") + 1]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return bool(host) and (is_loopback(host) or host == bind_host.lower())


class Csrf:
    """One random token per server process, required in every POST form."""

    def __init__(self) -> None:
        self.token = secrets.token_urlsafe(32)

    def valid(self, form: Mapping[str, Any], headers: Mapping[str, str]) -> bool:
        given = str(form.get("csrf") or "")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return False
        origin = headers.get("origin")
        if origin and origin != "null":
            host = headers.get("host", "")
            return origin.split("://", 1)[-1] == host
        return True
