"""Read a test redis-server's append-only file to tell redis's own consumer window apart.

Kombu's redis consumer takes a message with BRPOP (redis removes it and logs the
pop to the AOF) and only then records it in its ``unacked`` hash.  If redis is
SIGKILLed after it logged the pop but before the worker read the reply, the
message is gone: no queue, no ``unacked`` entry, never delivered.  Plain Kombu
loses it the same way; celery-durable closes the part of that window it can see
(a reply that arrived, see ``DurableQoS``) but not a reply redis never sent.

:func:`popped_never_unacked` replays the AOF's pushes and pops of one list and
returns the messages that left it by a pop and never reached ``unacked``, so a
test can count those apart and say why, instead of calling them lost by us.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any

__all__ = ["popped_never_unacked"]


def _commands(data: bytes) -> list[list[bytes]]:
    """The RESP arrays of an AOF file (a torn last command is dropped, as redis does)."""
    out: list[list[bytes]] = []
    pos = 0
    try:
        while pos < len(data):
            if data[pos : pos + 1] != b"*":  # an RDB preamble or garbage: not ours to read
                break
            end = data.index(b"\r\n", pos)
            count = int(data[pos + 1 : end])
            pos = end + 2
            args = []
            for _ in range(count):
                end = data.index(b"\r\n", pos)
                size = int(data[pos + 1 : end])
                pos = end + 2
                args.append(data[pos : pos + size])
                pos += size + 2
            if pos > len(data):
                break
            out.append(args)
    except ValueError:  # torn tail
        pass
    return out


def _aof_files(directory: Path) -> list[Path]:
    manifest = next(directory.glob("appendonlydir/*.manifest"), None)
    if manifest is None:
        return sorted(directory.glob("*.aof"))
    files = []
    for line in manifest.read_text().splitlines():
        fields = line.split()
        name = fields[fields.index("file") + 1]
        files.append(manifest.parent / name)
    return files


def popped_never_unacked(directory: Path, queue: str = "celery") -> list[dict[str, Any]]:
    """Messages popped from ``queue`` whose delivery tag never entered ``unacked``."""
    items: deque[bytes] = deque()
    popped: list[bytes] = []
    unacked: set[str] = set()
    for path in _aof_files(directory):
        for args in _commands(path.read_bytes()):
            name = args[0].upper()
            if len(args) < 2 or args[1] != queue.encode():
                if name == b"HSET" and len(args) >= 3 and args[1] == b"unacked":
                    unacked.update(args[i].decode() for i in range(2, len(args), 2))
                continue
            if name == b"LPUSH":
                items.extendleft(args[2:])
            elif name == b"RPUSH":
                items.extend(args[2:])
            elif name == b"RPOP" and items:
                popped.append(items.pop())
            elif name == b"LPOP" and items:
                popped.append(items.popleft())
            elif name == b"DEL":
                items.clear()
    lost = []
    for raw in popped:
        message = json.loads(raw)
        if message["properties"]["delivery_tag"] not in unacked:
            lost.append(message)
    return lost
