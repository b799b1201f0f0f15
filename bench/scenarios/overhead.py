"""Scenario 1, engine overhead: four no-op steps as a saga vs the same four functions as a bare RQ chain.

Both sides on 2 worker processes of the same kind (SimpleSagaWorker / rq.SimpleWorker),
the bench keeping up to CAP of them unfinished (twice the slots of a threaded worker
with `--worker threaded`); rounds alternate saga and chain so drift on a shared
machine hits both. Round trips are counted in the workers
(`bench.roundtrips`) plus what the bench sent to start each saga or chain.
"""

from __future__ import annotations

from bench.chain import NOOP_LINK
from bench.context import Bench
from bench.drive import Measured, run_count, total, warm
from bench.report import Figure, ScenarioResult, at_least_x, at_most_x
from bench.sagas import NOOP, bench_engine
from bench.scenarios.common import failed_jobs, ticker
from bench.scenarios.loads import chain_load, saga_load

NAME = "noop"
TITLE = "1. engine overhead, no-op steps (2 workers)"
CAP = 32
WARM = 20
PROCESSES = 2


def run(bench: Bench) -> ScenarioResult:
    """Measure both sides; figures per saga."""
    result = ScenarioResult(NAME, TITLE)
    sizes, options = bench.options.sizes, bench.options
    rounds = max(1, min(sizes.rounds, sizes.noop_sagas))
    per_round = max(1, sizes.noop_sagas // rounds)
    bench.flush()
    bench.progress.update("starting workers", 0.0, force=True)
    sagas = bench.start_workers(
        "noop", PROCESSES, queue="bench-noop", worker=options.saga_worker, count_round_trips=True
    )
    chains = bench.start_workers(
        "chain", PROCESSES, queue="bench-chain", worker=options.saga_worker, count_round_trips=True
    )
    try:
        engine = bench_engine(bench.enqueuer, "bench-noop")
        saga = saga_load(NOOP, engine, bench.monitor, lambda i: {})
        chain = chain_load(NOOP_LINK, "bench-chain", bench.enqueuer, bench.monitor)
        caps = {"saga": max(CAP, 2 * sagas.concurrency), "chain": max(CAP, 2 * chains.concurrency)}
        warm(saga, WARM, caps["saga"], bench.deadline(120))
        warm(chain, WARM, caps["chain"], bench.deadline(120))
        measured: dict[str, list[Measured]] = {"saga": [], "chain": []}
        parts = rounds * 2
        for r in range(rounds):
            for k, (side, load, group) in enumerate((("saga", saga, sagas), ("chain", chain, chains))):
                part = r * 2 + k
                measured[side].append(
                    run_count(
                        load,
                        bench.meter(group),
                        total=per_round,
                        cap=caps[side],
                        deadline=bench.deadline(60 + per_round),
                        tick=ticker(bench.progress, f"{side} round {r + 1}/{rounds}", part, parts),
                        alive=lambda g=group: bench.alive(g),  # type: ignore[misc]
                    )
                )
        failed = {
            "saga": failed_jobs(bench.monitor, "bench-noop"),
            "chain": failed_jobs(bench.monitor, "bench-chain"),
        }
    finally:
        bench.stop(sagas)
        bench.stop(chains)
    s, c = total(measured["saga"]), total(measured["chain"])
    base = "bare RQ chain"
    result.figures += [
        Figure(NAME, "throughput", s.rate, "sagas/s", c.rate, base, at_least_x(0.8)),
        Figure(
            NAME,
            "Redis round trips per saga",
            s.per(s.round_trips),
            "",
            c.per(c.round_trips),
            base,
            at_most_x(1.5),
        ),
        Figure(
            NAME, "Redis commands per saga (commandstats)", s.per(s.commands), "", c.per(c.commands), base
        ),
        Figure(
            NAME,
            "worker CPU per saga",
            s.per(s.worker_cpu * 1000),
            "ms",
            c.per(c.worker_cpu * 1000),
            base,
            digits=2,
        ),
        Figure(
            NAME,
            "Redis CPU per saga",
            s.per(s.redis_cpu * 1000),
            "ms",
            c.per(c.redis_cpu * 1000),
            base,
            digits=2,
        ),
    ]
    result.details = {
        "sagas_per_side": per_round * rounds,
        "rounds": rounds,
        "saga": s.as_dict(),
        "chain": c.as_dict(),
        "saga_rounds": [m.as_dict() for m in measured["saga"]],
        "chain_rounds": [m.as_dict() for m in measured["chain"]],
        "saga_worker_class": sagas.worker_class,
        "chain_worker_class": chains.worker_class,
        "failed_jobs": failed,
        "round_trip_method": "client side: calls of redis-py AbstractConnection.send_packed_command in the "
        "workers (BENCH_COUNT_ROUNDTRIPS=1) plus the bench's own client that starts each saga/chain",
    }
    result.notes += sagas.fallbacks
    result.notes.append(
        f"both sides on the same worker class: sagas {sagas.worker_class}, chain {chains.worker_class}"
    )
    if any(failed.values()):
        result.notes.append(f"failed RQ jobs during the run: {failed}")
    return result
