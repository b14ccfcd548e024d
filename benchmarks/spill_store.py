"""Spill store throughput against raw plyvel, in one run.

    python benchmarks/spill_store.py [--n 100000] [--body 300] [--repeat 3] [--json PATH]

Prints appends/s (single ``append`` and ``extend`` of 1000), peek+ack records/s,
the raw plyvel ``put`` and ``write_batch`` rates for values of the same encoded
size, and the ratios.  Targets (issue 2): single append >= 200,000/s and
>= 0.5x raw ``put``.  ``append`` includes encoding the record (JSON metadata +
CRC32); the ``celery-like`` line uses the ~20 headers Celery's protocol 2 sends.
Also: time to open a store holding the whole backlog, to compact it after the
drain, and to peek a drained store (all O(1) or close to it by design).
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import plyvel

from celery_durable.spill import SpillRecord, SpillStore, encode

BATCH = 1000


def small_record(body: int) -> SpillRecord:
    return SpillRecord(
        body=b"x" * body,
        exchange="",
        routing_key="celery",
        content_type="application/json",
        content_encoding="utf-8",
        headers={"task": "proj.tasks.add", "id": str(uuid.uuid4())},
    )


def celery_record(body: int) -> SpillRecord:
    tid = str(uuid.uuid4())
    headers = {
        "lang": "py",
        "task": "proj.tasks.add",
        "id": tid,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": tid,
        "parent_id": None,
        "argsrepr": "(1, 2)",
        "kwargsrepr": "{}",
        "origin": "gen1@host",
        "ignore_result": False,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    properties = {
        "correlation_id": tid,
        "reply_to": str(uuid.uuid4()),
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": "celery"},
        "priority": 0,
        "body_encoding": "base64",
        "delivery_tag": str(uuid.uuid4()),
    }
    return SpillRecord(
        body=b"x" * body,
        exchange="",
        routing_key="celery",
        content_type="application/json",
        content_encoding="utf-8",
        headers=headers,
        properties=properties,
    )


def rate(out: dict[str, float], key: str, n: int, fn: Callable[[], None]) -> None:
    """``out[key]``: wall-clock rate; ``out[key + "_cpu"]``: rate per CPU second of
    this process (steadier when other work shares the machine)."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    out[key] = n / (time.perf_counter() - start)
    out[key + "_cpu"] = n / max(time.process_time() - cpu, 1e-9)


def bench_store(root: Path, n: int, record: SpillRecord) -> dict[str, float]:
    out: dict[str, float] = {}
    store = SpillStore(root / "single", max_bytes=1 << 40)
    append = store.append
    rate(out, "append", n, lambda: [append(record) for _ in range(n)] and None)
    store.close()

    store = SpillStore(root / "batched", max_bytes=1 << 40)
    batch = [record] * BATCH
    rate(out, "extend", n, lambda: [store.extend(batch) for _ in range(n // BATCH)] and None)
    store.close()
    start = time.perf_counter()
    store = SpillStore(root / "batched", max_bytes=1 << 40)  # a full backlog: no scan
    out["open_s"] = time.perf_counter() - start
    assert len(store) == n

    def drain() -> None:
        while True:
            items = store.peek(BATCH)
            if not items:
                return
            store.ack(items[-1][0])

    rate(out, "peek_ack", n, drain)
    start = time.perf_counter()
    store.compact()
    out["compact_s"] = time.perf_counter() - start
    start = time.perf_counter()
    store.peek(1)  # the seek cursor skips the n tombstones (DESIGN.md section 7)
    out["peek_empty_s"] = time.perf_counter() - start
    store.close()
    return out


def bench_raw(root: Path, n: int, value: bytes) -> dict[str, float]:
    out: dict[str, float] = {}
    pack = struct.Struct(">Q").pack
    db = plyvel.DB(str(root / "raw-put"), create_if_missing=True)
    put = db.put
    rate(out, "put", n, lambda: [put(b"r" + pack(i), value) for i in range(n)] and None)
    db.close()

    db = plyvel.DB(str(root / "raw-batch"), create_if_missing=True)

    def batches() -> None:
        for start in range(0, n, BATCH):
            with db.write_batch() as wb:
                for i in range(start, start + BATCH):
                    wb.put(b"r" + pack(i), value)

    rate(out, "write_batch", n, batches)
    db.close()
    return out


def print_rates(raw: dict[str, float], ours: dict[str, float]) -> None:
    both = {**raw, **ours}

    def line(name: str, key: str, base: str | None = None, note: str = "") -> None:
        text = f"{name:<24}{both[key]:>10,.0f} /s  (cpu {both[key + '_cpu']:>9,.0f} /s)"
        if base is not None:
            text += (
                f"  ratio to raw {base} {both[key] / both[base]:.2f}"
                f" (cpu {both[key + '_cpu'] / both[base + '_cpu']:.2f})"
            )
        print(text + note)

    line("raw plyvel put", "put")
    line("raw plyvel write_batch", "write_batch", note=f"  (batch {BATCH})")
    line("SpillStore.append", "append", "put")
    line("SpillStore.extend", "extend", "write_batch", note=f"  (batch {BATCH})")
    line("SpillStore.peek+ack", "peek_ack", note=f"  (batch {BATCH})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="records per measurement")
    parser.add_argument("--body", type=int, default=300, help="body bytes")
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds; the best rate of each is kept"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    figures: dict[str, dict[str, float]] = {}
    n = args.n - args.n % BATCH or BATCH
    root = Path(tempfile.mkdtemp(prefix="spill-bench-"))
    try:
        for label, record in (
            ("small headers", small_record(args.body)),
            ("celery-like headers", celery_record(args.body)),
        ):
            value = encode(record)
            raw: dict[str, float] = {}
            ours: dict[str, float] = {}
            # Raw and ours alternate within each round so both see the same
            # machine load (a shared 2-core box is noisy); rates keep the best,
            # times the lowest.
            for round_ in range(args.repeat):
                sub = root / f"{label.replace(' ', '-')}-{round_}"
                sub.mkdir()
                for key, val in bench_raw(sub, n, value).items():
                    raw[key] = max(raw.get(key, 0.0), val)
                for key, val in bench_store(sub, n, record).items():
                    best = min if key.endswith("_s") else max
                    ours[key] = best(ours.get(key, val), val)
                shutil.rmtree(sub)
            print(
                f"-- {label}: body {args.body} B, encoded record {len(value)} B, "
                f"n={n}, best of {args.repeat}"
            )

            print_rates(raw, ours)
            figures[label.split()[0]] = {**raw, **ours, "record_bytes": len(value), "n": n}
            print(
                f"open with {n} waiting {ours['open_s'] * 1000:.1f} ms; "
                f"compact after drain {ours['compact_s'] * 1000:.0f} ms; "
                f"peek on drained store {ours['peek_empty_s'] * 1000:.2f} ms"
            )
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
