"""The baseline: the same four functions as a bare RQ chain, each job enqueuing the next.

Stock RQ only: `Queue.enqueue` with the JSON serializer and RQ's defaults (no
depends_on, no callbacks, no meta), run by stock RQ workers. The last job of a
chain does one pipelined round trip: INCR `bench:chain:done` (throughput runs
count it) and XADD to `bench:chain:done:<token>` (latency runs block on it).
"""

from __future__ import annotations

from redis import Redis
from rq import Queue, get_current_job
from rq.serializers import JSONSerializer

from bench.iocall import call_slow_server
from bench.sagas import STEPS

DONE = "bench:chain:done"
NOOP_LINK = "bench.chain.noop_link"
IO_LINK = "bench.chain.io_link"


def done_stream(token: str) -> str:
    """Where the last job of chain `token` reports that it finished."""
    return f"{DONE}:{token}"


def _next(func: str, token: str, index: int) -> None:
    job = get_current_job()
    if job is None:
        raise RuntimeError("a chain link must run inside an RQ job")
    redis: Redis = job.connection
    if index < STEPS:
        Queue(job.origin, connection=redis, serializer=JSONSerializer).enqueue(func, token, index + 1)
        return
    with redis.pipeline(transaction=False) as pipe:
        pipe.incr(DONE)
        pipe.xadd(done_stream(token), {"at": "done"}, maxlen=1)
        pipe.expire(done_stream(token), 300)
        pipe.execute()


def noop_link(token: str, index: int) -> None:
    """RQ job: nothing, then enqueue link `index + 1` (or report the chain done)."""
    _next(NOOP_LINK, token, index)


def io_link(token: str, index: int) -> None:
    """RQ job: one call to the slow server, then enqueue the next link."""
    call_slow_server()
    _next(IO_LINK, token, index)


def start_chain(queue: Queue, func: str, token: str) -> None:
    """Enqueue the first link of a chain."""
    queue.enqueue(func, token, 1)


def chain_queue(redis: Redis, name: str) -> Queue:
    """The chain's queue, JSON serializer like the engine's."""
    return Queue(name, connection=redis, serializer=JSONSerializer)
