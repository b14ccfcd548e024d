"""A real redis-server on a free loopback port, that tests can stop, kill and freeze."""

from __future__ import annotations

import gc
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import redis

from .wait import wait_for

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """``redis-server`` on ``127.0.0.1:port`` (no persistence unless asked).

    ``stop()`` SIGKILLs it (a crash, not a shutdown), ``start()`` brings it back on
    the same port with an empty dataset, ``freeze()``/``thaw()`` SIGSTOP/SIGCONT it.
    """

    def __init__(self, port: int | None = None, persistent: bool = False) -> None:
        self.port = port or free_port()
        #: AOF with fsync on every write: a SIGKILL loses nothing redis acknowledged,
        #: like a production broker; without it a restart starts empty.
        self.persistent = persistent
        self.dir = Path(tempfile.mkdtemp(prefix="durable-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=5)

    def start(self) -> RedisServer:
        assert self.proc is None, "already running"
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.persistent else "no",
                "--appendfsync",
                "always",
                "--dir",
                str(self.dir),
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._ping, timeout=15, message=f"redis-server on port {self.port}")
        return self

    def _ping(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """SIGKILL the server (its data is gone: no persistence)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def freeze(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        # A test's AsyncResults sit in reference cycles; their __del__ talks to this
        # server (Celery 5.4 retries it for ~20 s each when it is gone, and a __del__
        # running inside the garbage collector at a bad moment crashed CPython 3.11.7's
        # ast.parse).  Collect them while the server still answers.
        gc.collect()
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
