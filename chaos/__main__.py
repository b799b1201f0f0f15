"""`python -m chaos`: run the system, crash it while it books, and check nothing was lost or doubled.

Exit status: 0 when every invariant held, 1 on any violation (or lost/stuck saga),
2 when the run itself could not be done (bad option, a process would not start),
130 on Ctrl-C or SIGTERM. Every process started is stopped in every case.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from chaos.run import DEFAULT_FAULTS, Options, run
from config.settings import ConfigError


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m chaos",
        description="Book N viewings through the real system while SIGKILLing workers and restarting "
        "Redis, then check the sandbox ledger: nothing lost, nothing done twice.",
    )
    parser.add_argument(
        "--sagas", "-n", type=int, default=500, help="bookings to submit (default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=1, help="makes the booking data reproducible")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (default %(default)s)")
    parser.add_argument("--threads", type=int, default=8, help="submitting threads (default %(default)s)")
    parser.add_argument(
        "--kill-every", type=float, default=2.0, metavar="SECONDS",
        help="mean pause between worker SIGKILLs, 0.75x to 1.5x at random; 0: none (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--deadline", type=float, default=300.0, metavar="SECONDS",
        help="how long sagas may take to settle after the last submission (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--redis-restart-at", type=float, default=0.4, metavar="SHARE",
        help="restart Redis once this share of bookings is answered; 0: never (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--retry-delay", type=float, default=0.2, metavar="SECONDS",
        help="RETRY_INITIAL_DELAY_SECONDS; 0 retries at once, bypassing RQ's scheduler (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--worker-class", choices=("threaded", "forking"),
        help="WORKER_CLASS of the workers (default: the system's own default)",
    )  # fmt: skip
    parser.add_argument("--faults", default=DEFAULT_FAULTS, help="SANDBOX_FAULTS for every process")
    parser.add_argument(
        "--workdir", type=Path, help="Redis data, ledger, logs and report (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    if args.sagas < 1 or args.workers < 1 or args.threads < 1:
        parser.error("--sagas, --workers and --threads must be at least 1")
    if args.retry_delay < 0 or args.kill_every < 0 or args.deadline <= 0:
        parser.error("--retry-delay and --kill-every must be >= 0, --deadline > 0")
    if not 0 <= args.redis_restart_at <= 1:
        parser.error("--redis-restart-at is a share between 0 and 1")
    return Options(
        sagas=args.sagas,
        seed=args.seed,
        workers=args.workers,
        threads=args.threads,
        kill_every=args.kill_every,
        deadline=args.deadline,
        redis_restart_at=args.redis_restart_at,
        faults=args.faults,
        workdir=args.workdir,
        retry_delay=args.retry_delay,
        worker_class=args.worker_class,
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through run()'s finally, which stops every process


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run(options)
    except KeyboardInterrupt:
        print("\nchaos: interrupted; every process was stopped", file=sys.stderr)
        return 130
    except (ConfigError, RuntimeError, OSError) as exc:
        print(f"\nchaos: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
