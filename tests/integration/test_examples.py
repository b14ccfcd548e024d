"""Every example in ``examples/`` run as its README says, against real redis-servers.

Each test starts the example's own processes (``celery -A app worker``, the
example's scripts) as subprocesses from the example's folder and checks what a
user would see in their output.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.processes import ROOT, Proc, celery, python, wait_ready
from tests.helpers.redis_server import RedisServer, free_port
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration

EXAMPLES = ROOT / "examples"


class Runner:
    """Starts an example's processes with its env and kills them all at the end."""

    def __init__(self, example: str, tmp_path: Path, **env: str) -> None:
        self.cwd = EXAMPLES / example
        self.tmp_path = tmp_path
        self.env = env
        self.procs: list[Proc] = []

    def worker(self, *args: str, name: str = "worker") -> Proc:
        proc = celery(
            "-A", "app", "worker", "--loglevel=INFO", "--concurrency=1",
            f"--hostname={name}@%h", *args,
            log=self.tmp_path / f"{name}.log", env=self.env, cwd=self.cwd,
        )  # fmt: skip
        self.procs.append(proc)
        return wait_ready(proc)

    def python(self, script: str, *args: str, name: str | None = None) -> Proc:
        proc = python(
            self.cwd / script, *args,
            log=self.tmp_path / f"{name or script}.log", env=self.env, cwd=self.cwd,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def cli(self, *args: str) -> Proc:
        proc = celery(
            "-A", "app", *args,
            log=self.tmp_path / f"cli-{len(self.procs)}.log", env=self.env, cwd=self.cwd,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()


@pytest.fixture
def runners(tmp_path: Path) -> Iterator[list[Runner]]:
    made: list[Runner] = []
    try:
        yield made
    finally:
        for runner in made:
            runner.close()


def count_lines(proc: Proc, pattern: str) -> int:
    return len(re.findall(pattern, proc.output(), flags=re.MULTILINE))


def processed(proc: Proc, what: str = "order") -> list[int]:
    return [int(n) for n in re.findall(rf"(?:processed|resized) {what} (\d+)", proc.output())]


def test_producer_worker(tmp_path: Path, runners: list[Runner]) -> None:
    """README: publish with redis up, then down (returns at once), then drain; all arrive."""
    broker = RedisServer(persistent=True).start()
    try:
        run = Runner("producer_worker", tmp_path, REDIS_URL=broker.url)
        runners.append(run)
        worker = run.worker()
        up = run.python("producer.py", "20", "0.02", name="producer-up")
        assert up.wait(60) == 0, up.output()[-2000:]
        # Let the worker take everything first: a message redis hands out (BRPOP)
        # just before it dies is Kombu's redis consumer's problem, not ours (docs/faq.md).
        wait_for(lambda: set(range(20)) <= set(processed(worker)), timeout=30)
        broker.stop()
        down = run.python("producer.py", "20", "0.02", "20", name="producer-down")
        assert down.wait(60) == 0, down.output()[-2000:]
        out = down.output()
        assert "done: 20 orders published" in out
        slowest = float(re.search(r"slowest publish ([\d.]+) s", out).group(1))  # type: ignore[union-attr]
        assert slowest < 2.0, out[-1000:]
        broker.start()
        drain = run.cli("durable", "spill", "drain", "--timeout", "60")
        assert drain.wait(90) == 0, drain.output()
        assert re.search(r"drained \d+ spilled message\(s\)", drain.output()), drain.output()
        wait_for(
            lambda: set(processed(worker)) == set(range(40)),
            timeout=60,
            message=lambda: f"all 40 orders processed; worker log:\n{worker.output()[-3000:]}",
        )
        firsts = [n for n in dict.fromkeys(processed(worker)) if n >= 20]
        assert firsts == sorted(firsts), firsts
    finally:
        broker.close()


def test_dead_letter(tmp_path: Path, runners: list[Runner], redis_server: RedisServer) -> None:
    """README: three charges fail and are dumped; after fix.py beat restores them."""
    run = Runner("dead_letter", tmp_path, REDIS_URL=redis_server.url, RESTORE_BACKOFF="6")
    runners.append(run)
    worker = run.worker("-B", f"--schedule={tmp_path / 'celerybeat-schedule'}")
    sender = run.python("send.py", "3")
    assert sender.wait(30) == 0, sender.output()
    task_ids = re.findall(r"sent order \d as task (\S+)", sender.output())
    assert len(task_ids) == 3
    wait_for(
        lambda: count_lines(worker, r"payment service down, order \d") >= 3,
        timeout=30,
        message=lambda: f"three failures; worker log:\n{worker.output()[-3000:]}",
    )
    listing = run.cli("durable", "dlq", "ls")
    assert listing.wait(30) == 0, listing.output()
    assert "3 dumps, 0 parked, 0 quarantined" in listing.output(), listing.output()
    assert all(task_id in listing.output() for task_id in task_ids)
    fix = run.python("fix.py")
    assert fix.wait(30) == 0, fix.output()
    wait_for(
        lambda: count_lines(worker, r"charged order \d \(task \S+, restore #1\)") >= 3,
        timeout=40,
        message=lambda: f"three restored charges; worker log:\n{worker.output()[-3000:]}",
    )
    charged = re.findall(r"charged order (\d) \(task (\S+), restore", worker.output())
    assert sorted(charged) == sorted(zip(["1", "2", "3"], task_ids, strict=True))


def test_fleet_redis_dlq(tmp_path: Path, runners: list[Runner], redis_server: RedisServer) -> None:
    """README: two workers dump into one redis store; the CLI lists and restores all."""
    dumps = RedisServer().start()
    try:
        run = Runner("fleet_redis_dlq", tmp_path, REDIS_URL=redis_server.url, DLQ_URL=dumps.url)
        runners.append(run)
        eu = run.worker("-Q", "eu", name="eu")
        us = run.worker("-Q", "us", name="us")
        sender = run.python("send.py", "3")
        assert sender.wait(30) == 0, sender.output()
        wait_for(
            lambda: (
                count_lines(eu, "object storage unreachable") >= 3
                and count_lines(us, "object storage unreachable") >= 3
            ),
            timeout=30,
            message=lambda: f"six failures; logs:\n{eu.output()[-2000:]}\n{us.output()[-2000:]}",
        )

        def listed() -> str:
            ls = run.cli("durable", "dlq", "ls")
            assert ls.wait(30) == 0, ls.output()
            return ls.output()

        def six_listed() -> str:
            out = listed()
            return out if "6 dumps" in out else ""

        wait_for(six_listed, timeout=30)
        as_json = run.cli("durable", "dlq", "ls", "--json")
        assert as_json.wait(30) == 0, as_json.output()
        nodes = sorted(
            json.loads(line)["hostname"].split("@")[0]
            for line in as_json.output().splitlines()
            if line.startswith("{")
        )
        assert nodes == ["eu"] * 3 + ["us"] * 3, as_json.output()
        run.python("fix.py").wait(30)
        restore = run.cli("durable", "dlq", "restore", "--all")
        assert restore.wait(30) == 0, restore.output()
        assert "restored 6 dump(s) (eu: 3, us: 3)" in restore.output(), restore.output()
        wait_for(
            lambda: (
                sorted(processed(eu, "image")) == [1, 2, 3]
                and sorted(processed(us, "image")) == [4, 5, 6]
            ),
            timeout=30,
            message=lambda: f"restored images; logs:\n{eu.output()[-2000:]}\n{us.output()[-2000:]}",
        )
        assert "0 dumps" in listed()
    finally:
        dumps.close()


def answers(proc: Proc) -> list[tuple[int, int, float]]:
    """(order, web pid, seconds) for every ``queued order N in process P (S s)`` line."""
    found = re.findall(r"queued order (\d+) in process (\d+) \(([\d.]+) s\)", proc.output())
    return [(int(o), int(p), float(s)) for o, p, s in found]


def test_web_multiprocess(tmp_path: Path, runners: list[Runner], durable_dir: Path) -> None:
    """README: three forked web processes keep answering while redis is down."""
    broker = RedisServer(persistent=True).start()
    port = free_port()
    try:
        run = Runner("web_multiprocess", tmp_path, REDIS_URL=broker.url)
        runners.append(run)
        worker = run.worker()
        server = run.python("serve.py", str(port), "3")
        wait_for(lambda: server.output().count("serving") >= 3, timeout=30)
        before = run.python("client.py", str(port), "20", "0", name="client-before")
        assert before.wait(60) == 0, before.output()
        assert len(answers(before)) == 20
        # As in the README: the worker has taken these before redis goes away.
        wait_for(lambda: set(range(20)) <= set(processed(worker)), timeout=30)
        broker.stop()
        during = run.python("client.py", str(port), "20", "20", name="client-during")
        assert during.wait(60) == 0, during.output() + server.output()
        outage = answers(during)
        assert sorted(o for o, _, _ in outage) == list(range(20, 40))
        assert max(s for _, _, s in outage) < 2.0, outage
        # One spill store per publishing process (the worker has one too).
        stores = [p for p in (durable_dir / "spill").glob("*/*") if (p / "CURRENT").exists()]
        store_pids = {int(p.name.split("-")[-2]) for p in stores}
        assert {pid for _, pid, _ in outage} <= store_pids, (stores, outage)
        listing = run.cli("durable", "spill", "ls")
        assert listing.wait(30) == 0, listing.output()
        assert all(f"-{pid}-" in listing.output() for _, pid, _ in outage), listing.output()
        broker.start()
        wait_for(
            lambda: set(processed(worker)) == set(range(40)),
            timeout=60,
            message=lambda: f"40 orders processed; worker log:\n{worker.output()[-3000:]}",
        )
        server.terminate()
    finally:
        broker.close()
