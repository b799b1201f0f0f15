"""`python -m bench.worker`: one worker process for the bench, saga or bare chain.

    python -m bench.worker --saga noop|io|booking|chain --worker simple|threaded \
        [--concurrency N] --queue Q --redis-url URL [--retention SECONDS]

`noop`/`io` run the bench sagas on an engine built like `jobs.runtime`'s;
`booking` runs the real booking saga from `jobs.runtime.build_engine` with the
settings in the environment (REDIS_URL, QUEUE_NAME, SAGA_RETENTION_DAYS...);
`chain` runs the bare chain's queue on the same worker class as the sagas. `threaded` is
`ThreadedSagaWorker` (from saga.worker, else saga.threaded) when it exists; otherwise the worker
falls back to the simple one and says so (stderr and its `bench:worker:<pid>` hash).

With BENCH_COUNT_ROUNDTRIPS=1 every Redis round trip of the process is counted
and published to `bench:rt:<pid>` (see `bench.roundtrips`).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from typing import Any, cast

from redis import Redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer

import saga.worker
from bench.chain import chain_queue
from bench.roundtrips import ENV, Publisher, RoundTripCounter
from bench.sagas import bench_engine
from saga import SagaEngine
from saga.threaded import ThreadedSagaWorker

REGISTRY_PREFIX = "bench:worker:"
HEALTH_CHECK_INTERVAL = 30  # as jobs.runtime / config.startup build the client


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--saga", choices=["noop", "io", "booking", "chain"], required=True)
    parser.add_argument("--worker", choices=["simple", "threaded"], default="simple")
    parser.add_argument("--concurrency", type=int, default=None, help="threads (threaded only)")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--retention", type=int, default=30 * 86400, help="seconds (noop/io sagas)")
    return parser.parse_args(argv)


def _engine(args: argparse.Namespace, redis: Redis) -> SagaEngine:
    if args.saga == "booking":
        from config.startup import settings_or_exit
        from jobs.runtime import build_engine

        return build_engine(settings_or_exit(), redis)
    return bench_engine(redis, args.queue, retention=args.retention)


def build_worker(args: argparse.Namespace, redis: Redis) -> tuple[Any, dict[str, str]]:
    """The worker to run and what to register about it (class, concurrency).

    The bare chain runs on the same class as the sagas: stock `rq.SimpleWorker`,
    or `ThreadedSagaWorker`, which runs any RQ job (here with an engine that has no sagas).
    """
    info: dict[str, str] = {"saga": args.saga, "requested": args.worker, "fallback": ""}
    chain = args.saga == "chain"
    queues = [chain_queue(redis, args.queue)] if chain else None
    if args.worker == "threaded":
        engine = bench_engine(redis, args.queue, retention=args.retention) if chain else _engine(args, redis)
        kwargs: dict[str, Any] = {} if args.concurrency is None else {"concurrency": args.concurrency}
        worker = ThreadedSagaWorker(engine, queues, **kwargs)
        info.update({"class": "saga.threaded.ThreadedSagaWorker", "concurrency": str(worker.concurrency)})
        return worker, info
    info.update({"concurrency": "1"})
    if queues is not None:
        info["class"] = "rq.SimpleWorker"
        return SimpleWorker(queues, connection=redis, serializer=JSONSerializer), info
    info["class"] = "saga.worker.SimpleSagaWorker"
    return saga.worker.SimpleSagaWorker(_engine(args, redis)), info


def main(argv: Sequence[str] | None = None) -> None:
    """Build the worker, register it, and work until SIGTERM."""
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING)
    counter = RoundTripCounter(everywhere=True).install() if os.environ.get(ENV) == "1" else None
    if counter is not None:
        Publisher(counter, args.redis_url).start()
    redis = Redis.from_url(args.redis_url, health_check_interval=HEALTH_CHECK_INTERVAL)
    worker, info = build_worker(args, redis)
    with redis.pipeline() as pipe:  # before the bench starts measuring: outside every window
        pipe.hset(f"{REGISTRY_PREFIX}{os.getpid()}", mapping=cast(Any, info))
        pipe.execute()
    worker.work(burst=False, with_scheduler=False, logging_level="WARNING")


if __name__ == "__main__":
    main()
