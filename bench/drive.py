"""Driving load through the workers and measuring a window of it.

A closed loop: the bench keeps at most `cap` sagas (or chains) unfinished,
starting a new one whenever one finishes, so the workers always have work and
Redis never holds an unbounded backlog. A *window* is the span between two
snapshots of every counter (time, completions, Redis commands and CPU, worker
round trips and CPU); figures are the deltas divided by the completions.

The bench's own Redis traffic is counted too (its clients are built with
`bench.roundtrips.counted_client`): what it sent to *start* sagas counts as part
of the sagas' cost, what it sent to *watch* them is taken out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from redis import Redis

from bench.measure import RedisCounters, redis_counters, tree_cpu_seconds, tree_pss, tree_rss
from bench.roundtrips import Tally, read_all

POLL = 0.005  # seconds between looks at the unfinished count while the loop is full
Tick = Callable[[float], None]


@dataclass(frozen=True)
class Load:
    """How to start one unit of work and how many started ones are still unfinished."""

    name: str
    start: Callable[[], None]
    unfinished: Callable[[], int]


@dataclass(frozen=True)
class Snapshot:
    """Every counter at one moment."""

    at: float
    completed: int
    counters: RedisCounters
    monitor_rt: int  # the bench's watching traffic (taken out of command counts)
    monitor_names: dict[str, int]
    enqueue_rt: int  # the bench's starting traffic (part of the work)
    worker_rt: int
    worker_rt_seen: bool  # False when the workers do not count round trips
    worker_flushes: int  # HSETs of the workers' round-trip publishers (taken out)
    worker_cpu: float


@dataclass
class Measured:
    """The deltas of one or more windows, and figures per completed unit."""

    seconds: float = 0.0
    completed: int = 0
    round_trips: int = 0
    commands: int = 0
    processed: int = 0
    worker_cpu: float = 0.0
    redis_cpu: float = 0.0
    max_rss: int = 0
    max_pss: int = 0
    round_trips_counted: bool = True  # False: only the bench's own (the workers did not count)
    per_command: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Completions per second."""
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    def per(self, value: float) -> float | None:
        """`value` per completion (None before any completed)."""
        return value / self.completed if self.completed else None

    def add(self, other: Measured) -> Measured:
        """Both together (rounds of the same side)."""
        names = set(self.per_command) | set(other.per_command)
        return Measured(
            seconds=self.seconds + other.seconds,
            completed=self.completed + other.completed,
            round_trips=self.round_trips + other.round_trips,
            commands=self.commands + other.commands,
            processed=self.processed + other.processed,
            worker_cpu=self.worker_cpu + other.worker_cpu,
            redis_cpu=self.redis_cpu + other.redis_cpu,
            max_rss=max(self.max_rss, other.max_rss),
            max_pss=max(self.max_pss, other.max_pss),
            round_trips_counted=self.round_trips_counted and other.round_trips_counted,
            per_command={n: self.per_command.get(n, 0) + other.per_command.get(n, 0) for n in names},
        )

    def as_dict(self) -> dict[str, object]:
        """For latest.json."""
        per = self.completed or 1
        return {
            "seconds": round(self.seconds, 3),
            "completed": self.completed,
            "rate_per_s": round(self.rate, 2),
            "round_trips_per_unit": round(self.round_trips / per, 2) if self.round_trips_counted else None,
            "commands_per_unit": round(self.commands / per, 2),
            "total_commands_processed_per_unit": round(self.processed / per, 2),
            "worker_cpu_ms_per_unit": round(self.worker_cpu * 1000 / per, 3),
            "redis_cpu_ms_per_unit": round(self.redis_cpu * 1000 / per, 3),
            "max_worker_rss_mb": round(self.max_rss / 2**20, 1),
            "max_worker_pss_mb": round(self.max_pss / 2**20, 1),
            "commands_per_unit_by_name": {
                n: round(c / per, 2) for n, c in sorted(self.per_command.items(), key=lambda i: -i[1])
            },
        }


class Meter:
    """Takes snapshots for one group of worker processes."""

    def __init__(
        self,
        monitor: Redis,
        monitor_tally: Tally,
        enqueue_tally: Tally,
        sessions: Collection[int],
        rt_pids: Collection[int] = (),
    ) -> None:
        self.monitor = monitor
        self.monitor_tally = monitor_tally
        self.enqueue_tally = enqueue_tally
        self.sessions = set(sessions)
        self.rt_pids = set(rt_pids)

    def snapshot(self, completed: int) -> Snapshot:
        """Read everything; the monitor's count is taken just before INFO commandstats is sent."""
        counts = read_all(self.monitor) if self.rt_pids else {}
        mine = [v for pid, v in counts.items() if pid in self.rt_pids]
        worker_cpu = tree_cpu_seconds(self.sessions)
        monitor_rt = self.monitor_tally.count
        monitor_names = self.monitor_tally.names()
        counters = redis_counters(self.monitor)
        return Snapshot(
            at=time.monotonic(),
            completed=completed,
            counters=counters,
            monitor_rt=monitor_rt,
            monitor_names=monitor_names,
            enqueue_rt=self.enqueue_tally.count,
            worker_rt=sum(rt for rt, _ in mine),
            worker_rt_seen=bool(mine),
            worker_flushes=sum(f for _, f in mine),
            worker_cpu=worker_cpu,
        )

    def memory(self) -> tuple[int, int]:
        """Sums of VmRSS and of PSS over the group right now."""
        return tree_rss(self.sessions), tree_pss(self.sessions)

    @staticmethod
    def between(before: Snapshot, after: Snapshot, memory: tuple[int, int]) -> Measured:
        """The window from `before` to `after`."""
        delta = after.counters.minus(before.counters)
        watching = after.monitor_rt - before.monitor_rt
        publishing = after.worker_flushes - before.worker_flushes
        per_command = dict(delta.per_command)
        for name, count in after.monitor_names.items():  # the watching, command by command
            left = per_command.get(name, 0) - (count - before.monitor_names.get(name, 0))
            if left:
                per_command[name] = left
            else:
                per_command.pop(name, None)
        if publishing:
            per_command["hset"] = per_command.get("hset", 0) - publishing
        return Measured(
            seconds=after.at - before.at,
            completed=after.completed - before.completed,
            round_trips=(after.worker_rt - before.worker_rt) + (after.enqueue_rt - before.enqueue_rt),
            commands=delta.commands - watching - publishing,
            processed=delta.processed - watching - publishing,
            worker_cpu=after.worker_cpu - before.worker_cpu,
            redis_cpu=delta.cpu,
            max_rss=memory[0],
            max_pss=memory[1],
            round_trips_counted=after.worker_rt_seen,
            per_command=per_command,
        )


class Peak:
    """The highest RSS and PSS sums seen over the samples taken."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.value = (0, 0)

    def sample(self) -> None:
        """Read the group's memory now."""
        rss, pss = self.meter.memory()
        self.value = (max(self.value[0], rss), max(self.value[1], pss))


class Feeder:
    """Starts work while fewer than `cap` are unfinished, up to `limit` in all."""

    def __init__(self, load: Load, cap: int, limit: int | None = None) -> None:
        self.load = load
        self.cap = cap
        self.limit = limit
        self.started = 0

    def step(self) -> tuple[int, int]:
        """Top up once; returns (unfinished now, counting those just started; how many were started)."""
        unfinished = self.load.unfinished()
        room = self.cap - unfinished
        if self.limit is not None:
            room = min(room, self.limit - self.started)
        room = max(0, room)
        for _ in range(room):
            self.load.start()
            self.started += 1
        return unfinished + room, room

    def completed(self, unfinished: int) -> int:
        """How many of those started have finished."""
        return self.started - unfinished


def _deadline_check(deadline: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise TimeoutError(f"{what}: did not finish in time")


def drain(load: Load, deadline: float, alive: Callable[[], None] = lambda: None) -> None:
    """Wait until nothing started is unfinished."""
    while load.unfinished() > 0:
        alive()
        _deadline_check(deadline, f"{load.name}: draining")
        time.sleep(POLL * 4)


def run_count(
    load: Load,
    meter: Meter,
    *,
    total: int,
    cap: int,
    deadline: float,
    tick: Tick | None = None,
    alive: Callable[[], None] = lambda: None,
) -> Measured:
    """Start `total` units (at most `cap` unfinished) and measure until all have finished."""
    feeder = Feeder(load, cap, limit=total)
    peak = Peak(meter)
    before = meter.snapshot(0)
    last_tick = 0.0
    while True:
        unfinished, started = feeder.step()
        done = feeder.completed(unfinished)
        if feeder.started == total and unfinished == 0:
            break
        now = time.monotonic()
        if now - last_tick > 0.5:
            alive()
            _deadline_check(deadline, f"{load.name}: {done}/{total} finished")
            peak.sample()
            if tick is not None:
                tick(done / total)
            last_tick = now
        if not started:
            time.sleep(POLL)
    after = meter.snapshot(total)
    peak.sample()
    return Meter.between(before, after, peak.value)


def run_window(
    load: Load,
    meter: Meter,
    *,
    cap: int,
    warmup: float,
    duration: float,
    deadline: float,
    min_completions: int = 0,
    tick: Tick | None = None,
    alive: Callable[[], None] = lambda: None,
) -> Measured:
    """Keep `cap` units unfinished; measure a window after a warm-up; then drain.

    Both the warm-up and the window last their seconds *and* until `min_completions`
    units finished in them (one turnover of the loop: the first units all start
    together and would otherwise finish in waves), but each at most 4 times its
    seconds, so a slow side still ends in bounded time.
    """
    feeder = Feeder(load, cap)
    start = time.monotonic()
    planned = warmup + duration
    before: Snapshot | None = None
    window_start = 0.0
    peak = Peak(meter)
    last_tick = 0.0
    while True:
        unfinished, started = feeder.step()
        now = time.monotonic()
        done = feeder.completed(unfinished)
        if before is None:
            waited = now - start
            if waited >= warmup and (done >= min_completions or waited >= 4 * warmup):
                before = meter.snapshot(done)
                window_start = now
                peak.sample()
        else:
            lasted = now - window_start
            enough = done - before.completed >= min_completions
            if lasted >= duration and (enough or lasted >= 4 * duration):
                after = meter.snapshot(feeder.completed(load.unfinished()))
                peak.sample()
                break
        if now - last_tick > 0.5:
            alive()
            _deadline_check(deadline, f"{load.name}: window")
            if before is not None:
                peak.sample()
            if tick is not None:
                tick(min(1.0, (now - start) / planned))
            last_tick = now
        if not started:
            time.sleep(POLL)
    drain(load, deadline, alive)
    return Meter.between(before, after, peak.value)


def warm(load: Load, count: int, cap: int, deadline: float) -> None:
    """Run `count` units unmeasured (imports, connections, caches), then drain."""
    feeder = Feeder(load, cap, limit=count)
    while True:
        unfinished, started = feeder.step()
        if feeder.started == count and unfinished == 0:
            return
        _deadline_check(deadline, f"{load.name}: warm-up")
        if not started:
            time.sleep(POLL)


def total(measured: Sequence[Measured]) -> Measured:
    """All rounds of one side together."""
    result = Measured()
    for m in measured:
        result = result.add(m)
    return result
