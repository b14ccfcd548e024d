"""The durable transport as Kombu sees it: real classes, the inner address, bad URLs.

No broker is needed: a closed loopback port is a dead one, and nothing here
connects to it except where a test says so.
"""

from __future__ import annotations

import pickle
import ssl

import pytest
from celery import Celery
from kombu import Connection, Producer, pools
from kombu.transport import get_transport_cls

import celery_durable  # noqa: F401 - registers the aliases
from celery_durable import transport as durable_transport
from celery_durable.exceptions import ConfigError
from celery_durable.transport.redis import DurableRedisTransport
from celery_durable.transport.spiller import shutdown_all
from tests.helpers.redis_server import free_port

FIELDS = ("hostname", "port", "virtual_host", "userid", "password")


@pytest.fixture(autouse=True)
def _close_spillers() -> object:
    yield
    shutdown_all(0.0)


def fields(conn: Connection) -> tuple[object, ...]:
    info = conn.info()
    return tuple(info[name] for name in FIELDS)


# -- 9.3: the aliases give back real classes ------------------------------------------


@pytest.mark.parametrize("alias", ["durable+redis", "durable+rediss"])
def test_every_durable_scheme_is_a_registered_alias_of_a_real_class(alias: str) -> None:
    # Kombu resolves the raw scheme in switch() (failover) and in clone().
    assert get_transport_cls(alias) is DurableRedisTransport


def test_the_durable_alias_gives_an_instance_of_the_class_kombu_resolves_afterwards() -> None:
    conn = Connection(f"durable+redis://127.0.0.1:{free_port()}/0")
    transport = conn.transport
    assert type(transport) is DurableRedisTransport
    assert isinstance(transport, durable_transport.Transport)
    assert conn.transport_cls == "durable+redis"
    assert conn.get_transport_cls() is DurableRedisTransport
    assert conn.connection_errors == DurableRedisTransport.connection_errors


def test_the_entry_class_instantiates_the_subclass_for_the_inner_scheme() -> None:
    conn = Connection(f"durable+redis://127.0.0.1:{free_port()}/0")
    transport = durable_transport.Transport(client=conn)
    assert type(transport) is DurableRedisTransport
    assert transport.client is conn


def test_clone_pickle_and_pools_round_trip_the_class_and_the_address() -> None:
    port = free_port()
    conn = Connection(f"durable+redis://u:secret@127.0.0.1:{port}/4")
    expected = ("127.0.0.1", port, "4", "u", "secret")
    for copy in (conn.clone(), pickle.loads(pickle.dumps(conn)), conn.clone().clone()):
        assert type(copy.transport) is DurableRedisTransport
        assert fields(copy) == expected
        assert copy.as_uri() == f"durable+redis://u:**@127.0.0.1:{port}/4"
    pooled = pools.connections[Connection(f"durable+redis://127.0.0.1:{port}/4")]
    with pooled.acquire(block=True) as acquired:
        assert type(acquired.transport) is DurableRedisTransport
        assert fields(acquired)[:3] == ("127.0.0.1", port, "4")
    # Pools are keyed by the connection's fields: a fresh connection finds the same pool.
    assert pools.connections[Connection(f"durable+redis://127.0.0.1:{port}/4")] is pooled
    pools.reset()


def test_broker_transport_setting_with_a_plain_url_round_trips_too() -> None:
    port = free_port()
    conn = Connection(f"redis://127.0.0.1:{port}/3", transport="celery_durable.transport:Transport")
    assert type(conn.transport) is DurableRedisTransport
    assert fields(conn) == ("127.0.0.1", port, "3", None, None)
    assert conn.get_transport_cls() is DurableRedisTransport
    clone = conn.clone()
    assert type(clone.transport) is DurableRedisTransport
    assert clone.as_uri() == f"durable+redis://127.0.0.1:{port}/3"


def test_an_unsupported_inner_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unsupported inner broker 'foo'.*durable\+redis://"):
        Connection("durable+foo://127.0.0.1:1/0").transport  # noqa: B018


# -- 9.7: info() presents the inner broker ---------------------------------------------


def test_info_reports_the_inner_host_port_and_db_as_plain_redis_does() -> None:
    durable = Connection("durable+redis://127.0.0.1:6390/2")
    plain = Connection("redis://127.0.0.1:6390/2")
    assert fields(durable) == fields(plain) == ("127.0.0.1", 6390, "2", None, None)
    assert durable.as_uri() == "durable+redis://127.0.0.1:6390/2"
    assert durable.info()["transport"] == "durable+redis"
    assert durable.info()["uri_prefix"] is None


def test_info_reports_credentials_and_masks_the_password_in_as_uri() -> None:
    durable = Connection("durable+redis://user:p%40ss@127.0.0.1:6390/2")
    plain = Connection("redis://user:p%40ss@127.0.0.1:6390/2")
    assert fields(durable) == fields(plain) == ("127.0.0.1", 6390, "2", "user", "p@ss")
    assert durable.as_uri() == "durable+redis://user:**@127.0.0.1:6390/2"
    assert durable.as_uri(include_password=True) == "durable+redis://user:p%40ss@127.0.0.1:6390/2"
    assert "p@ss" not in repr(durable)


def test_defaults_are_redis_defaults() -> None:
    conn = Connection("durable+redis://")
    assert fields(conn) == ("localhost", 6379, "0", None, None)
    assert conn.as_uri() == "durable+redis://localhost:6379/0"
    params = conn.default_channel._connparams()
    assert (params["host"], params["port"], params["db"]) == ("localhost", 6379, 0)


def test_celery_style_separate_fields_fill_what_the_url_leaves_out() -> None:
    conn = Connection("durable+redis://127.0.0.1", port=6391, virtual_host="7", password="pw")
    assert fields(conn) == ("127.0.0.1", 6391, "7", None, "pw")


def test_rediss_keeps_its_scheme_and_verifies_certificates_unless_told_otherwise() -> None:
    conn = Connection("durable+rediss://u:pw@redis.example:6380/1")
    assert fields(conn) == ("redis.example", 6380, "1", "u", "pw")
    assert conn.transport_cls == "durable+rediss"
    assert conn.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert conn.as_uri().startswith("durable+rediss://u:**@redis.example:6380/1")
    assert type(conn.clone().transport) is DurableRedisTransport
    assert conn.clone().transport_cls == "durable+rediss"

    relaxed = Connection("durable+rediss://redis.example:6380/1?ssl_cert_reqs=none")
    assert relaxed.info()["ssl"] == {"ssl_cert_reqs": ssl.CERT_NONE}
    # The drainer connects through the inner URL: it carries the TLS options.
    assert relaxed.transport.inner_url == (
        "rediss://redis.example:6380/1?ssl_cert_reqs=none"
    )


def test_the_same_broker_has_one_identity_however_it_is_reached() -> None:
    # The inner URL names the spill directory and the process's Spiller: a
    # clone or a switched connection must not get a second store (order).
    port = free_port()
    first = Connection(f"durable+redis://127.0.0.1:{port}")
    switched = Connection(f"durable+redis://127.0.0.1:{free_port()}")
    switched.switch(f"durable+redis://127.0.0.1:{port}/0")
    urls = {
        first.transport.inner_url,
        first.clone().transport.inner_url,
        switched.transport.inner_url,
        Connection(f"redis://127.0.0.1:{port}/", transport="durable").transport.inner_url,
    }
    assert urls == {f"redis://127.0.0.1:{port}/0"}


@pytest.mark.parametrize("scheme", ["redis", "rediss"])
def test_a_clone_of_a_connection_never_used_has_the_same_identity(scheme: str) -> None:
    # clone() reads info() before the transport has rewritten transport_cls:
    # the clone gets the entry alias with host, port and TLS options only.
    url = f"durable+{scheme}://127.0.0.1:{free_port()}/1"
    clone = Connection(url).clone()
    assert clone.transport.inner_url == Connection(url).transport.inner_url
    assert clone.transport_cls == f"durable+{scheme}"
    tls = Connection(url.replace("rediss", "redis"), ssl={"ssl_cert_reqs": ssl.CERT_NONE})
    assert tls.transport_cls == "durable" and tls.transport.address.scheme == "rediss"


def test_the_cli_reads_the_same_identity_without_building_a_transport() -> None:
    conn = Connection("durable+redis://u:pw@127.0.0.1:6390/2")
    assert durable_transport._inner_url(conn) == "redis://u:pw@127.0.0.1:6390/2"
    assert conn._transport is None
    assert conn.transport.inner_url == "redis://u:pw@127.0.0.1:6390/2"


# -- 10.6: a malformed URL is a ConfigError naming broker_url --------------------------


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("durable+redis://127.0.0.1:99999/0", "Port out of range"),
        ("durable+redis://127.0.0.1:http/0", "Port could not be cast"),
        ("durable+redis://127.0.0.1:6379/zero", "database must be a number"),
        ("durable+redis://127.0.0.1:6379/0;durable+redis://127.0.0.1:99999/0", "Port out of"),
    ],
)
def test_a_malformed_url_is_a_config_error_naming_broker_url(url: str, match: str) -> None:
    conn = Connection(url)
    with pytest.raises(ConfigError, match=rf"^broker_url '.*' is invalid: .*{match}"):
        conn.transport  # noqa: B018
    with pytest.raises(ConfigError, match="broker_url"):
        Producer(Connection(url)).publish({"x": 1}, routing_key="q")
    # What `celery durable status` reads (without building a transport).
    with pytest.raises(ConfigError, match="broker_url"):
        durable_transport._inner_url(Connection(url))


def test_a_malformed_url_never_shows_the_password() -> None:
    with pytest.raises(ConfigError) as excinfo:
        Connection("durable+redis://user:hunter2@127.0.0.1:99999/0").transport  # noqa: B018
    assert "hunter2" not in str(excinfo.value)
    assert "user:**@127.0.0.1:99999" in str(excinfo.value)


def test_a_celery_publish_to_a_malformed_url_is_a_config_error() -> None:
    app = Celery("t", broker="durable+redis://127.0.0.1:99999/0", set_as_current=False)
    with pytest.raises(ConfigError, match="broker_url"):
        app.send_task("anything", retry=False)


# -- 9.8: failover URLs when every broker is down ---------------------------------------


@pytest.mark.parametrize("second", ["127.0.0.1:{p2}/0", "127.0.0.1"])
def test_every_failover_url_down_connects_and_publishing_spills(second: str) -> None:
    # The second form omits the port: Kombu's switch() then keeps the first
    # URL's port (as for redis://), so that URL never looks as written.
    p1, p2 = free_port(), free_port()
    conn = Connection(f"durable+redis://127.0.0.1:{p1}/0;durable+redis://{second.format(p2=p2)}")
    assert conn.connect()
    Producer(conn.default_channel).publish({"x": 1}, routing_key="q")
    assert conn.transport.spiller.backlog() == 1
    conn.release()
