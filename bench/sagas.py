"""The bench's sagas: four no-op steps, or four steps that each wait on the slow HTTP server.

Registered in an engine built the way `jobs.runtime.build_engine` builds the
booking one, with a retry policy without delay (nothing here should fail).
"""

from __future__ import annotations

from redis import Redis

from bench.iocall import call_slow_server
from saga import RetryPolicy, Saga, SagaEngine, Step, StepContext
from saga.definition import Action

NOOP = "bench_noop"
IO = "bench_io"
STEPS = 4
RETRY = RetryPolicy(max_attempts=3, initial_delay=0, max_delay=0)
DAY = 86400


def noop(ctx: StepContext) -> None:
    """Does nothing: what is left is the engine's own cost."""
    return None


def wait_io(ctx: StepContext) -> str:
    """One call to the slow server (100 ms)."""
    return str(call_slow_server())


def _saga(name: str, action: Action, timeout: float) -> Saga:
    steps = tuple(
        Step(
            name=f"step_{i}",
            action=action,
            compensate=noop,
            compensation_name=f"undo_{i}",
            timeout=timeout,
            retry=RETRY,
            compensation_retry=RETRY,
        )
        for i in range(1, STEPS + 1)
    )
    return Saga(name, steps)


def noop_saga() -> Saga:
    """Four no-op steps."""
    return _saga(NOOP, noop, timeout=30.0)


def io_saga() -> Saga:
    """Four steps, each one 100 ms call to the slow server."""
    return _saga(IO, wait_io, timeout=30.0)


def step_names(saga: Saga) -> list[str]:
    """The names of a saga's steps, in order."""
    return [s.name for s in saga.steps]


def bench_engine(redis: Redis, queue_name: str, retention: int = 30 * DAY) -> SagaEngine:
    """An engine with both bench sagas, like `jobs.runtime.build_engine` builds the booking one."""
    return SagaEngine(redis, [noop_saga(), io_saga()], queue_name=queue_name, retention=retention)
