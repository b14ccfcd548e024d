"""Run every benchmark in one go and print one table of figures against their ceilings.

    python benchmarks/run.py [--json benchmark-results.json] [--only publish,latency]
        [--latency-count 100000] [--quick]

Each script in ``benchmarks/`` runs as its own process (the scripts start a
fresh process per configuration themselves) and writes its figures with
``--json``; nothing is parsed from their text.  Every figure is a ratio to a
ceiling measured in the *same* run, so machine load shifts both alike.  The
table says the machine (cores, CPU model, Python, redis-server) and the load
average before and after, and is written as JSON too.

Adding a figure is one :data:`FIGURES` entry (and, for a new script, its
arguments in :data:`SCRIPTS` if the defaults are too slow).  A figure whose
script is not in this tree is listed as such, not failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass(frozen=True)
class Figure:
    """One row: ``value`` over ``ceiling``, both keys (``a.b`` for nesting) of a script's JSON.

    ``kind``: ``ratio`` (value / ceiling, target a minimum), ``overhead``
    (value / ceiling - 1, target a maximum), ``max`` (the value itself must
    stay below ``target``; the ratio to the ceiling is shown for scale) or
    ``min`` (the value itself must reach ``target``; the ratio shown for scale) or
    ``cost`` (a cost such as CPU per call: ceiling / value, target a minimum).
    ``script`` names a :data:`SCRIPTS` entry (a script of ``benchmarks/`` and
    its arguments).
    """

    name: str
    script: str
    value: str
    ceiling: str
    kind: str
    target: float
    unit: str = "/s"
    issue: str = "14"


FIGURES: list[Figure] = [
    Figure("wal apply_async / memory://", "publish", "wal", "memory", "ratio", 0.95),
    Figure("buffered apply_async / memory://", "publish", "buffered", "memory", "ratio", 0.95),
    Figure("broker down, direct / memory://", "publish", "direct_down", "memory", "ratio", 0.95),
    Figure("broker down, wal / memory://", "publish", "wal_down", "memory", "ratio", 0.95),
    Figure(
        "drain a backlog / pipelined LPUSH of the same bytes",
        "publish",
        "drain",
        "drain_lpush",
        "ratio",
        0.5,
    ),
    Figure(
        "SpillStore.append / raw put, Celery headers (CPU)",
        "spill_store",
        "celery-like.append_cpu",
        "celery-like.put_cpu",
        "ratio",
        0.8,
    ),
    Figure(
        "SpillStore.append / raw put, 2 headers (CPU)",
        "spill_store",
        "small.append_cpu",
        "small.put_cpu",
        "ratio",
        0.8,
    ),
    Figure(
        "SpillStore.extend / raw write_batch, Celery headers (CPU)",
        "spill_store",
        "celery-like.extend_cpu",
        "celery-like.write_batch_cpu",
        "ratio",
        0.8,
    ),
    Figure(
        "SpillStore.extend / raw write_batch, 2 headers (CPU)",
        "spill_store",
        "small.extend_cpu",
        "small.write_batch_cpu",
        "ratio",
        0.8,
    ),
    Figure(
        "restore from file:// / Kombu Producer.batch",
        "restore",
        "restore_file",
        "kombu_batch",
        "ratio",
        1.0,
    ),
    Figure(
        "dead-letter capture overhead per failing task, solo worker",
        "dlq",
        "worker_dumped_s",
        "worker_plain_s",
        "overhead",
        0.03,
        unit="s",
    ),
    Figure(
        "dead-letter capture overhead, solo worker (CPU)",
        "dlq",
        "worker_dumped_cpu_s",
        "worker_plain_cpu_s",
        "overhead",
        0.03,
        unit="s",
    ),
    Figure(
        "apply_async p99.9, wal, LevelDB compacting (vs memory://)",
        "latency",
        "wal.p999_ms",
        "memory.p999_ms",
        "max",
        10.0,
        unit="ms",
    ),
    Figure(
        "apply_async p99.9, direct, broker down (vs memory://)",
        "latency",
        "direct_down.p999_ms",
        "memory.p999_ms",
        "max",
        10.0,
        unit="ms",
    ),
    # durable+amqp:// against a RabbitMQ node of its own (publish.py --broker amqp).
    Figure(
        "amqp drain / same frames pre-encoded, confirmed per batch",
        "publish_amqp",
        "drain",
        "drain_frames",
        "ratio",
        0.8,
    ),
    Figure(
        "amqp drain of a 100,000 backlog, msg/s (vs that ceiling)",
        "publish_amqp",
        "drain",
        "drain_frames",
        "min",
        20_000,
        issue="11",
    ),
    Figure(
        "amqp direct / amqp:// confirm_publish",
        "publish_amqp",
        "direct",
        "confirm_publish",
        "ratio",
        1.0,
        issue="11",
    ),
    Figure("amqp wal / memory://", "publish_amqp", "wal", "memory", "ratio", 0.9, issue="11"),
    Figure(
        "amqp wal / memory://, by CPU per call (drain included)",
        "publish_amqp",
        "wal_cpu_us",
        "memory_cpu_us",
        "cost",
        0.9,
        unit="us",
        issue="11",
    ),
    Figure(
        "amqp buffered / memory://, by CPU per call (drain included)",
        "publish_amqp",
        "buffered_cpu_us",
        "memory_cpu_us",
        "cost",
        0.9,
        unit="us",
        issue="11",
    ),
    Figure(
        "amqp buffered / memory://", "publish_amqp", "buffered", "memory", "ratio", 0.9, issue="11"
    ),
    Figure(
        "amqp broker down, direct / memory://",
        "publish_amqp",
        "direct_down",
        "memory",
        "ratio",
        0.8,
        issue="11",
    ),
    Figure(
        "amqp broker down, wal / memory://",
        "publish_amqp",
        "wal_down",
        "memory",
        "ratio",
        0.8,
        issue="11",
    ),
    Figure(
        "amqp memory alarm, direct / memory://",
        "publish_amqp",
        "blocked",
        "memory",
        "ratio",
        0.8,
        issue="11",
    ),
]

#: Arguments per script (besides ``--json``): the full run, and ``--quick``.  A
#: name that is not a file of ``benchmarks/`` says which file in :data:`SCRIPT_FILES`.
SCRIPTS: dict[str, tuple[list[str], list[str]]] = {
    "publish": (
        ["--n", "10000", "--repeat", "3", "--backlog", "100000", "--spill", "0"],
        ["--n", "1000", "--backlog", "5000", "--spill", "0"],
    ),
    "spill_store": (["--n", "100000", "--repeat", "3"], ["--n", "10000", "--repeat", "1"]),
    "restore": (["--count", "20000", "--repeat", "3"], ["--count", "1000", "--repeat", "1"]),
    "dlq": (["5000"], ["500"]),
    "latency": (["--count", "100000"], ["--count", "5000"]),
    # One RabbitMQ node for all of it (~10 s to start); apply_async calls are
    # fewer than on redis because a confirmed publish waits for RabbitMQ's disk.
    "publish_amqp": (
        ["--broker", "amqp", "--n", "2000", "--repeat", "2", "--backlog", "100000"],
        ["--broker", "amqp", "--n", "300", "--backlog", "3000"],
    ),
}
#: Runs of a script under another name (and what they need installed).
SCRIPT_FILES: dict[str, str] = {"publish_amqp": "publish"}
NEEDS: dict[str, Path] = {"publish_amqp": Path("/usr/lib/rabbitmq/bin/rabbitmq-server")}


def script_file(name: str) -> Path:
    """The file of ``benchmarks/`` that runs ``name``."""
    return HERE / f"{SCRIPT_FILES.get(name, name)}.py"


def lookup(data: dict[str, Any], key: str) -> float:
    value: Any = data
    for part in key.split("."):
        value = value[part]
    return float(value)


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        text = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=10
        ).stdout
        found = re.search(r"v=(\S+)", text)
        redis_version = found[1] if found else text.strip()
    except OSError:
        redis_version = "not found"
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except OSError:
        commit = ""
    import plyvel

    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "redis_server": redis_version,
        "plyvel": plyvel.__version__,
        "leveldb": str(plyvel.__leveldb_version__),
        "platform": platform.platform(),
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def run_script(name: str, args: list[str], tmp: Path) -> dict[str, Any] | str:
    """The script's figures, or why there are none."""
    path = script_file(name)
    if not path.exists():
        return f"benchmarks/{path.name} is not in this tree"
    needed = NEEDS.get(name)
    if needed is not None and not needed.exists():
        return f"{needed} is not installed"
    out = tmp / f"{name}.json"
    started = time.monotonic()
    print(f"-- {path.name} {' '.join(args)}", flush=True)
    proc = subprocess.run(
        [sys.executable, str(path), *args, "--json", str(out)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
    )
    print(f"   {time.monotonic() - started:.0f} s", flush=True)
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return f"{name}.py failed (exit {proc.returncode}): " + " | ".join(tail)
    return dict(json.loads(out.read_text()))


def evaluate(fig: Figure, data: dict[str, Any]) -> dict[str, Any]:
    value, ceiling = lookup(data, fig.value), lookup(data, fig.ceiling)
    ratio = value / ceiling if ceiling else float("nan")
    if fig.kind == "ratio":
        shown, met, target = ratio, ratio >= fig.target, f">= {fig.target:g}"
    elif fig.kind == "overhead":
        shown, met, target = ratio - 1, ratio - 1 <= fig.target, f"<= +{fig.target:.0%}"
    elif fig.kind == "cost":
        ratio = ceiling / value if value else float("nan")
        shown, met, target = ratio, ratio >= fig.target, f">= {fig.target:g}"
    elif fig.kind == "min":
        shown, met, target = ratio, value >= fig.target, f">= {fmt(fig.target, fig.unit)}"
    else:
        shown, met, target = ratio, value < fig.target, f"< {fig.target:g} {fig.unit}"
    return {"value": value, "ceiling": ceiling, "ratio": shown, "target": target, "met": met}


def fmt(value: float, unit: str) -> str:
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "s":
        return f"{value * 1e6:,.1f} us"
    return f"{value:,.2f} {unit}"


def uptime() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def table(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"celery-durable benchmarks, {m['date']}, commit {m['commit']}",
        f"machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}, "
        f"redis-server {m['redis_server']}, "
        f"LevelDB {m['leveldb']} (plyvel {m['plyvel']})",
        f"load average (1, 5, 15 min): before {result['load_before']}, "
        f"after {result['load_after']}",
        "",
        f"| {'figure':<60} | {'value':>12} | {'ceiling':>12} | {'ratio':>7} | "
        f"{'target':>11} | {'met':<3} |",
        f"|{'-' * 62}|{'-' * 14}|{'-' * 14}|{'-' * 9}|{'-' * 13}|-----|",
    ]
    for row in result["figures"]:
        if "skipped" in row:
            lines.append(f"| {row['name']:<60} | {row['skipped']} |")
            continue
        ratio = f"{row['ratio']:+.0%}" if row["kind"] == "overhead" else f"{row['ratio']:.2f}"
        lines.append(
            f"| {row['name']:<60} | {fmt(row['value'], row['unit']):>12} | "
            f"{fmt(row['ceiling'], row['unit']):>12} | {ratio:>7} | {row['target']:>11} | "
            f"{'yes' if row['met'] else 'NO':<3} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--json", default="benchmark-results.json", help="where to write the table as JSON"
    )
    parser.add_argument("--only", help="comma-separated scripts to run (default: all)")
    parser.add_argument(
        "--latency-count", type=int, help="calls per latency configuration (default 100,000)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the harness")
    args = parser.parse_args()

    wanted = list(dict.fromkeys(f.script for f in FIGURES))
    if args.only:
        wanted = [s for s in wanted if s in args.only.split(",")]
    result: dict[str, Any] = {"machine": machine(), "load_before": uptime()}
    raw: dict[str, dict[str, Any] | str] = {}
    with tempfile.TemporaryDirectory(prefix="durable-bench-run-") as tmp:
        for name in wanted:
            full, quick = SCRIPTS.get(name, ([], []))
            script_args = list(quick if args.quick else full)
            if name == "latency" and args.latency_count:
                script_args = ["--count", str(args.latency_count)]
            raw[name] = run_script(name, script_args, Path(tmp))
    result["load_after"] = uptime()
    rows = []
    for fig in FIGURES:
        if fig.script not in raw:
            continue
        row: dict[str, Any] = {"name": fig.name, "script": fig.script, "kind": fig.kind,
                               "unit": fig.unit, "issue": fig.issue}  # fmt: skip
        data = raw[fig.script]
        if isinstance(data, str):
            row["skipped"] = data
        else:
            row.update(evaluate(fig, data))
        rows.append(row)
    result["figures"] = rows
    result["raw"] = raw
    print()
    print(table(result))
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
