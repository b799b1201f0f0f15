"""A small HTTP/1.1 load generator: asyncio, raw keep-alive connections, one thread.

Why not wrk: it is not installed, and the bench must run with Python alone.
Limits, stated plainly: it runs in the bench process on the same 2 cores as the
server it loads, so every request it makes costs CPU the server cannot use (the
scenario reports how much); it speaks only what the bench needs (requests built
in advance as bytes, responses with Content-Length, keep-alive, reconnect on
`Connection: close`); one event loop tops out at a few thousand requests/s.

Two shapes:
- closed loop: `concurrency` connections, opened one by one during the warm-up,
  each sends its next request when the previous answer arrived (saturation
  throughput; latency includes queueing);
- open loop: requests at a fixed rate whatever the answers do; a request's
  latency counts from when it *should* have been sent, so a stalled server is
  not hidden by the generator waiting for it (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.measure import self_cpu_seconds

RequestFactory = Callable[[int], bytes]
Tick = Callable[[float], None]  # called about twice a second with the fraction done
CONNECT_TIMEOUT = 5.0
ANSWER_TIMEOUT = 30.0


@dataclass
class LoadResult:
    """What one load run saw."""

    duration: float
    ok: int = 0  # 2xx answers within the measured window
    failed: int = 0  # other answers, connection errors and timeouts
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, 2xx answers only
    generator_cpu: float = 0.0  # CPU seconds the bench process used meanwhile
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Successful requests per second over the window."""
        return self.ok / self.duration if self.duration > 0 else 0.0


def get_request(host: str, port: int, path: str) -> bytes:
    """A keep-alive GET."""
    return f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: keep-alive\r\n\r\n".encode()


def post_json(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A keep-alive POST of a JSON body."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: keep-alive\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


class _Conn:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, request: bytes) -> int:
        """One request, one answer; returns the status. Reconnects when needed."""
        if self.reader is not None and self.writer is not None:
            reader, writer = self.reader, self.writer
        else:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT
            )
            self.reader, self.writer = reader, writer
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length, close = None, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value == "close":
                close = True
        if length is None:
            raise RuntimeError("answer without Content-Length: the load generator cannot read it")
        await reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _record(result: LoadResult, status: int | None, latency: float, error: str = "") -> None:
    if status is not None:
        result.statuses[status] += 1
    if status is not None and 200 <= status < 300:
        result.ok += 1
        result.latencies.append(latency)
    else:
        result.failed += 1
        if error and len(result.errors) < 5:
            result.errors.append(error)


async def _ticker(start: float, total: float, tick: Tick | None, stop: asyncio.Event) -> None:
    while tick is not None and not stop.is_set():
        tick(min(1.0, (time.perf_counter() - start) / total))
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass


async def _closed(
    host: str,
    port: int,
    make: RequestFactory,
    concurrency: int,
    duration: float,
    warmup: float,
    tick: Tick | None,
) -> LoadResult:
    result = LoadResult(duration)
    counter = iter(range(10**9))
    start = time.perf_counter()
    window = (start + warmup, start + warmup + duration)
    stop = asyncio.Event()

    async def client(index: int) -> None:
        # Connections open one by one over the first half of the warm-up, as callers arrive,
        # not in one burst (a burst tends to be accepted by a single gunicorn process).
        await asyncio.sleep(warmup / 2 * index / concurrency)
        conn = _Conn(host, port)
        try:
            while (now := time.perf_counter()) < window[1]:
                request = make(next(counter))
                try:
                    status = await asyncio.wait_for(conn.send(request), ANSWER_TIMEOUT)
                    error = ""
                except (OSError, asyncio.IncompleteReadError, TimeoutError, RuntimeError, ValueError) as exc:
                    conn.close()
                    status, error = None, f"{type(exc).__name__}: {exc}"
                done = time.perf_counter()
                if now >= window[0] and done <= window[1]:
                    _record(result, status, done - now, error)
        finally:
            conn.close()

    ticker = asyncio.create_task(_ticker(start, warmup + duration, tick, stop))
    cpu = self_cpu_seconds()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    result.generator_cpu = self_cpu_seconds() - cpu
    stop.set()
    await ticker
    return result


async def _open(
    host: str,
    port: int,
    make: RequestFactory,
    rate: float,
    duration: float,
    max_connections: int,
    tick: Tick | None,
) -> LoadResult:
    result = LoadResult(duration)
    idle: asyncio.Queue[_Conn] = asyncio.Queue()
    opened = 0
    stop = asyncio.Event()
    start = time.perf_counter()
    last_answer = start

    async def one(index: int, intended: float) -> None:
        nonlocal opened, last_answer
        if idle.empty() and opened < max_connections:
            opened += 1
            conn = _Conn(host, port)
        else:
            conn = await idle.get()
        try:
            status = await asyncio.wait_for(conn.send(make(index)), ANSWER_TIMEOUT)
            error = ""
        except (OSError, asyncio.IncompleteReadError, TimeoutError, RuntimeError, ValueError) as exc:
            conn.close()
            status, error = None, f"{type(exc).__name__}: {exc}"
        last_answer = time.perf_counter()
        _record(result, status, last_answer - intended, error)
        idle.put_nowait(conn)

    ticker = asyncio.create_task(_ticker(start, duration, tick, stop))
    cpu = self_cpu_seconds()
    tasks = []
    total = int(rate * duration)
    for index in range(total):
        intended = start + index / rate
        delay = intended - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, intended)))
    done, pending = await asyncio.wait(tasks, timeout=ANSWER_TIMEOUT) if tasks else (set(), set())
    for task in pending:
        task.cancel()
        _record(result, None, 0.0, "no answer before the load generator gave up")
    # A server that falls behind answers after the window: its rate is over the longer time.
    result.duration = max(duration, last_answer - start)
    result.generator_cpu = self_cpu_seconds() - cpu
    while not idle.empty():
        idle.get_nowait().close()
    stop.set()
    await ticker
    return result


def closed_loop(
    host: str,
    port: int,
    make: RequestFactory,
    *,
    concurrency: int,
    duration: float,
    warmup: float = 1.0,
    tick: Tick | None = None,
) -> LoadResult:
    """Saturate the server with `concurrency` keep-alive connections for `warmup` + `duration` s."""
    return asyncio.run(_closed(host, port, make, concurrency, duration, warmup, tick))


def open_loop(
    host: str,
    port: int,
    make: RequestFactory,
    *,
    rate: float,
    duration: float,
    max_connections: int = 64,
    tick: Tick | None = None,
) -> LoadResult:
    """Send `rate` requests/s for `duration` s; latency counts from each request's scheduled time."""
    return asyncio.run(_open(host, port, make, rate, duration, max_connections, tick))
