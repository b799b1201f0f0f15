"""What a run measures and how big: the command line, parsed into `Options`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bench.report import RESULTS

SCENARIOS = ("noop", "latency", "io", "intake", "memory", "scale")


@dataclass(frozen=True)
class Sizes:
    """How much of each scenario; `QUICK` is the ~1-minute run."""

    noop_sagas: int = 2000  # scenario 1, per side (split over `rounds`)
    rounds: int = 2  # scenario 1 alternates saga and chain this many times
    latency_samples: int = 200  # scenario 2, per variant
    io_warmup: float = 2.0
    io_window: float = 10.0
    intake_warmup: float = 1.0
    intake_window: float = 8.0
    memory_sagas: int = 200
    retention_sagas: int = 50
    scale_warmup: float = 1.0
    scale_window: float = 5.0


FULL = Sizes()
QUICK = Sizes(
    noop_sagas=200,
    rounds=1,
    latency_samples=25,
    io_warmup=1.0,
    io_window=2.5,
    intake_warmup=0.5,
    intake_window=2.5,
    memory_sagas=40,
    retention_sagas=20,
    scale_warmup=0.5,
    scale_window=1.5,
)


@dataclass(frozen=True)
class Options:
    """Everything the command line decides."""

    scenarios: tuple[str, ...] = SCENARIOS
    sizes: Sizes = FULL
    quick: bool = False
    saga_worker: str = "threaded"  # worker class for scenarios 1, 2, 5 and 6 (both sides)
    io_worker: str = "threaded"  # the "default worker configuration" of scenario 3
    io_processes: int = 2
    concurrency: int | None = None  # threads per ThreadedSagaWorker (None: its default)
    scale: tuple[int, ...] = (1, 2, 4)
    intake_concurrency: int = 64
    intake_rate: float = 500.0
    output: Path = RESULTS / "latest.json"
    strict: bool = False
    keep_logs: bool = False


def _scenarios(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    return tuple(n for n in SCENARIOS if n in names)  # always in the documented order


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def parser() -> argparse.ArgumentParser:
    """The command line of `python -m bench`."""
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Saga Relay benchmarks; every figure beside a baseline measured in the same run.",
    )
    p.add_argument(
        "--only",
        type=_scenarios,
        default=SCENARIOS,
        help=f"comma-separated scenarios, from: {','.join(SCENARIOS)} (default: all)",
    )
    p.add_argument("--quick", action="store_true", help="small sizes: about a minute for everything")
    p.add_argument("--sagas", type=_positive, help="scenario 1 sagas per side (default 2000, quick 200)")
    p.add_argument("--worker", choices=["simple", "threaded"], default="threaded",
                   help="worker class, both sides: noop/latency/memory/scale (default threaded)")  # fmt: skip
    p.add_argument("--io-worker", choices=["simple", "threaded"], default="threaded",
                   help="saga worker class for io (default threaded: the default configuration)")  # fmt: skip
    p.add_argument("--io-processes", type=_positive, default=2, help="saga worker processes for io")
    p.add_argument("--concurrency", type=_positive, help="threads per ThreadedSagaWorker (default: its own)")
    p.add_argument("--scale", default="1,2,4", help="worker process counts for scale (default 1,2,4)")
    p.add_argument(
        "--intake-concurrency", type=_positive, default=64, help="keep-alive connections, closed loop (64)"
    )
    p.add_argument("--intake-rate", type=float, default=500.0, help="requests/s of the open-loop run")
    p.add_argument("--output", type=Path, default=RESULTS / "latest.json", help="where the JSON goes")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--keep-logs", action="store_true", help="keep the child processes' logs")
    return p


def parse(argv: Sequence[str] | None = None) -> Options:
    """Parse the command line into Options."""
    args = parser().parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.sagas:
        sizes = replace(sizes, noop_sagas=args.sagas)
    try:
        scale = tuple(sorted({int(n) for n in args.scale.split(",") if n.strip()}))
    except ValueError:
        parser().error(f"--scale: expected numbers like 1,2,4, got {args.scale!r}")
    if not scale or scale[0] < 1 or scale[-1] > 16:
        parser().error("--scale: worker counts between 1 and 16")
    return Options(
        scenarios=args.only,
        sizes=sizes,
        quick=args.quick,
        saga_worker=args.worker,
        io_worker=args.io_worker,
        io_processes=args.io_processes,
        concurrency=args.concurrency,
        scale=scale,
        intake_concurrency=args.intake_concurrency,
        intake_rate=args.intake_rate,
        output=args.output,
        strict=args.strict,
        keep_logs=args.keep_logs,
    )
