"""A pre-forking WSGI server, the way gunicorn runs a Django app: ``python serve.py PORT [N]``.

The parent binds the socket and forks N web processes (default 3) that all
accept on it.  Each request to ``/order/<id>`` publishes ``send_receipt`` through
the durable transport and answers at once, broker up or down.  Every web process
publishes through its own spill store (LevelDB allows one process per store);
nothing is published before the fork, so no broker connection is shared.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from app import send_receipt


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The web app: ``/order/<id>`` queues a receipt for that order."""
    path = environ.get("PATH_INFO", "")
    if not path.startswith("/order/") or not path[len("/order/") :].isdigit():
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"try /order/<id>\n"]
    order_id = int(path[len("/order/") :])
    started = time.monotonic()
    send_receipt.delay(order_id, os.getpid())
    took = time.monotonic() - started
    body = f"queued order {order_id} in process {os.getpid()} ({took:.3f} s)\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(sock: socket.socket) -> None:
    """One web process: accept on the shared socket until SIGTERM."""
    server = WSGIServer(sock.getsockname(), QuietHandler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    host, port = sock.getsockname()[:2]
    server.server_name, server.server_port = socket.getfqdn(host), port
    server.setup_environ()  # what server_bind() would have done
    server.set_app(application)
    print(f"web process {os.getpid()} serving", flush=True)
    server.serve_forever()


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    sock = socket.create_server(("127.0.0.1", port), backlog=64)
    ctx = multiprocessing.get_context("fork")
    children = [ctx.Process(target=serve, args=(sock,), daemon=True) for _ in range(workers)]
    for child in children:
        child.start()
    print(f"listening on http://127.0.0.1:{port}/order/<id> with {workers} processes", flush=True)

    def stop(signum: int, frame: Any) -> None:
        # Like gunicorn: SIGTERM each web process, which flushes and exits.
        for child in children:
            child.terminate()
        for child in children:
            child.join(10)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        child.join()


if __name__ == "__main__":
    main()
