"""The inner broker's address reaches redis: credentials, database, info(), as_uri().

A real redis-server with an ACL user: a publish through ``durable+redis://``
must land in that server's database as that user, and every way Kombu has of
handing the connection on (``info()``, ``as_uri(include_password=True)``,
``clone()``) must lead to the same place.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import kombu
import pytest
import redis

import celery_durable  # noqa: F401 - registers the durable aliases
from celery_durable.transport.spiller import shutdown_all
from tests.helpers.redis_server import REDIS_SERVER, RedisServer, free_port
from tests.helpers.wait import wait_for

USER, PASSWORD = "alice", "p@ss:w/rd"


@pytest.fixture
def secured(redis_server: RedisServer) -> Iterator[RedisServer]:
    admin = redis_server.client()
    admin.acl_setuser(USER, enabled=True, passwords=[f"+{PASSWORD}"], keys=["*"],
                      channels=["*"], commands=["+@all"])  # fmt: skip
    admin.acl_setuser("default", enabled=False)  # nobody else gets in
    yield redis_server
    shutdown_all(1.0)


def test_credentials_and_database_reach_redis(secured: RedisServer) -> None:
    quoted = "p%40ss%3Aw%2Frd"
    url = f"durable+redis://{USER}:{quoted}@127.0.0.1:{secured.port}/3"
    queue = kombu.Queue("creds", routing_key="creds")
    with kombu.Connection(url) as conn:
        info = conn.info()
        assert (info["userid"], info["password"], info["virtual_host"]) == (USER, PASSWORD, "3")
        kombu.Producer(conn, serializer="json").publish(1, routing_key="creds", declare=[queue])
        # What Kombu's own redis_client fixture does with info(): same server, same db.
        raw = redis.Redis(host=info["hostname"], port=info["port"], db=int(info["virtual_host"]),
                          username=info["userid"], password=info["password"])  # fmt: skip
        assert raw.llen("creds") == 1
        assert conn.as_uri() == f"durable+redis://{USER}:**@127.0.0.1:{secured.port}/3"
        uri = conn.as_uri(include_password=True)
    # The full URI and a clone both lead back to the same queue.
    with kombu.Connection(uri) as again, again.clone() as clone:
        kombu.Producer(clone, serializer="json").publish(2, routing_key="creds", declare=[queue])
        simple = again.SimpleQueue(queue)
        assert [simple.get(timeout=5).payload for _ in range(2)] == [1, 2]
        simple.close()


class TLSRedis:
    """redis-server speaking only TLS on a free port, with a self-signed certificate."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.cert, self.key = tmp_path / "cert.pem", tmp_path / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-keyout", str(self.key), "-out", str(self.cert), "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
        self.dir = tmp_path
        self.proc: subprocess.Popen[bytes] | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, ssl=True,
                           ssl_ca_certs=str(self.cert), socket_timeout=5)  # fmt: skip

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key),
             "--tls-ca-cert-file", str(self.cert), "--tls-auth-clients", "no",
             "--save", "", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self._ping, timeout=15, message=f"TLS redis-server on port {self.port}")

    def _ping(self) -> bool:
        try:
            return bool(self.client().ping())
        except (redis.RedisError, OSError):
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TLSRedis]:
    server = TLSRedis(tmp_path)
    try:
        yield server
    finally:
        server.stop()
        shutdown_all(1.0)


def test_rediss_publishes_over_tls_and_drains_a_backlog_over_tls(tls_redis: TLSRedis) -> None:
    # Before: the channel spoke plaintext to a TLS redis (Kombu's _connparams
    # always sets connection_class, so the old "rediss -> SSL class" branch never
    # applied, and the URL's ssl_* options never reached the channel): every
    # publish spilled, and consuming failed with "Connection reset by peer".
    url = f"durable+rediss://127.0.0.1:{tls_redis.port}/0?ssl_ca_certs={tls_redis.cert}"
    queue = kombu.Queue("tls", routing_key="tls")
    with kombu.Connection(url) as conn:
        producer = kombu.Producer(conn, serializer="json")
        for seq in range(10):  # broker not started yet: these spill
            producer.publish(seq, routing_key="tls", declare=[queue])
        tls_redis.start()
        wait_for(lambda: tls_redis.client().llen("tls") == 10, timeout=60,
                 message="the spilled backlog to drain over TLS")  # fmt: skip
        producer.publish(10, routing_key="tls", declare=[queue])
        simple = conn.SimpleQueue(queue)
        assert [simple.get(timeout=10).payload for _ in range(11)] == list(range(11))
        simple.close()
