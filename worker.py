"""Worker process: runs saga steps and compensations, and RQ's scheduler for retry delays."""

from rq import Worker

from config.startup import redis_or_exit, settings_or_exit
from jobs.runtime import build_engine
from saga.threaded import ThreadedSagaWorker
from saga.worker import SagaWorker


def main() -> None:
    """Work the saga queue until SIGTERM; a step still running after the grace is handed back."""
    settings = settings_or_exit()
    engine = build_engine(settings, redis_or_exit(settings))
    worker: Worker
    if settings.worker_class == "threaded":
        worker = ThreadedSagaWorker(
            engine, concurrency=settings.worker_concurrency, shutdown_grace=settings.shutdown_grace_seconds
        )
    else:
        worker = SagaWorker(engine, shutdown_grace=settings.shutdown_grace_seconds)
    worker.work(with_scheduler=True)


if __name__ == "__main__":
    main()
