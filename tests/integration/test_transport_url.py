"""The inner broker's address reaches redis: credentials, database, info(), as_uri().

A real redis-server with an ACL user: a publish through ``durable+redis://``
must land in that server's database as that user, and every way Kombu has of
handing the connection on (``info()``, ``as_uri(include_password=True)``,
``clone()``) must lead to the same place.
"""

from __future__ import annotations

from collections.abc import Iterator

import kombu
import pytest
import redis

import celery_durable  # noqa: F401 - registers the durable aliases
from celery_durable.transport.spiller import shutdown_all
from tests.helpers.redis_server import RedisServer

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
