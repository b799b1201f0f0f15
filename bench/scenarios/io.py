"""Scenario 3, I/O-bound: every step waits 100 ms on the bench's slow HTTP server.

Sagas/s at saturation with the default worker configuration (`--io-worker`,
default ThreadedSagaWorker, on `--io-processes` processes), against the bare
chain on 2 rq.SimpleWorker processes and on `rq worker-pool -n 16`. Each variant
runs alone: start its workers, keep enough sagas unfinished to saturate them,
measure a window, stop them. RSS is the sum of VmRSS over the worker processes
and their children; CPU per saga is the workers' (children included) plus Redis's.
"""

from __future__ import annotations

from bench.chain import IO_LINK
from bench.context import Bench, Workers
from bench.drive import Load, Measured, run_window
from bench.measure import self_cpu_seconds
from bench.report import Figure, ScenarioResult, at_least, at_least_x, at_most
from bench.sagas import IO, bench_engine
from bench.scenarios.common import failed_jobs, mb, ticker
from bench.scenarios.loads import chain_load, saga_load
from bench.slowserver import SlowServer

NAME = "io"
TITLE = "3. I/O-bound, 100 ms per step, saturated"
POOL = 16
SIMPLE = 2


def _measure(bench: Bench, group: Workers, load: Load, part: int, label: str) -> tuple[Measured, float]:
    sizes = bench.options.sizes
    slots = group.concurrency
    cap = slots + max(4, slots // 4)  # every slot busy and a few jobs queued behind them
    cpu = self_cpu_seconds()
    measured = run_window(
        load,
        bench.meter(group),
        cap=cap,
        warmup=sizes.io_warmup,
        duration=sizes.io_window,
        min_completions=cap,
        deadline=bench.deadline(4 * (sizes.io_warmup + sizes.io_window) + 120),
        tick=ticker(bench.progress, label, part, 3),
        alive=lambda: bench.alive(group),
    )
    return measured, self_cpu_seconds() - cpu


def run(bench: Bench) -> ScenarioResult:
    """Three variants, one after the other."""
    result = ScenarioResult(NAME, TITLE)
    options = bench.options
    details: dict[str, object] = {}
    with SlowServer() as server:
        bench.io_url = server.url
        try:
            bench.flush()
            bench.progress.update("starting saga workers", 0.0, force=True)
            group = bench.start_workers(
                "io",
                options.io_processes,
                queue="bench-io",
                worker=options.io_worker,
                concurrency=options.concurrency,
            )
            try:
                engine = bench_engine(bench.enqueuer, "bench-io")
                saga, saga_bench_cpu = _measure(
                    bench, group, saga_load(IO, engine, bench.monitor, lambda i: {}), 0, "saga"
                )
                details["saga_failed_jobs"] = failed_jobs(bench.monitor, "bench-io")
            finally:
                bench.stop(group)
            details["saga_workers"] = {
                "class": group.worker_class,
                "processes": options.io_processes,
                "concurrency_total": group.concurrency,
            }
            result.notes += group.fallbacks

            bench.flush()
            bench.progress.update("starting 2 rq.SimpleWorker", 1 / 3, force=True)
            simple_group = bench.start_workers("chain", SIMPLE, queue="bench-io-chain")
            try:
                load = chain_load(IO_LINK, "bench-io-chain", bench.enqueuer, bench.monitor)
                simple, _ = _measure(bench, simple_group, load, 1, "chain, 2 SimpleWorkers")
            finally:
                bench.stop(simple_group)

            bench.flush()
            bench.progress.update(f"starting rq worker-pool -n {POOL}", 2 / 3, force=True)
            pool_group = bench.start_pool(POOL, "bench-io-pool")
            try:
                load = chain_load(IO_LINK, "bench-io-pool", bench.enqueuer, bench.monitor)
                pool, _ = _measure(bench, pool_group, load, 2, f"chain, worker-pool -n {POOL}")
            finally:
                bench.stop(pool_group)
        finally:
            bench.io_url = ""
            bench.flush()

    def cpu_ms(m: Measured) -> float | None:
        return m.per((m.worker_cpu + m.redis_cpu) * 1000)

    simple_label, pool_label = "chain, 2 SimpleWorkers", f"chain, worker-pool -n {POOL}"
    saga_mb = mb(saga.max_rss)
    result.figures += [
        Figure(
            NAME,
            "throughput vs 2 SimpleWorkers",
            saga.rate,
            "sagas/s",
            simple.rate,
            simple_label,
            at_least_x(25),
        ),
        Figure(NAME, f"throughput vs worker-pool -n {POOL}", saga.rate, "sagas/s", pool.rate, pool_label),
        Figure(
            NAME,
            "throughput, stretch goal",
            saga.rate,
            "sagas/s",
            simple.rate,
            simple_label,
            at_least(150, "sagas/s"),
        ),
        Figure(
            NAME,
            "worker RSS (sum, children included)",
            saga_mb,
            "MB",
            mb(simple.max_rss),
            simple_label,
            at_most(200, "MB"),
        ),
        Figure(NAME, f"worker RSS vs worker-pool -n {POOL}", saga_mb, "MB", mb(pool.max_rss), pool_label),
        Figure(
            NAME, "CPU per saga (workers + Redis)", cpu_ms(saga), "ms", cpu_ms(simple), simple_label, digits=2
        ),
        Figure(
            NAME,
            f"CPU per saga vs worker-pool -n {POOL}",
            cpu_ms(saga),
            "ms",
            cpu_ms(pool),
            pool_label,
            digits=2,
        ),
    ]
    seconds = saga.seconds or 1
    result.details = {
        **details,
        "saga": saga.as_dict(),
        "chain_2_simple": simple.as_dict(),
        f"chain_pool_{POOL}": pool.as_dict(),
        "bench_process_cpu_ms_per_saga": round(saga_bench_cpu * 1000 / max(1, saga.completed), 3),
        "bench_process_cpu_share_of_a_core": round(saga_bench_cpu / seconds, 3),
    }
    result.notes.append(
        f"PSS (shared pages split between processes): saga workers {mb(saga.max_pss):.0f} MB, "
        f"2 SimpleWorkers {mb(simple.max_pss):.0f} MB, worker-pool -n {POOL} {mb(pool.max_pss):.0f} MB; "
        "VmRSS counts pages that forked processes share once per process"
    )
    result.notes.append(
        f"the slow server and the feeder run in the bench process on the same cores: during the saga run "
        f"they used {saga_bench_cpu / seconds:.0%} of one core (not counted in CPU per saga)"
    )
    return result
