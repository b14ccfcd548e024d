"""Run real ``celery worker`` / ``celery beat`` / python subprocesses for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Proc:
    """A subprocess whose output goes to a log file that a failing test can print."""

    def __init__(
        self,
        argv: Sequence[str],
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.log = log
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), str(cwd or ROOT), full_env.get("PYTHONPATH", "")]
        )
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        full_env.update(env or {})
        self._logf = open(log, "ab")  # noqa: SIM115 - closed in wait()/kill()
        self.proc = subprocess.Popen(
            list(argv),
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=str(cwd or ROOT),
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        if not self._logf.closed:
            self._logf.flush()
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (Celery's warm shutdown) and wait."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group (worker and its pool children)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.wait(10)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            rc = self.proc.wait(timeout=10)
        self._logf.close()
        return rc


def python(script: str | Path, *args: str, log: Path, **kw: object) -> Proc:
    return Proc([sys.executable, str(script), *args], log=log, **kw)  # type: ignore[arg-type]


def celery(*args: str, log: Path, **kw: object) -> Proc:
    return Proc([sys.executable, "-m", "celery", *args], log=log, **kw)  # type: ignore[arg-type]


def wait_ready(proc: Proc, timeout: float = 90.0) -> Proc:
    """Wait until a ``celery worker`` subprocess logged ``ready.``; fail with its log."""
    from .wait import wait_for

    wait_for(
        lambda: " ready." in proc.output() or not proc.alive(),
        timeout=timeout,
        message=lambda: f"worker ready; log of {proc.log.name}:\n{proc.output()[-3000:]}",
    )
    assert proc.alive(), proc.output()[-3000:]
    return proc
