"""Scenario 6, scale-out: no-op saga throughput with 1, 2 and 4 worker processes (`--scale`).

For each count the same number of rq.SimpleWorker processes runs the bare chain
as the baseline; the two sides alternate windows (saga, then chain) with both
groups started, the idle one blocked in BLPOP. On 2 cores more processes than
cores can only help while they wait on Redis.
"""

from __future__ import annotations

from bench.chain import NOOP_LINK
from bench.context import Bench
from bench.drive import Measured, run_window, warm
from bench.report import Figure, ScenarioResult
from bench.sagas import NOOP, bench_engine
from bench.scenarios.common import ticker
from bench.scenarios.loads import chain_load, saga_load

NAME = "scale"
TITLE = "6. scale-out, no-op sagas"
WARM = 10


def run(bench: Bench) -> ScenarioResult:
    """A window per side per worker count."""
    result = ScenarioResult(NAME, TITLE)
    sizes, options = bench.options.sizes, bench.options
    counts = options.scale
    measured: dict[int, tuple[Measured, Measured]] = {}
    parts = len(counts) * 2
    for k, n in enumerate(counts):
        bench.flush()
        bench.progress.update(f"starting {n}+{n} workers", k * 2 / parts, force=True)
        sagas = bench.start_workers("noop", n, queue="bench-scale", worker=options.saga_worker)
        chains = bench.start_workers("chain", n, queue="bench-scale-chain", worker=options.saga_worker)
        try:
            caps = {"saga": max(16, 2 * sagas.concurrency + 8), "chain": max(16, 2 * chains.concurrency + 8)}
            saga = saga_load(NOOP, bench_engine(bench.enqueuer, "bench-scale"), bench.monitor, lambda i: {})
            chain = chain_load(NOOP_LINK, "bench-scale-chain", bench.enqueuer, bench.monitor)
            warm(saga, WARM, caps["saga"], bench.deadline(60))
            warm(chain, WARM, caps["chain"], bench.deadline(60))
            pair = []
            for j, (side, load, group) in enumerate((("saga", saga, sagas), ("chain", chain, chains))):
                pair.append(
                    run_window(
                        load,
                        bench.meter(group),
                        cap=caps[side],
                        warmup=sizes.scale_warmup,
                        duration=sizes.scale_window,
                        min_completions=caps[side],
                        deadline=bench.deadline(4 * (sizes.scale_warmup + sizes.scale_window) + 60),
                        tick=ticker(bench.progress, f"{n} worker(s), {side}", k * 2 + j, parts),
                        alive=lambda g=group: bench.alive(g),  # type: ignore[misc]
                    )
                )
            measured[n] = (pair[0], pair[1])
        finally:
            bench.stop(sagas)
            bench.stop(chains)
    first_saga, first_chain = measured[counts[0]]
    for n in counts:
        saga_m, chain_m = measured[n]
        result.figures.append(
            Figure(NAME, f"{n} worker process(es)", saga_m.rate, "sagas/s", chain_m.rate, "bare RQ chain")
        )
    for n in counts[1:]:
        saga_m, chain_m = measured[n]
        result.figures.append(
            Figure(
                NAME,
                f"speed-up {counts[0]} -> {n} processes",
                saga_m.rate / first_saga.rate if first_saga.rate else None,
                "x",
                chain_m.rate / first_chain.rate if first_chain.rate else None,
                "bare RQ chain's",
                digits=2,
            )
        )
    result.details = {str(n): {"saga": s.as_dict(), "chain": c.as_dict()} for n, (s, c) in measured.items()}
    return result
