"""The one outside call of the I/O-bound steps: a GET to the bench's slow HTTP server.

Shared by the saga steps and the bare RQ chain so both sides wait the same way.
Each thread keeps one keep-alive connection, as an SDK with a connection pool
would (a forking worker's work-horse starts with none, so it connects per job,
as it would in production). A connection the server closed is reopened once.
"""

from __future__ import annotations

import http.client
import os
import threading
from urllib.parse import urlsplit

ENV = "BENCH_IO_URL"
TIMEOUT = 10.0
_local = threading.local()


def _connection(host: str, port: int) -> http.client.HTTPConnection:
    conn: http.client.HTTPConnection | None = getattr(_local, "conn", None)
    if conn is None or (conn.host, conn.port) != (host, port) or getattr(_local, "pid", None) != os.getpid():
        conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
        _local.conn, _local.pid = conn, os.getpid()
    return conn


def call_slow_server(url: str | None = None) -> int:
    """GET the slow server (BENCH_IO_URL unless given) and return the response size; raises on non-200."""
    target = urlsplit(url or os.environ[ENV])
    host, port = target.hostname or "127.0.0.1", target.port or 80
    for attempt in (1, 2):
        conn = _connection(host, port)
        try:
            conn.request("GET", target.path or "/")
            response = conn.getresponse()
            body = response.read()
        except (http.client.HTTPException, OSError):
            conn.close()
            _local.conn = None
            if attempt == 2:
                raise
            continue
        if response.status != 200:
            raise RuntimeError(f"slow server answered {response.status}")
        return len(body)
    raise AssertionError("unreachable")
