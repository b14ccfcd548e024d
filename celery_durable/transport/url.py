"""What a ``durable+<scheme>://`` URL names: the inner broker's address.

Kombu splits ``durable+redis://h:6390/2`` at the ``+`` and hands the transport
a connection whose hostname is the whole inner URL (``redis://h:6390/2``),
port and virtual host unset.  Left like that, ``Connection.info()`` reports the
URL as the host name and the defaults as port and virtual host, and the inner
transport connects to the wrong place.  :func:`inner_address` reads the
address from the connection (the inner URL, or the fields Kombu already
parsed: ``clone()``, a failover ``switch()``, ``broker_transport`` with a plain
URL) and :func:`present` writes it back as the connection's own fields, so the
connection looks exactly like one to the inner broker except for its scheme.

A malformed address (port 99999, a database that is not a number) is a
:class:`~celery_durable.exceptions.ConfigError` naming ``broker_url``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from kombu.utils.url import as_url, parse_url

from ..exceptions import ConfigError

__all__ = ["PREFIX", "Address", "check_url", "inner_address", "present", "presented_scheme"]

#: The scheme prefix Kombu splits off (``durable+redis://`` -> transport ``durable``).
PREFIX = "durable"

_CERT_REQS = {ssl.CERT_NONE: "none", ssl.CERT_OPTIONAL: "optional", ssl.CERT_REQUIRED: "required"}


@dataclass(frozen=True)
class Address:
    """One inner broker: scheme, host, port, credentials, virtual host, TLS options."""

    scheme: str
    hostname: str
    port: int
    userid: str | None
    password: str | None
    virtual_host: str
    ssl: Any = field(default=False, compare=False)

    def url(self, include_password: bool = True, mask: str = "**") -> str:
        """The inner URL (``redis://h:6390/2``), TLS options as Kombu's query keys.

        It is also the broker's identity (spill directory, process-wide
        Spiller), so it is canonical: the same broker gives the same string
        whether it came from a URL, a clone or a failover switch.
        """
        url = as_url(
            self.scheme, self.hostname, self.port, self.userid or "", self.password or "",
            self.virtual_host, sanitize=not include_password, mask=mask,
        )  # fmt: skip
        query = _ssl_query(self.ssl)
        return f"{url}?{query}" if query else url

    def as_uri(self, include_password: bool = False, mask: str = "**") -> str:
        """The URL a user would write: ``durable+redis://h:6390/2``."""
        return f"{PREFIX}+{self.url(include_password, mask)}"


def inner_address(
    client: Any, default_scheme: str, default_port: int, default_vhost: str
) -> Address:
    """The inner broker ``client`` (a :class:`kombu.Connection`) points at."""
    hostname = client.hostname or ""
    scheme = _scheme_of(client, default_scheme)
    url: dict[str, Any] = {}
    if "://" in hostname:
        # The inner URL, as Kombu left it.  Its parts win over separately given
        # fields (Celery's broker_port/broker_user...), as for a plain URL.
        url = _parse(hostname, _shown(client))
        scheme = url.pop("transport") or scheme
        hostname = url.get("hostname") or ""
    port = url.get("port") or client.port or default_port
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
        raise ConfigError(_bad(_shown(client), f"port must be 1-65535, got {port!r}"))
    return Address(
        scheme=scheme,
        hostname=hostname or "localhost",
        port=port,
        userid=url.get("userid") or client.userid,
        password=url.get("password") or client.password,
        virtual_host=url.get("virtual_host") or client.virtual_host or default_vhost,
        ssl=url.get("ssl") or client.ssl,
    )


def present(client: Any, address: Address) -> None:
    """Make ``client`` describe ``address`` the way a plain inner connection would.

    ``info()`` then reports the inner host, port and virtual host,
    ``transport_cls`` becomes the registered alias ``durable+<scheme>`` (so
    ``get_transport_cls()``, ``clone()`` and pickling give back the class in
    use), and ``as_uri()`` (the transport's) keeps the ``durable+`` scheme.
    """
    client.hostname = address.hostname
    client.port = address.port
    client.userid = address.userid
    client.password = address.password
    client.virtual_host = address.virtual_host
    client.ssl = address.ssl
    client.transport_cls = f"{PREFIX}+{address.scheme}"
    # Kombu prefixes info()'s hostname with it; as_uri() is ours (can_parse_url).
    client.uri_prefix = None
    _PRESENTED[_fields(client)] = address.scheme


#: Address fields of every connection :func:`present` rewrote -> its inner scheme.
#: ``Connection.clone()`` reads ``transport_cls`` *before* it builds the
#: transport (``_info``), so a clone of a connection not yet used gets
#: ``transport="durable"`` and the already rewritten fields (``127.0.0.1``,
#: port, virtual host): no inner scheme left.  This is where it is found again.
_PRESENTED: dict[tuple[Any, ...], str] = {}


def _fields(client: Any) -> tuple[Any, ...]:
    return (client.hostname, client.port, client.userid, client.virtual_host)


def presented_scheme(client: Any) -> str | None:
    """The inner scheme of a connection with the fields of one :func:`present` rewrote."""
    return _PRESENTED.get(_fields(client))


def check_url(url: str) -> None:
    """Raise :class:`ConfigError` (naming ``broker_url``) if Kombu cannot parse ``url``."""
    _parse(url, url)


def _scheme_of(client: Any, default: str) -> str:
    transport = client.transport_cls
    if isinstance(transport, str) and transport.startswith(f"{PREFIX}+"):
        return transport[len(PREFIX) + 1 :]
    return presented_scheme(client) or default


def _parse(url: str, shown: str) -> dict[str, Any]:
    try:
        return dict(parse_url(url))
    except ValueError as exc:  # urllib: "Port out of range 0-65535", ...
        raise ConfigError(_bad(shown, str(exc))) from exc


def _shown(client: Any) -> str:
    """The URL as the user wrote it (Kombu split ``durable+`` off into uri_prefix)."""
    hostname = str(client.hostname or "")
    if client.uri_prefix and "://" in hostname:
        return f"{client.uri_prefix}+{hostname}"
    return hostname


def _bad(url: str, reason: str) -> str:
    return f"broker_url {_masked(url)!r} is invalid: {reason}"


def _masked(url: str) -> str:
    head, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    auth, at, host = netloc.rpartition("@")
    if not sep or not at or ":" not in auth:
        return url
    return f"{head}://{auth.split(':', 1)[0]}:**@{host}{slash}{path}"


def _ssl_query(options: Any) -> str:
    if not isinstance(options, dict):
        return ""
    query = {}
    for key, value in sorted(options.items()):
        if isinstance(value, ssl.VerifyMode):
            value = _CERT_REQS.get(value, value.name)
        elif isinstance(value, bool):
            value = str(value).lower()
        if isinstance(value, str):
            query[key] = value
    return urlencode(query)
