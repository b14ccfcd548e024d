"""A throwaway RabbitMQ node on free loopback ports, that tests can stop, kill, freeze and alarm.

The node runs as the current user from the Debian package's scripts, with a
node name, data directory, log directory, HOME (Erlang cookie) and epmd port of
its own, and no plugins: nothing is shared with a system RabbitMQ.  Starting
takes ~10 s on an idle 2-core machine (much more under load), so tests share
one node per module and isolate themselves with a virtual host each
(:meth:`RabbitMQServer.new_vhost`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import amqp

from .redis_server import free_port
from .wait import wait_for

SBIN = Path("/usr/lib/rabbitmq/bin")
EPMD = shutil.which("epmd") or "/usr/bin/epmd"


def available() -> bool:
    return (SBIN / "rabbitmq-server").exists()


class RabbitMQServer:
    """``rabbitmq-server`` with its AMQP listener on ``127.0.0.1:port``.

    ``kill()`` SIGKILLs the beam process (a crash: confirmed persistent messages
    on durable queues survive it), ``stop()`` SIGTERMs it (RabbitMQ's clean
    shutdown), ``start()`` brings it back on the same ports with the same data
    directory, ``freeze()``/``thaw()`` SIGSTOP/SIGCONT it.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node = f"durable{uuid.uuid4().hex[:8]}@localhost"
        self.dir = Path(tempfile.mkdtemp(prefix="durable-rabbitmq-"))
        (self.dir / "home").mkdir()
        (self.dir / "enabled_plugins").write_text("")
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None  # the beam.smp process (the script is its parent)
        self._vhosts = 0

    # -- environment -------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HOME=str(self.dir / "home"),
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            ERL_EPMD_PORT=str(self.epmd_port),
            RABBITMQ_MNESIA_BASE=str(self.dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.dir / "log"),
            RABBITMQ_PID_FILE=str(self.dir / "beam.pid"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.dir / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(self.dir / "rabbitmq"),  # none: defaults
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.dir / "advanced.config"),
            # Schedulers that do not busy-wait: the machine is shared.
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+sbwt none +sbwtdcpu none +sbwtdio none",
        )
        return env

    def url(self, vhost: str = "/") -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{vhost.replace('/', '%2F')}"

    # -- life cycle ----------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> RabbitMQServer:
        assert self.proc is None, "already running"
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "beam.pid").unlink()
        log = open(self.dir / "server.out", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [str(SBIN / "rabbitmq-server")],
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_for(
            self._ready,
            timeout=timeout,
            interval=0.2,
            message=lambda: f"rabbitmq-server {self.node}; output:\n{self.output()[-3000:]}",
        )
        self.pid = self._beam_pid()
        return self

    def output(self) -> str:
        text = (self.dir / "server.out").read_text(errors="replace")
        log = self.dir / "log" / f"{self.node}.log"
        if log.exists():
            text += "\n--- log ---\n" + log.read_text(errors="replace")[-3000:]
        return text

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"rabbitmq-server exited with {self.proc.returncode}:\n"
                               f"{self.output()[-3000:]}")  # fmt: skip
        with socket.socket() as sock:
            sock.settimeout(1.0)
            if sock.connect_ex(("127.0.0.1", self.port)) != 0:
                return False
        try:  # the listener opens last in the boot sequence; a handshake proves it
            with amqp.Connection(f"127.0.0.1:{self.port}", connect_timeout=5) as conn:
                return bool(conn.connected)
        except Exception:
            return False

    def _beam_pid(self) -> int:
        pidfile = self.dir / "beam.pid"
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=30,
                 message="rabbitmq pid file")  # fmt: skip
        return int(pidfile.read_text().strip())

    def kill(self) -> None:
        """SIGKILL the node (a crash)."""
        self._signal_and_wait(signal.SIGKILL, 30)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM: RabbitMQ shuts down cleanly (SIGKILL if it takes longer than ``timeout``)."""
        self._signal_and_wait(signal.SIGTERM, timeout)

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> None:
        if self.proc is None:
            return
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
                os.kill(self.pid, sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        if self.pid is not None:  # the script may exit before beam is reaped
            wait_for(lambda: not _alive(self.pid), timeout=30, message="beam to exit")  # type: ignore[arg-type]
        self.proc = None
        self.pid = None

    def freeze(self) -> None:
        assert self.pid is not None
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.pid is not None
        os.kill(self.pid, signal.SIGCONT)

    def close(self) -> None:
        self.kill()
        subprocess.run([EPMD, "-port", str(self.epmd_port), "-kill"], env=self.env(),
                       capture_output=True, timeout=30, check=False)  # fmt: skip
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- administration (rabbitmqctl: ~1 s of CPU per call) ------------------------
    def ctl(self, *args: str, timeout: float = 120.0) -> str:
        out = subprocess.run(
            [str(SBIN / "rabbitmqctl"), "-n", self.node, *args],
            env=self.env(), capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {out.stdout}{out.stderr}")
        return out.stdout

    def new_vhost(self) -> str:
        """A fresh virtual host the guest user may use: one per test, nothing left over."""
        self._vhosts += 1
        name = f"t{self._vhosts}-{uuid.uuid4().hex[:6]}"
        self.ctl("add_vhost", name)
        self.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return name

    def set_memory_watermark(self, fraction: float) -> None:
        """``set_vm_memory_high_watermark``: a tiny fraction raises the memory alarm."""
        self.ctl("set_vm_memory_high_watermark", repr(fraction))

    def queue_length(self, queue: str, vhost: str = "/") -> int:
        with amqp.Connection(f"127.0.0.1:{self.port}", virtual_host=vhost,
                             connect_timeout=10) as conn:  # fmt: skip
            channel = conn.channel()
            return int(channel.queue_declare(queue, passive=True).message_count)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
    return True
