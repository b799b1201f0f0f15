"""Worker process: runs saga steps and compensations, and RQ's scheduler for retry delays."""

from config.startup import settings_or_exit
from jobs.runtime import build_engine
from saga.worker import SagaWorker


def main() -> None:
    """Work the saga queue until stopped (SIGTERM finishes the current step first)."""
    settings = settings_or_exit()
    SagaWorker(build_engine(settings)).work(with_scheduler=True)


if __name__ == "__main__":
    main()
