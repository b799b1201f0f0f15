"""The stand-in for a slow outside API: every request waits 100 ms, then gets `200 ok`.

A `ThreadingHTTPServer` in the bench process: one thread per connection, HTTP/1.1
keep-alive, a listen backlog large enough for hundreds of concurrent callers.
Its handler is deliberately lean (request line and headers skimmed, a canned
answer written in one segment): the stock `BaseHTTPRequestHandler` parses every
header with the email parser, which at a few hundred requests/s took ~40% of a
core here, CPU the workers under test would then not have. The server's CPU is
the bench process's; the I/O scenario reports it.
"""

from __future__ import annotations

import socketserver
import threading
import time
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Self

DELAY = 0.1
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
CLOSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
MAX_LINE = 65536
MAX_HEADERS = 100


class _Handler(socketserver.StreamRequestHandler):
    delay = DELAY
    wbufsize = 64 * 1024  # the answer leaves in one segment: no Nagle / delayed-ACK stall
    disable_nagle_algorithm = True

    def handle(self) -> None:
        while True:
            request_line = self.rfile.readline(MAX_LINE)
            if not request_line.strip():
                return  # the caller closed the connection
            length, close = 0, request_line.rstrip().endswith(b"HTTP/1.0")
            for _ in range(MAX_HEADERS):
                header = self.rfile.readline(MAX_LINE)
                if header in (b"\r\n", b"\n", b""):
                    break
                name, _, value = header.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection":
                    close = value.strip().lower() == b"close"
            if length:
                self.rfile.read(length)
            time.sleep(self.delay)
            self.wfile.write(CLOSE if close else ANSWER)
            self.wfile.flush()
            if close:
                return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # listen backlog: hundreds of callers may connect at once


class SlowServer:
    """Serve on 127.0.0.1 (a free port) from a background thread; a context manager."""

    def __init__(self, delay: float = DELAY) -> None:
        handler = type("SlowHandler", (_Handler,), {"delay": delay})
        self.server = _Server(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="slow-server", daemon=True)

    @property
    def url(self) -> str:
        """Where to send the requests."""
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/slow"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
