"""Measurement helpers: percentiles, process-tree RSS and CPU from /proc, Redis counters.

Everything here reads; nothing starts or stops processes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis import Redis

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def percentile(values: Sequence[float], pct: float) -> float:
    """The `pct`-th percentile (0-100) by linear interpolation between closest ranks.

    Raises ValueError on an empty sequence or a `pct` outside [0, 100].
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {pct}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    if low == high:
        return float(ordered[low])
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def ratio(value: float | None, baseline: float | None) -> float | None:
    """value / baseline, or None when either is missing or the baseline is zero."""
    if value is None or baseline is None or baseline == 0:
        return None
    return value / baseline


# -- processes ----------------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    """What /proc/<pid>/stat says about one process."""

    pid: int
    state: str
    ppid: int
    session: int
    cpu_ticks: int  # utime + stime + cutime + cstime: itself and its reaped children


def proc_stat(pid: int) -> ProcStat | None:
    """Read /proc/<pid>/stat; None when the process is gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses; the fields after its last ")" do not.
    fields = raw.rsplit(")", 1)[1].split()
    # fields[0] is field 3 of proc(5): state; utime..cstime are fields 14-17.
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return ProcStat(pid, fields[0], int(fields[1]), int(fields[3]), utime + stime + cutime + cstime)


def all_pids() -> list[int]:
    """Every pid in /proc right now."""
    try:
        return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]
    except OSError:
        return []


def session_members(sessions: Collection[int]) -> list[ProcStat]:
    """Live processes in any of `sessions`: what the bench started and everything it forked.

    Each child the bench starts leads a new session, which all its descendants
    inherit (RQ's work-horses change process group, not session).
    """
    found = []
    for pid in all_pids():
        stat = proc_stat(pid)
        if stat is not None and stat.session in sessions and stat.state != "Z":
            found.append(stat)
    return found


def rss_bytes(pid: int) -> int:
    """VmRSS of one process in bytes; 0 when it is gone."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def pss_bytes(pid: int) -> int:
    """Proportional set size of one process (shared pages split among their users); 0 when unknown."""
    try:
        for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_pss(sessions: Collection[int]) -> int:
    """Sum of PSS over every live process in `sessions`: what forked workers really cost together."""
    return sum(pss_bytes(s.pid) for s in session_members(sessions))


def tree_rss(sessions: Collection[int]) -> int:
    """Sum of VmRSS over every live process in `sessions` (shared pages counted once per process)."""
    return sum(rss_bytes(s.pid) for s in session_members(sessions))


def tree_cpu_seconds(sessions: Collection[int]) -> float:
    """CPU seconds (user + system, reaped children included) of every live process in `sessions`."""
    return sum(s.cpu_ticks for s in session_members(sessions)) / CLOCK_TICKS


def self_cpu_seconds() -> float:
    """CPU seconds used by this process so far (all its threads)."""
    times = os.times()
    return times.user + times.system


# -- Redis --------------------------------------------------------------------


@dataclass(frozen=True)
class RedisCounters:
    """Server-side counters at one moment."""

    commands: int  # sum of calls over INFO commandstats
    processed: int  # INFO stats total_commands_processed
    cpu: float  # used_cpu_user + used_cpu_sys, seconds
    used_memory: int
    per_command: dict[str, int]

    def minus(self, before: RedisCounters) -> RedisCounters:
        """The change since `before` (memory is the difference too)."""
        names = set(self.per_command) | set(before.per_command)
        delta = {n: self.per_command.get(n, 0) - before.per_command.get(n, 0) for n in names}
        return RedisCounters(
            commands=self.commands - before.commands,
            processed=self.processed - before.processed,
            cpu=self.cpu - before.cpu,
            used_memory=self.used_memory - before.used_memory,
            per_command={n: c for n, c in delta.items() if c},
        )


def redis_counters(redis: Redis) -> RedisCounters:
    """Read INFO commandstats, stats, cpu and memory (four commands)."""
    stats: dict[str, Any] = redis.info("commandstats")
    per_command = {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name.startswith("cmdstat_")
    }
    processed = int(redis.info("stats")["total_commands_processed"])
    cpu: dict[str, Any] = redis.info("cpu")
    memory = int(redis.info("memory")["used_memory"])
    return RedisCounters(
        commands=sum(per_command.values()),
        processed=processed,
        cpu=float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        used_memory=memory,
        per_command=per_command,
    )


def memory_usage(redis: Redis, keys: Iterable[str | bytes]) -> tuple[int, int]:
    """(bytes, how many of `keys` exist): MEMORY USAGE with SAMPLES 0 (exact), pipelined."""
    with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.memory_usage(key, samples=0)
        sizes = pipe.execute()
    present = [int(s) for s in sizes if s is not None]
    return sum(present), len(present)
