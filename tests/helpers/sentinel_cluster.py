"""A real Sentinel-managed redis on free loopback ports: master, replica, three Sentinels.

Sentinels rewrite their configuration file (they record the other Sentinels,
the replicas and every failover), so each one gets its own writable copy in the
cluster's temporary directory.  Timings are small so a failover takes seconds:
``down-after-milliseconds`` (a master not answering this long is subjectively
down) and ``failover-timeout``.

``kill_master()`` SIGKILLs the current master (a crash); ``wait_failover()``
waits until a quorum of Sentinels names another master and that master accepts
writes.  ``stop_sentinel(i)``/``start_sentinel(i)`` take one Sentinel away and
bring it back on the same port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import redis

from .redis_server import REDIS_SERVER, free_port
from .wait import wait_for

REDIS_SENTINEL = shutil.which("redis-sentinel")
MASTER_NAME = "durable-master"


class _Node:
    """One redis process (server or Sentinel) on ``127.0.0.1:port``."""

    def __init__(self, argv: list[str], port: int, log: Path) -> None:
        self.argv = argv
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> None:
        assert self.proc is None, "already running"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._ping, timeout=30, message=f"redis on port {self.port}")

    def _ping(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"redis on port {self.port} exited with {self.proc.returncode}: "
                f"{self.log.read_text(errors='replace')[-2000:]}"
            )
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None


class SentinelCluster:
    """Master + replica + ``n`` Sentinels, all on loopback, in a temporary directory."""

    def __init__(
        self,
        sentinels: int = 3,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        server_args: tuple[str, ...] = (),
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="durable-sentinel-"))
        self.master_name = MASTER_NAME
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.servers: list[_Node] = []
        self.sentinels: list[_Node] = []
        master_port = free_port()
        for i, replica_of in enumerate([None, master_port]):
            port = master_port if replica_of is None else free_port()
            data = self.dir / f"server{i}"
            data.mkdir()
            argv = [
                REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1",
                "--protected-mode", "no", "--save", "", "--appendonly", "no",
                "--dir", str(data),
            ]  # fmt: skip
            argv += list(server_args)  # e.g. --min-replicas-to-write 1
            if replica_of is not None:
                argv += ["--replicaof", "127.0.0.1", str(replica_of)]
            self.servers.append(_Node(argv, port, self.dir / f"server{i}.log"))
        for i in range(sentinels):
            port = free_port()
            conf = self.dir / f"sentinel{i}.conf"
            conf.write_text(
                f"port {port}\n"
                "bind 127.0.0.1\n"
                "protected-mode no\n"
                f"dir {self.dir}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}\n"
                f"sentinel failover-timeout {MASTER_NAME} {failover_timeout_ms}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            argv = [REDIS_SENTINEL, str(conf)] if REDIS_SENTINEL else [
                REDIS_SERVER, str(conf), "--sentinel",
            ]  # fmt: skip
            self.sentinels.append(_Node(argv, port, self.dir / f"sentinel{i}.log"))

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> SentinelCluster:
        for server in self.servers:
            server.start()
        wait_for(self._replica_in_sync, timeout=30, message="replica in sync with the master")
        for sentinel in self.sentinels:
            sentinel.start()
        wait_for(
            self._sentinels_ready, timeout=60, message="Sentinels see each other and the replica"
        )
        return self

    def close(self) -> None:
        for node in [*self.sentinels, *self.servers]:
            node.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _replica_in_sync(self) -> bool:
        try:
            info = self.servers[1].client().info("replication")
        except redis.RedisError:
            return False
        return info.get("master_link_status") == "up"

    def _sentinels_ready(self) -> bool:
        try:
            for sentinel in self.sentinels:
                state = sentinel.client().sentinel_master(MASTER_NAME)
                if int(state["num-other-sentinels"]) < len(self.sentinels) - 1:
                    return False
                if int(state["num-slaves"]) < 1:
                    return False
        except redis.RedisError:
            return False
        return True

    # -- URLs ----------------------------------------------------------------------
    def sentinel_urls(self, first_scheme: str = "durable+sentinel", db: int = 0) -> str:
        """``durable+sentinel://127.0.0.1:P1;sentinel://127.0.0.1:P2;.../db``."""
        urls = [f"sentinel://127.0.0.1:{s.port}" for s in self.sentinels]
        urls[0] = f"{first_scheme}://127.0.0.1:{self.sentinels[0].port}"
        return ";".join(urls) + f"/{db}"

    @property
    def transport_options(self) -> dict[str, object]:
        return {"master_name": MASTER_NAME}

    # -- the master ----------------------------------------------------------------
    def master_port(self) -> int:
        """The master's port as a live Sentinel reports it."""
        for sentinel in self.sentinels:
            if not sentinel.alive:
                continue
            with contextlib.suppress(redis.RedisError):
                _host, port = sentinel.client().sentinel_get_master_addr_by_name(MASTER_NAME)
                return int(port)
        raise AssertionError("no live Sentinel names a master")

    def server_on(self, port: int) -> _Node:
        return next(s for s in self.servers if s.port == port)

    def master(self) -> _Node:
        return self.server_on(self.master_port())

    def replica(self) -> _Node:
        master = self.master_port()
        return next(s for s in self.servers if s.port != master)

    def kill_master(self) -> _Node:
        """SIGKILL the current master; return it (dead)."""
        master = self.master()
        master.kill()
        return master

    def wait_failover(self, old_port: int, timeout: float = 90.0) -> _Node:
        """Wait until the Sentinels promoted a new master and it takes writes; return it."""

        def promoted() -> _Node | None:
            ports = set()
            for sentinel in self.sentinels:
                if not sentinel.alive:
                    continue
                try:
                    ports.add(
                        int(sentinel.client().sentinel_get_master_addr_by_name(MASTER_NAME)[1])
                    )
                except (redis.RedisError, TypeError):
                    return None
            if len(ports) != 1 or old_port in ports:
                return None
            node = self.server_on(ports.pop())
            try:
                role = node.client().info("replication").get("role")
            except redis.RedisError:
                return None
            return node if role == "master" else None

        return wait_for(promoted, timeout=timeout, interval=0.1, message="Sentinel failover")

    # -- Sentinels -------------------------------------------------------------------
    def stop_sentinel(self, index: int) -> None:
        self.sentinels[index].kill()

    def start_sentinel(self, index: int) -> None:
        self.sentinels[index].start()

    # -- replication -----------------------------------------------------------------
    def wait_replicated(self, timeout: float = 30.0) -> None:
        """Wait until the replica has every write the master has (its offset caught up)."""

        def caught_up() -> bool:
            try:
                offset = int(self.master().client().info("replication")["master_repl_offset"])
                replica = self.replica().client().info("replication")
            except redis.RedisError:
                return False
            return int(replica.get("slave_repl_offset", -1)) >= offset

        wait_for(caught_up, timeout=timeout, interval=0.1, message="replica caught up")

    def dump_store_url(self, db: int = 2) -> str:
        """A ``redis+sentinel://`` dump store URL on this cluster's master (database ``db``)."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{db}?master_name={MASTER_NAME}"
